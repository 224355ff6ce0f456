"""What the three Flask services share: the app base, the error table, health, serving.

Each service's ``create_app(settings=None)`` calls :func:`create_base_app`, a flask-openapi3 app
whose routes are declared with the typed messages of :mod:`common.protocol.messages`: the request
bodies, path parameters and answers are validated against those types, and the service's API
document (``GET /openapi.json``, with an interactive page at ``GET /docs``) is generated from them.

Errors know nothing of HTTP; :data:`STATUS_OF` is the one table that maps them to statuses, and
every error answer has the shape ``{"error": message, "type": class name}``.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import typing
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, Response, jsonify, request
from flask_openapi3.models.info import Info
from flask_openapi3.models.tag import Tag
from flask_openapi3.openapi import OpenAPI
from flask_openapi3.types import ResponseDict
from flask_openapi3.utils import get_model_schema, normalize_name
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import BadRequest as WerkzeugBadRequest
from werkzeug.exceptions import HTTPException

from common.protocol.errors import (
    BadRequest,
    Conflict,
    DataError,
    EncodingOverflow,
    FederatedError,
    Forbidden,
    InvalidCiphertext,
    KeyMismatch,
    NotFound,
    ProtocolViolation,
    Refused,
    SchemaError,
    StorageUnavailable,
    TrainingError,
    Unauthorized,
    UpstreamError,
)
from common.protocol.fields import validation_error
from common.protocol.messages import ErrorBody, Health
from common.service.audit import RecordingMiddleware, TrafficLog
from common.service.auth import check_caller
from common.service.http import OutboundAudit, PeerClient, is_loopback
from common.service.pages import register_pages
from common.service.settings import ServiceSettings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

API_VERSION = "0.2.0"

#: The HTTP status of each error class (the first class of an error's MRO found here). An error
#: that a peer answered with (``error.peer`` set) is this service's upstream failure: 502.
#: 400 is for what the API document itself rules out; a value it allows that the job's key, the
#: URL's job or the party's state contradicts is a 422 (see :mod:`common.protocol.fields`).
STATUS_OF: dict[type[FederatedError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    DataError: 422,
    Refused: 422,
    EncodingOverflow: 422,
    ProtocolViolation: 422,
    InvalidCiphertext: 422,
    KeyMismatch: 422,
    TrainingError: 422,
    StorageUnavailable: 503,
    UpstreamError: 502,
    FederatedError: 500,
}

#: The statuses an operation may answer besides its success, for the API documents.
ERROR_RESPONSES: dict[int, type[BaseModel]] = {400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody}

BEARER = {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <token>"}}
_ERROR_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    413: "Content Too Large",
    422: "Unprocessable Content",
}
#: Seconds a 503 (a storage fault) tells the caller to wait before trying again (``Retry-After``).
RETRY_AFTER_SECONDS = 2

HEALTH = Tag(name="health", description="Liveness of the service.")

S = TypeVar("S", bound=ServiceSettings)


def status_of(error: FederatedError) -> int:
    """The HTTP status ``error`` answers with."""
    if error.peer is not None:
        return 502
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def responses(ok: int, answer: type[BaseModel] | None, *errors: int) -> ResponseDict:
    """An operation's documented answers: ``ok`` with ``answer``, then each error status."""
    documented: ResponseDict = {ok: answer}
    documented.update({status: ErrorBody for status in errors})
    return documented


#: What a view's document gains from the service's settings: component → property → keywords.
SchemaLimits = Callable[[Any], Mapping[str, Mapping[str, Mapping[str, Any]]]]
V = TypeVar("V", bound=Callable[..., Any])


def documents(*models: type[BaseModel], limits: SchemaLimits | None = None) -> Callable[[V], V]:
    """Mark a view for its document: the schemas it names, the limits its settings set.

    ``models`` are the schemas the view's document refers to as ``#/components/schemas/<title>``
    (a body flask-openapi3 does not read from the view's signature); ``limits(settings)`` gives the
    keywords to add to a component's properties, from the settings the view checks a body against.
    """

    def mark(view: V) -> V:
        view.documented_models = models  # type: ignore[attr-defined]
        view.schema_limits = limits  # type: ignore[attr-defined]
        return view

    return mark


