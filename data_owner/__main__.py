"""``python -m data_owner``: serve a Data Owner over one CSV file."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any

from common.protocol.errors import FederatedError
from common.service.app import configure_logging, run_forever, serve
from common.service.cli import base_config, base_parser, serve_options, start_or_exit
from data_owner import create_app, deregister, register_until_accepted
from data_owner.config import DataOwnerSettings


def main() -> None:
    defaults = DataOwnerSettings.model_fields
    parser = base_parser(
        "Federated training data owner (answers encrypted rounds).", 5000, "data_owner", "var/data_owner/NAME"
    )
    parser.add_argument("--data", type=Path, default=defaults["data"].default, help="CSV file with a header line")
    parser.add_argument("--name", default=None, help="name announced to the coordinator (default: data-owner-PORT)")
    parser.add_argument(
        "--coordinator", default=defaults["coordinator_url"].default, help="coordinator URL (default: %(default)s)"
    )
    policy = parser.add_argument_group(
        "privacy policy", "what this owner allows a job to ask (over the policy file policy.json in the state dir)"
    )
    policy.add_argument(
        "--model-creator-key",
        metavar="FINGERPRINT",
        help="the model creator key to compute for (SHA-256 of n, hex); default: the first one seen",
    )
    policy.add_argument(
        "--min-peers", type=int, metavar="K", help="the fewest owners, this one included, of any round (default 1)"
    )
    policy.add_argument("--max-rounds", type=int, metavar="N", help="the most rounds of one job (default 1000)")
    policy.add_argument(
        "--max-weight-bits", type=int, metavar="B", help="the widest weights, integer and fraction bits (default 64)"
    )
    policy.add_argument("--allow-columns", metavar="A,B,...", help="the only columns a job may read (default: all)")
    policy.add_argument("--allow-models", metavar="M,...", help="the only models to train (default: all)")
    private = parser.add_argument_group(
        "differential privacy",
        "clip rows to each job's declared bounds and add noise once per job (all three, or none)",
    )
    private.add_argument("--dp-epsilon", type=float, metavar="EPS", help="the ε each job costs this owner")
    private.add_argument("--dp-delta", type=float, metavar="DELTA", help="the δ of every job and of the budget")
    private.add_argument(
        "--privacy-budget", type=float, metavar="EPS", help="the ε all jobs together may cost (composed in zCDP)"
    )
    parser.add_argument(
        "--deregister",
        action="store_true",
        help="leave the federation: enrol, tell the coordinator to forget this owner, and exit",
    )
    policy.add_argument(
        "--test-only-small-keys",
        action="store_true",
        help="FOR TESTS ONLY: accept model creator keys under 2048 bits",
    )
    args = parser.parse_args()
    configure_logging(args.log_level)
    config = base_config(args)
    config.update(DATA=str(args.data), NAME=args.name or f"data-owner-{args.port}", COORDINATOR_URL=args.coordinator)
    config["POLICY"] = policy_options(args)
    app = start_or_exit(create_app, config)
    if args.deregister:
        leave(app)
        return
    run_forever(lambda stop: register_until_accepted(app, stop), "registration")
    # The worker processes exit before the owner does, releasing what they hold.
    app.extensions["on_exit"] = [lambda: app.extensions["processes"].shutdown(wait=True)]
    serve(app, args.host, args.port, **serve_options(args))


def leave(app: Any) -> None:
    """``--deregister``: enrol (for a credential), deregister, and exit with a status saying how it went."""
    register_until_accepted(app, threading.Event())
    try:
        deregister(app)
    except FederatedError as exc:
        raise SystemExit(f"could not deregister: {exc.message}") from None
    print(f"{app.extensions['job_book'].name}: deregistered")


def policy_options(args: argparse.Namespace) -> dict[str, Any]:
    """The policy fields the command line sets (the others come from the policy file, or defaults)."""
    given: dict[str, Any] = {
        "model_creator_key": args.model_creator_key,
        "min_peers": args.min_peers,
        "max_rounds": args.max_rounds,
        "max_weight_bits": args.max_weight_bits,
        "allow_columns": args.allow_columns and [c.strip() for c in args.allow_columns.split(",") if c.strip()],
        "allow_models": args.allow_models and [m.strip() for m in args.allow_models.split(",") if m.strip()],
        "test_only_small_keys": args.test_only_small_keys or None,
        "dp_epsilon": args.dp_epsilon,
        "dp_delta": args.dp_delta,
        "privacy_budget": args.privacy_budget,
    }
    return {name: value for name, value in given.items() if value is not None}


if __name__ == "__main__":
    main()
