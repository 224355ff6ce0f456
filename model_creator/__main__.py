"""``python -m model_creator``: serve the Model Creator (the model deployer)."""

from __future__ import annotations

from common.service.app import configure_logging, run_forever, serve
from common.service.cli import base_config, base_parser, serve_options, start_or_exit
from model_creator import create_app
from model_creator.config import ModelCreatorSettings


def main() -> None:
    defaults = ModelCreatorSettings.model_fields
    parser = base_parser("Federated training model creator (holds the key, trains, predicts).", 9090, "model_creator")
    parser.add_argument(
        "--coordinator", default=defaults["coordinator_url"].default, help="coordinator URL (default: %(default)s)"
    )
    parser.add_argument(
        "--test-data",
        metavar="CSV|none",
        help="CSV that models are scored on, or 'none': the model creator then needs no data of its own"
        " (default: the shipped test split)",
    )
    parser.add_argument(
        "--key-bits",
        type=int,
        default=defaults["key_bits"].default,
        choices=[1024, 2048, 3072, 4096],
        help="Paillier modulus size for a newly generated key (default: %(default)s)",
    )
    parser.add_argument(
        "--test-only-small-keys", action="store_true", help="FOR TESTS ONLY: allow --key-bits 1024 (and such a key)"
    )
    args = parser.parse_args()
    configure_logging(args.log_level)
    config = base_config(args)
    config.update(
        COORDINATOR_URL=args.coordinator,
        **({} if args.test_data is None else {"TEST_DATA": args.test_data}),
        KEY_BITS=args.key_bits,
        TEST_ONLY_SMALL_KEYS=args.test_only_small_keys,
    )
    app = start_or_exit(create_app, config)
    app.extensions["key_store"].private_key()
    trainer = app.extensions["trainer"]
    trainer.resume_unfinished()
    run_forever(trainer.reconcile_forever, "reconciler")
    serve(app, args.host, args.port, **serve_options(args))


if __name__ == "__main__":
    main()