def answer(message: BaseModel, status: int = 200) -> tuple[Response, int]:
    """A typed answer as JSON (fields never set are left out)."""
    return jsonify(message.model_dump(mode="json", exclude_unset=True)), status


class Service(OpenAPI):
    """A flask-openapi3 app whose document also states, per operation, who may call it.

    The roles come from the views' :func:`~common.service.auth.requires` marks, the same marks the
    authentication check reads, so the document cannot disagree with what is enforced. Every
    operation with credentials documents 401 and 403, every one with a body 400 (malformed), 413 (too
    large) and 422 (values that contradict each other).
    """

    def generate_spec_json(self) -> None:
        super().generate_spec_json()  # type: ignore[no-untyped-call]  # unannotated in flask-openapi3 4.3.2
        self._request_schemas_as_validated()
        views = {
            (_openapi_path(rule.rule), method.lower()): self.view_functions[rule.endpoint]
            for rule in self.url_map.iter_rules()
            for method in rule.methods or ()
        }
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        for path, item in self.spec_json.get("paths", {}).items():
            for method, operation in item.items():
                roles = getattr(views.get((path, method)), "required_roles", ())
                operation["security"] = [{"bearerAuth": []}] if roles else []
                operation["x-roles"] = list(roles)
                statuses = ([401, 403] if roles else []) + ([400, 413, 422] if "requestBody" in operation else [])
                for status in statuses:
                    operation["responses"].setdefault(str(status), {"description": _ERROR_DESCRIPTIONS[status]})
                for status, response in operation["responses"].items():
                    if status.startswith(("4", "5")):
                        response.update(error)

    def _request_schemas_as_validated(self) -> None:
        """The request models' schemas exactly as pydantic validates them, with the settings' limits.

        flask-openapi3 passes each schema through its own ``Schema`` model, which drops the
        keywords it does not know (``propertyNames``, ``patternProperties``, ``if``/``then``): the
        document would allow dictionary keys and combinations that validation refuses.
        """
        schemas: dict[str, Any] = self.spec_json.setdefault("components", {}).setdefault("schemas", {})
        settings = self.extensions.get("settings")
        for view in self.view_functions.values():
            hints = _request_hints(view)
            models = [hints[name] for name in ("body", "form") if name in hints]
            for model in [*models, *getattr(view, "documented_models", ())]:
                raw = get_model_schema(model)
                schemas.update(raw.pop("$defs", {}))
                schemas[normalize_name(raw.get("title") or model.__name__)] = raw
        for view in self.view_functions.values():
            limits: SchemaLimits | None = getattr(view, "schema_limits", None)
            if limits is None or settings is None:
                continue
            for component, properties in limits(settings).items():
                _merge(schemas[component]["properties"], properties)


def _merge(schema: dict[str, Any], keywords: Mapping[str, Any]) -> None:
    """Add ``keywords`` to ``schema``, into its sub-schemas where both have one."""
    for keyword, value in keywords.items():
        if isinstance(value, Mapping) and isinstance(schema.get(keyword), dict):
            _merge(schema[keyword], value)
        else:
            schema[keyword] = value


def _request_hints(view: Callable[..., Any]) -> dict[str, Any]:
    """The annotated request parameters (``body``, ``form``, ...) of a view, as classes."""
    try:
        hints = typing.get_type_hints(view)
    except (NameError, TypeError):  # views of flask-openapi3's own pages, annotated with unimported names
        return {}
    return {name: hint for name, hint in hints.items() if isinstance(hint, type) and issubclass(hint, BaseModel)}


