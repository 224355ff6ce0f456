"""What the three Flask services share.

Configuration, JSON errors, health, background work, and serving with cheroot (over TLS when
given a certificate).

Each service's ``create_app(config=None)`` calls :func:`create_base_app`, which applies, in
order, the service's defaults, environment variables with the service's prefix (for example
``FT_COORDINATOR_ROUND_TIMEOUT=30``, values parsed as JSON where they parse), and the mapping
given by the caller (tests, the command line).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from common.service.audit import RecordingMiddleware, TrafficLog
from common.protocol.errors import FederatedError, SchemaError
from common.service.http import PeerClient, is_loopback

logger = logging.getLogger(__name__)

health = Blueprint("health", __name__)


@health.get("/health")
def health_check() -> tuple[Any, int]:
    """200 once the service is serving; the app factory does everything readiness needs."""
    return jsonify(status="ok"), 200


def create_base_app(name: str, defaults: Mapping[str, Any], env_prefix: str, config: Mapping[str, Any] | None) -> Flask:
    """A Flask app with layered configuration, JSON error handlers and ``GET /health``."""
    app = Flask(name)
    app.config.update(defaults)
    app.config.from_prefixed_env(env_prefix)
    app.config.update(config or {})
    app.json.sort_keys = False
    register_error_handlers(app)
    app.register_blueprint(health)
    if app.config.get("TRAFFIC_LOG"):
        log = TrafficLog(app.config["TRAFFIC_LOG"])
        app.extensions["traffic_log"] = log
        app.wsgi_app = RecordingMiddleware(app.wsgi_app, log)
    return app


def peer_client(app: Flask, token: str | None = None) -> PeerClient:
    """The app's client for calls to other parties, configured from the app's settings."""
    traffic_log = app.extensions.get("traffic_log")
    return PeerClient(
        float(app.config["REQUEST_TIMEOUT"]),
        connect_retries=int(app.config["CONNECT_RETRIES"]),
        recorder=traffic_log.recorder() if traffic_log else None,
        token=token,
        verify=app.config.get("CA_BUNDLE") or True,
        allow_insecure_http=bool(app.config.get("ALLOW_INSECURE_HTTP")),
    )


def register_error_handlers(app: Flask) -> None:
    """Render every error as JSON ``{"error": ..., "type": ...}``; never a traceback."""

    @app.errorhandler(FederatedError)
    def federated_error(error: FederatedError) -> tuple[Any, int]:
        return jsonify(error.to_json()), error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Any, int]:
        return jsonify(error=error.description, type=error.name), error.code or 500

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> tuple[Any, int]:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="internal error; see the service's log", type="InternalError"), 500


def json_body() -> dict[str, Any]:
    """The request's JSON object body; a clear :class:`SchemaError` for anything else."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"body: malformed JSON ({exc})") from exc
    except RecursionError:
        raise SchemaError("body: malformed JSON (nested too deeply)") from None
    if not isinstance(payload, dict):
        raise SchemaError("body: expected a JSON object")
    return payload


class Worker:
    """Runs work handed over by request handlers, outside any request.

    A single thread by default, so the steps of one service's jobs never race; an exception
    is logged with its traceback and passed to ``on_error`` (which records it as the job's
    failure), so no failure is ever silent.
    """

    def __init__(self, name: str, threads: int = 1) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    def submit(
        self, task: Callable[..., None], *args: Any, on_error: Callable[[Exception], None] | None = None
    ) -> Future:
        def run() -> None:
            try:
                task(*args)
            except Exception as exc:  # noqa: BLE001 - the worker's last line of defence
                logger.exception("background task %s failed", getattr(task, "__name__", task))
                if on_error is not None:
                    try:
                        on_error(exc)
                    except Exception:  # noqa: BLE001
                        logger.exception("recording the failure of %s failed too", task)

        return self._executor.submit(run)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def run_forever(target: Callable[[threading.Event], None], name: str) -> threading.Event:
    """Start ``target(stop_event)`` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=target, args=(stop,), name=name, daemon=True).start()
    return stop


def serve(
    app: Flask,
    host: str,
    port: int,
    certificate: str | None = None,
    private_key: str | None = None,
    allow_insecure_http: bool = False,
    threads: int = 16,
) -> None:
    """Serve with cheroot, a production WSGI server, over HTTPS when a certificate is given.

    Plain HTTP is refused on anything but loopback unless ``allow_insecure_http`` says otherwise:
    the parties exchange credentials, and ciphertexts are only as private as their metadata.
    """
    from cheroot import wsgi

    if bool(certificate) != bool(private_key):
        raise SystemExit("give both --tls-cert and --tls-key, or neither")
    if not certificate and not is_loopback(host) and not allow_insecure_http:
        raise SystemExit(f"refusing plain HTTP on {host}: give --tls-cert and --tls-key, or --allow-insecure-http")
    server = wsgi.Server((host, port), app, numthreads=threads, server_name=app.name)
    scheme = "http"
    if certificate:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(certificate, private_key)
        scheme = "https"
    logger.info("%s listening on %s://%s:%d", app.name, scheme, host, port)
    try:
        server.start()
    except KeyboardInterrupt:
        server.stop()


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
