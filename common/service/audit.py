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
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.service.files import append_private, private_file

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

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
    """Append-only JSON-lines file, safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = private_file(Path(path))
        self._lock = threading.Lock()

    def record(self, direction: str, peer: str, body: bytes) -> None:
        """Append one exchange, its body redacted (see the module docstring)."""
        text = redact(body.decode("utf-8", "replace"))
        line = json.dumps({"direction": direction, "peer": peer, "body": text})
        with self._lock:
            append_private(self.path, line + "\n")

    def recorder(self, direction_map: dict[str, str] | None = None) -> Callable[[str, str, bytes], None]:
        """A callback for :class:`common.service.http.PeerClient` (outbound requests and their replies)."""
        names = {"sent": "sent", "received": "reply", **(direction_map or {})}
        return lambda direction, peer, body: self.record(names[direction], peer, body)


class RecordingMiddleware:
    """WSGI middleware logging every inbound request body and the answer to it."""

    def __init__(self, app: WSGIApplication, log: TrafficLog) -> None:
        self.app = app
        self.log = log

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        path = environ.get("PATH_INFO", "")
        self.log.record("received", path, body)
        answer = self.app(environ, start_response)
        try:
            chunks = list(answer)
        finally:
            if hasattr(answer, "close"):
                answer.close()
        self.log.record("answered", path, b"".join(chunks))
        return chunks
