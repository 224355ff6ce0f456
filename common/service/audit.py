"""A record of every byte a service exchanges with other parties, as JSON lines.

Each line is ``{"direction": "received" | "sent" | "answered" | "reply", "peer": path or URL,
"body": text}``: what the service received, what it sent, what it answered to a request and what
a peer replied. The coordinator enables it to show that it handles nothing but ciphertexts and
metadata; a data owner can use it to audit what left its premises.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class TrafficLog:
    """Append-only JSON-lines file, safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def record(self, direction: str, peer: str, body: bytes) -> None:
        line = json.dumps({"direction": direction, "peer": peer, "body": body.decode("utf-8", "replace")})
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

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
