"""A record of every byte a service exchanges with other parties, as JSON lines, secrets redacted.

Each line is ``{"direction": "received" | "sent" | "answered" | "reply", "peer": path or URL,
"body": text}``: what the service received, what it sent, what it answered to a request and what
a peer replied. The coordinator enables it to show that it handles nothing but ciphertexts and
metadata; a data owner can use it to audit what left its premises.

The log is meant to be read by auditors, so it must not hand them the keys of the federation:

- **Secrets are redacted.** In every JSON body, the value of each key named in
  :data:`SECRET_KEYS` (``credential``, ``coordinator_token``, ``enrolment_secret``,
  ``model_creator_token``, ``api_token``, ``token``, ``secret``), at any depth, is logged as
  ``"[redacted]"``, whatever it was. A body holding such a key is logged re-serialised (compact
  JSON); every other body, and every body that is not JSON, is logged byte for byte as it was
  (the protocol puts no secret in them; credentials travel in the ``Authorization`` header, which
  is never logged).
- **The file is private.** It is created with mode 0600, and an existing one is tightened to
  0600 (:mod:`common.service.files`): it still records who took part in what, and when.

A log that cannot be written (a full disk) loses nothing and never turns into a 500:

- **What is recorded before it happens is refused when it cannot be recorded.** An inbound
  request is recorded before the application sees it, and an outbound call before it is sent: if
  that record cannot be written, the request is answered 503 with ``Retry-After`` and the
  project's JSON error (``StorageUnavailable``), or the call raises
  :class:`~common.protocol.errors.StorageUnavailable`, and nothing was done. The caller tries
  again later, as after any storage fault; no exchange ever happens unlogged.
- **What is recorded after it happened is kept until it can be written.** The answer to a
  request, or a peer's reply, exists once the exchange took place: refusing it then would tell the
  caller that nothing was done when something was (a contribution accepted, a round started).
  Such a record that cannot be written is kept in memory, and written, in order, before any later
  record, once the disk takes it; until then every new exchange is refused as above, so the
  backlog holds the outcomes of exchanges already under way only (at most one per thread), never
  grows with new traffic, and the file keeps every exchange in the order it happened.
- **Each outage is logged once**, as an error naming the file and the cause when writing first
  fails, and as a warning when it works again, with the number of requests refused meanwhile.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.protocol.errors import StorageUnavailable
from common.service.files import append_private, private_file

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(__name__)

#: Keys whose values never reach a traffic log.
SECRET_KEYS = frozenset(
    {"credential", "coordinator_token", "enrolment_secret", "model_creator_token", "api_token", "token", "secret"}
)
REDACTED = "[redacted]"


def redact(body: str) -> str:
    """``body`` with the value of every :data:`SECRET_KEYS` key of its JSON replaced by ``"[redacted]"``.

    A body that is not JSON, or whose JSON holds no such key, is returned unchanged.
    """
    if not body.lstrip().startswith(("{", "[")):
        return body
    try:
        document = json.loads(body)
    except ValueError:  # not JSON after all (or a number too long to parse): nothing to redact
        return body
    redacted, changed = _redacted(document)
    return json.dumps(redacted, separators=(",", ":")) if changed else body


def _redacted(value: Any) -> tuple[Any, bool]:
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        changed = False
        for key, item in value.items():
            if key in SECRET_KEYS:
                result[key], changed = REDACTED, True
            else:
                result[key], item_changed = _redacted(item)
                changed = changed or item_changed
        return result, changed
    if isinstance(value, list):
        items = [_redacted(item) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    return value, False


class TrafficLog:
    """Append-only JSON-lines file, safe to share between threads, that survives a full disk.

    See the module docstring: :meth:`record` is for what has not happened yet (it raises when
    the line cannot be written), :meth:`record_outcome` for what has (kept until it can be).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = private_file(Path(path))
        self._lock = threading.Lock()
        self._backlog: list[str] = []
        self._refused = 0
        self._failing = False

    def record(self, direction: str, peer: str, body: bytes) -> None:
        """Append one exchange that is about to happen, its body redacted (see the module docstring).

        Raises
        ------
        StorageUnavailable
            When the line (or an earlier outcome still waiting) cannot be written: the exchange
            must not happen, and may be tried again later.
        """
        line = self._line(direction, peer, body)
        with self._lock:
            if not self._write([*self._backlog, line]):
                self._refused += 1
                raise StorageUnavailable(
                    "this party cannot write its traffic log right now (its disk is full or failing); try again later"
                )

    def record_outcome(self, direction: str, peer: str, body: bytes) -> None:
        """Append the outcome of an exchange that has happened; kept in memory while it cannot be written."""
        line = self._line(direction, peer, body)
        with self._lock:
            if not self._write([*self._backlog, line]):
                self._backlog.append(line)

    def recorder(self, direction_map: dict[str, str] | None = None) -> Callable[[str, str, bytes], None]:
        """A callback for :class:`common.service.http.PeerClient` (outbound requests and their replies).

        A request is recorded before it is sent (:meth:`record`: a :class:`StorageUnavailable`
        stops the call), a reply after it came (:meth:`record_outcome`).
        """
        names = {"sent": "sent", "received": "reply", **(direction_map or {})}

        def record(direction: str, peer: str, body: bytes) -> None:
            write = self.record if direction == "sent" else self.record_outcome
            write(names[direction], peer, body)

        return record

    @staticmethod
    def _line(direction: str, peer: str, body: bytes) -> str:
        text = redact(body.decode("utf-8", "replace"))
        return json.dumps({"direction": direction, "peer": peer, "body": text}) + "\n"

    def _write(self, lines: list[str]) -> bool:
        """Write ``lines``, the backlog first as callers pass them (holding the lock); whether all are in the file.

        The lines go out together in one append; on a failure whatever part of them reached the
        file is cut off again (truncating needs no space), so that no line is ever half-written
        or written twice, and the backlog is left as it was.
        """
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            try:
                append_private(self.path, "".join(lines))
            except OSError:
                if self.path.exists() and self.path.stat().st_size > size:
                    os.truncate(self.path, size)
                raise
        except OSError as exc:
            if not self._failing:
                logger.error("traffic log %s: cannot write (%s); refusing exchanges until it can", self.path, exc)
                self._failing = True
            return False
        if self._failing:
            logger.warning(
                "traffic log %s: writable again; %d exchange(s) were refused meanwhile, none is missing",
                self.path,
                self._refused,
            )
            self._failing, self._refused = False, 0
        self._backlog.clear()
        return True