def _openapi_path(rule: str) -> str:
    """A Flask rule (``/jobs/<job_id>/rounds/<int:round_number>``) as an OpenAPI path template."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>:]+)>", r"{\1}", rule)


def create_base_app(name: str, title: str, description: str, settings: ServiceSettings) -> OpenAPI:
    """A flask-openapi3 app with JSON error handlers, ``GET /health``, ``/openapi.json``, ``/docs`` and its page.

    ``name`` is the party's (``coordinator``, ``data_owner``, ``model_creator``): its dashboard
    page is served at ``GET /`` (:mod:`common.service.pages`).
    """
    app = Service(
        name,
        info=Info(title=title, version=API_VERSION, description=description),
        security_schemes=BEARER,  # type: ignore[arg-type]
        doc_prefix="/docs",
        doc_url="/openapi.json",
        validation_error_status=400,
        validation_error_model=ErrorBody,
        validation_error_callback=_validation_error,
    )
    app.config.update(TESTING=settings.testing, MAX_CONTENT_LENGTH=settings.max_content_length)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["settings"] = settings
    register_error_handlers(app)
    app.before_request(check_caller)
    app.before_request(_parse_json_body)
    app.add_url_rule("/openapi.json", "openapi_document", lambda: jsonify(app.api_doc))

    @app.get("/health", tags=[HEALTH], responses={200: Health})
    def health_check() -> tuple[Response, int]:
        """200 once the service is serving; the app factory does everything readiness needs."""
        return answer(Health(status="ok"))

    register_pages(app, name)
    if settings.traffic_log:
        log = TrafficLog(settings.traffic_log)
        app.extensions["traffic_log"] = log
        app.wsgi_app = RecordingMiddleware(app.wsgi_app, log)  # type: ignore[method-assign]
    app.wsgi_app = BodyLimit(app.wsgi_app, settings.max_content_length)  # type: ignore[method-assign]
    return app


class BodyLimit:
    """WSGI middleware: a request body is read whole, or refused with 413 before anything uses it.

    A body of declared length over the limit is refused unread. A body without a declared length
    (``Transfer-Encoding: chunked``) is read here up to one byte past the limit: over it, 413; else
    the application gets the whole body with its length. Nothing is ever processed from a body cut
    at the limit: a truncated CSV or JSON could otherwise parse and give a wrong answer with 200.
    """

    def __init__(self, app: WSGIApplication, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        declared = environ.get("CONTENT_LENGTH")
        if declared:
            if declared.isdigit() and int(declared) > self.limit:
                return self._too_large(environ, start_response)
            return self.app(environ, start_response)
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked and not environ.get("wsgi.input_terminated"):
            return self.app(environ, start_response)
        stream = environ["wsgi.input"]
        parts, size = [], 0
        while size <= self.limit:
            part = stream.read(min(65536, self.limit + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
        if size > self.limit:
            return self._too_large(environ, start_response)
        body = b"".join(parts)
        environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["wsgi.input_terminated"] = False
        return self.app(environ, start_response)

    def _too_large(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = json.dumps({"error": f"body: larger than {self.limit} bytes", "type": "RequestEntityTooLarge"}).encode()
        start_response(
            "413 Request Entity Too Large",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")],
        )
        return [body]


def settings_of(app: Any, kind: type[S]) -> S:
    """The app's typed settings."""
    settings = app.extensions["settings"]
    assert isinstance(settings, kind)
    return settings


def peer_client(app: Any, settings: ServiceSettings) -> PeerClient:
    """The app's HTTP client for calls to other parties, configured from its settings.

    Its requests are recorded in the app's traffic log (``traffic_log``) and, before they leave,
    in its outbound audit (``outbound_audit``, a data owner's), when the app has them.
    """
    traffic_log = app.extensions.get("traffic_log")
    audit: OutboundAudit | None = app.extensions.get("outbound_audit")
    return PeerClient(
        settings.request_timeout,
        connect_retries=settings.connect_retries,
        status_retries=settings.status_retries,
        recorder=traffic_log.recorder() if traffic_log else None,
        audit=audit,
        verify=str(settings.ca_bundle) if settings.ca_bundle else True,
        allow_insecure_http=settings.allow_insecure_http,
    )


def register_error_handlers(app: Flask) -> None:
    """Render every error as JSON ``{"error": ..., "type": ...}``; never a traceback."""

    @app.errorhandler(FederatedError)
    def federated_error(error: FederatedError) -> tuple[Response, int]:
        status = status_of(error)
        if error.peer is not None:
            return jsonify(error=error.message, type="UpstreamError"), status
        response = jsonify(error.to_json())
        if status == 503:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response, status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = jsonify(error=error.description, type=error.name.replace(" ", ""))
        response.status_code = error.code or 500
        for header, value in error.get_headers():
            if header.lower() != "content-type":
                response.headers[header] = value
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> tuple[Response, int]:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="internal error; see the service's log", type="InternalError"), 500


