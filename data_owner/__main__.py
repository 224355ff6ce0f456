"""``python -m data_owner``: serve a Data Owner over one CSV file."""

from __future__ import annotations

from pathlib import Path

from common.service.app import configure_logging, run_forever, serve
from common.service.cli import base_config, base_parser, serve_options, start_or_exit
from data_owner import create_app, register_until_accepted
from data_owner.config import DataOwnerSettings


def main() -> None:
    defaults = DataOwnerSettings.model_fields
    parser = base_parser("Federated training data owner (answers encrypted rounds).", 5000, "data_owner")
    parser.add_argument("--data", type=Path, default=defaults["data"].default, help="CSV file with a header line")
    parser.add_argument("--name", default=None, help="name announced to the coordinator (default: data-owner-PORT)")
    parser.add_argument(
        "--coordinator", default=defaults["coordinator_url"].default, help="coordinator URL (default: %(default)s)"
    )
    args = parser.parse_args()
    configure_logging(args.log_level)
    config = base_config(args)
    config.update(DATA=str(args.data), NAME=args.name or f"data-owner-{args.port}", COORDINATOR_URL=args.coordinator)
    app = start_or_exit(create_app, config)
    run_forever(lambda stop: register_until_accepted(app, stop), "registration")
    serve(app, args.host, args.port, **serve_options(args))


if __name__ == "__main__":
    main()