class RecordingMiddleware:
    """WSGI middleware logging every inbound request body and the answer to it.

    The request is recorded before the application runs: when it cannot be, the answer is a 503
    (``StorageUnavailable``, with ``Retry-After``) and the application never sees the request,
    so nothing was half-processed. The answer is recorded once the application gave it, with
    :meth:`TrafficLog.record_outcome`: the answer is sent as it is whatever the disk says, since
    the application has acted on the request (see the module docstring).
    """

    def __init__(self, app: WSGIApplication, log: TrafficLog, retry_after: int) -> None:
        self.app = app
        self.log = log
        self.retry_after = retry_after

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        path = environ.get("PATH_INFO", "")
        try:
            self.log.record("received", path, body)
        except StorageUnavailable as exc:
            return self._unavailable(exc, start_response)
        answer = self.app(environ, start_response)
        try:
            chunks = list(answer)
        finally:
            if hasattr(answer, "close"):
                answer.close()
        self.log.record_outcome("answered", path, b"".join(chunks))
        return chunks

    def _unavailable(self, error: StorageUnavailable, start_response: StartResponse) -> Iterable[bytes]:
        """The answer to a request that could not be recorded: the project's 503, as a storage fault gives it."""
        answer = json.dumps(error.to_json()).encode()
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(answer))),
                ("Retry-After", str(self.retry_after)),
            ],
        )
        return [answer]