def _validation_error(error: ValidationError) -> Response:
    title = error.title
    where = "path" if title.endswith("Path") else "query" if title.endswith("Query") else "body"
    refusal = validation_error(error, where)
    response = jsonify(refusal.to_json())
    response.status_code = status_of(refusal)
    return response


def _parse_json_body() -> None:
    """Parse a JSON body strictly before the route validates it: malformed JSON is a clear 400.

    Bodies are read as JSON whatever their content type (``curl -d`` sends form encoding), except
    the CSV and multipart uploads of predictions.
    """
    if request.method not in ("POST", "PUT", "PATCH") or request.mimetype in ("text/csv", "multipart/form-data"):
        return
    raw = request.get_data(cache=True)
    if not raw.strip():
        return
    try:
        payload = request.get_json(force=True)
    except WerkzeugBadRequest:
        try:
            json.loads(raw)
        except ValueError as exc:
            raise SchemaError(f"body: malformed JSON ({_json_problem(exc)})") from None
        except RecursionError:
            raise SchemaError("body: malformed JSON (nested too deeply)") from None
        raise SchemaError("body: malformed JSON") from None
    except RecursionError:
        raise SchemaError("body: malformed JSON (nested too deeply)") from None
    if not isinstance(payload, dict):
        raise SchemaError("body: expected a JSON object")


def _json_problem(error: ValueError) -> str:
    """What is wrong with a body that is not JSON, in the body's own terms, never Python's advice."""
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg}: line {error.lineno} column {error.colno} (char {error.pos})"
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text at byte {error.start}"
    return f"a number has more than the {sys.get_int_max_str_digits()} digits allowed"


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
    ) -> Future[None]:
        def run() -> None:
            try:
                task(*args)
            except Exception as exc:  # noqa: BLE001 - the worker's last line of defence
                if isinstance(exc, FederatedError):
                    logger.warning("%s: %s", getattr(task, "__name__", task), exc.message)
                else:
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


def check_port_free(host: str, port: int) -> None:
    """Stop at start-up, naming the port, when another process already listens on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SystemExit(f"port {port} on {host} is already in use; choose another with --port") from None
            raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve(
    app: Any,
    host: str,
    port: int,
    certificate: str | None = None,
    private_key: str | None = None,
    allow_insecure_http: bool = False,
) -> None:
    """Serve with cheroot, a production WSGI server, over HTTPS when a certificate is given.

    The server has read deadlines and threads to spare for slow clients
    (:mod:`common.service.server`). Plain HTTP is refused on anything but loopback unless
    ``allow_insecure_http`` says otherwise: the parties exchange credentials, and ciphertexts are
    only as private as their metadata.
    """
    from common.service.server import GuardedServer

    if bool(certificate) != bool(private_key):
        raise SystemExit("give both --tls-cert and --tls-key, or neither")
    if not certificate and not is_loopback(host) and not allow_insecure_http:
        raise SystemExit(f"refusing plain HTTP on {host}: give --tls-cert and --tls-key, or --allow-insecure-http")
    check_port_free(host, port)
    server = GuardedServer((host, port), app, app.name)
    scheme = "http"
    if certificate:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(certificate, private_key)
        scheme = "https"
    logger.info("%s listening on %s://%s:%d", app.name, scheme, host, port)
    signal.signal(signal.SIGTERM, _stop_on_terminate)
    try:
        server.start()
    except KeyboardInterrupt:
        server.stop()
        for release in app.extensions.get("on_exit", ()):
            release()
        logger.info("%s stopped", app.name)
        logging.shutdown()
        # Background workers are not wound down: what they were doing is durable or redone after a
        # restart, whereas letting them run into a closing interpreter would record failures.
        os._exit(0)


def _stop_on_terminate(signum: int, frame: object) -> None:
    """SIGTERM ends the service as Ctrl-C does: the server stops, then the process exits."""
    raise KeyboardInterrupt


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
