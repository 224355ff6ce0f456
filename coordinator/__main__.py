"""``python -m coordinator``: serve the Training Coordinator."""

from __future__ import annotations

from common.service.app import configure_logging, run_forever, serve
from common.service.cli import base_config, base_parser, serve_options, start_or_exit
from coordinator import create_app


def main() -> None:
    parser = base_parser("Federated training coordinator (relays and aggregates ciphertexts).", 8080, "coordinator")
    parser.add_argument(
        "--test-only-small-keys", action="store_true", help="FOR TESTS ONLY: accept jobs under keys of 1024 bits"
    )
    args = parser.parse_args()
    configure_logging(args.log_level)
    app = start_or_exit(create_app, {**base_config(args), "TEST_ONLY_SMALL_KEYS": args.test_only_small_keys})
    runner = app.extensions["round_runner"]
    runner.resume_unfinished()
    run_forever(runner.liveness.watch_forever, "liveness")
    serve(app, args.host, args.port, **serve_options(args))


if __name__ == "__main__":
    main()
