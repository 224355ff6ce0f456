"""Command-line options every service takes, and the mapping of them onto app configuration."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F")

#: Where the parties keep their state (``var/``) and find the shipped data by default: the checkout
#: they run from, or the current directory for an installed package, which has no checkout.
CHECKOUT = Path(__file__).resolve().parents[2]
if not (CHECKOUT / "pyproject.toml").is_file():
    CHECKOUT = Path.cwd()


def base_parser(
    description: str, default_port: int, party: str, state_dir_default: str | None = None
) -> argparse.ArgumentParser:
    """``--host``, ``--port``, ``--state-dir``, ``--traffic-log``, ``--secrets-file``, TLS and ``--log-level``.

    ``--state-dir`` and ``--secrets-file`` are passed on only when given, so that the party's
    settings (and its ``FT_<PARTY>_...`` variables) decide their defaults; ``state_dir_default``
    is how the help describes that default (``var/<party>`` unless given).
    """
    parser = argparse.ArgumentParser(prog=f"python -m {party}", description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=default_port, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where this party keeps what must survive a restart"
        f" (default: {state_dir_default or f'var/{party}'} in the checkout)",
    )
    parser.add_argument(
        "--traffic-log",
        type=Path,
        help="append every request and answer exchanged to this JSON-lines file (mode 0600, secrets redacted)",
    )
    parser.add_argument(
        "--secrets-file",
        type=Path,
        help="JSON file (mode 0600) of this party's own secrets; secrets given by environment variables take"
        f" precedence (default: var/secrets/{party}.json in the checkout, where the parties of one checkout"
        " provision them on first start)",
    )
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate (with --tls-key)")
    parser.add_argument("--tls-key", type=Path, help="the PEM private key of --tls-cert")
    parser.add_argument(
        "--ca-bundle",
        type=Path,
        help="PEM file of the certificate authorities trusted for HTTPS calls to other parties",
    )
    parser.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain HTTP on a non-loopback address, and to non-loopback peers",
    )
    parser.add_argument(
        "--reset-state",
        action="store_true",
        help="start even if a state database is empty, damaged or of a newer version: move it aside"
        " (renamed *.unusable-<time>) and begin with an empty one; without it such a database stops the service",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def serve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`common.service.app.serve` the options stand for."""
    return {
        "certificate": str(args.tls_cert) if args.tls_cert else None,
        "private_key": str(args.tls_key) if args.tls_key else None,
        "allow_insecure_http": args.allow_insecure_http,
    }


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    """The app configuration the common options stand for."""
    scheme = "https" if args.tls_cert else "http"
    config: dict[str, Any] = {
        "PUBLIC_URL": f"{scheme}://{_url_host(args.host)}:{args.port}",
        "ALLOW_INSECURE_HTTP": args.allow_insecure_http,
    }
    if args.state_dir:
        config["STATE_DIR"] = str(args.state_dir)
    if args.secrets_file:
        config["SECRETS_FILE"] = str(args.secrets_file)
    if args.ca_bundle:
        config["CA_BUNDLE"] = str(args.ca_bundle)
    if args.traffic_log:
        config["TRAFFIC_LOG"] = str(args.traffic_log)
    if args.reset_state:
        config["RESET_STATE"] = True
    return config


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def start_or_exit(factory: Callable[[dict[str, Any]], F], config: dict[str, Any]) -> F:
    """``factory(config)``, or exit at once with a message naming the setting or state file that is wrong."""
    from common.service.settings import SettingsError
    from common.service.storage import StateError

    try:
        return factory(config)
    except SettingsError as exc:
        raise SystemExit(f"bad setting: {exc}") from None
    except StateError as exc:
        raise SystemExit(f"cannot start: {exc}") from None
