"""The WSGI server every party serves with: cheroot, with read deadlines and threads to spare.

A cheroot worker thread serves one connection from its request's first byte to its answer's last,
blocking on each read. A client that sends its headers a byte at a time (a "slowloris", or just a
stalled one) would hold a thread for as long as it likes: about as many such clients as threads
stopped every request, ``/health`` and the parties' own calls included, and nothing was logged.

Here each request must arrive within deadlines, enforced by a watchdog thread that shuts the
connection's socket down when one passes (the blocked read or write then fails, cheroot drops the
connection and the thread is free), with a warning naming the client:

* its request line and headers within :data:`HEADER_SECONDS` of the first byte;
* its body read and its answer written within :data:`REQUEST_SECONDS` of the headers (every
  handler here answers at once, leaving long work to background workers).

Idle keep-alive connections wait in cheroot's selector, not in a thread, and are closed after
``timeout`` seconds. :data:`THREADS` threads per party serve the rest: a slow client costs one for
at most :data:`HEADER_SECONDS`. TLS is cheroot's own (:class:`~cheroot.ssl.builtin.BuiltinSSLAdapter`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi

logger = logging.getLogger(__name__)

#: Seconds a client has to send its request line and headers, from their first byte.
HEADER_SECONDS = 5.0
#: Seconds to read a request's body and write its answer, from the end of its headers.
REQUEST_SECONDS = 60.0
#: Worker threads per party.
THREADS = 64
#: Seconds an idle connection (between requests, or before its first byte) is kept open.
IDLE_SECONDS = 10


class Deadlines:
    """Sockets that must be done with a phase of their request by a time; the watchdog cuts those late."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[int, tuple[socket.socket, float, str]] = {}
        self._watchdog = threading.Thread(target=self._watch, name="read-deadlines", daemon=True)
        self._watchdog.start()

    @contextmanager
    def armed(self, connection: socket.socket, seconds: float, phase: str) -> Iterator[None]:
        """Within the block, ``connection`` must finish ``phase`` in ``seconds`` or be shut down."""
        key = id(connection)
        with self._lock:
            self._due[key] = (connection, time.monotonic() + seconds, f"{phase} not within {seconds:g} s")
        try:
            yield
        finally:
            with self._lock:
                self._due.pop(key, None)

    def _watch(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._lock:
                late = [(key, entry) for key, entry in self._due.items() if entry[1] <= now]
                for key, _ in late:
                    del self._due[key]
            for _, (connection, _, reason) in late:
                _cut(connection, reason)


def _cut(connection: socket.socket, reason: str) -> None:
    """Shut ``connection`` down under the thread blocked on it (the TLS layer too: its raw socket)."""
    try:
        host, port = connection.getpeername()[:2]
    except OSError:
        return
    # Logged first, so that whoever sees the connection end finds the reason already written.
    logger.warning("closed the connection of %s:%s: %s", host, port, reason)
    try:
        socket.socket.shutdown(connection, socket.SHUT_RDWR)
    except OSError:
        return


class DeadlineRequest(cheroot_server.HTTPRequest):
    """cheroot's request, read and answered within the server's :class:`Deadlines`."""

    def parse_request(self) -> None:
        with _deadlines(self).armed(self.conn.socket, HEADER_SECONDS, "request line and headers"):
            super().parse_request()

    def respond(self) -> None:
        with _deadlines(self).armed(self.conn.socket, REQUEST_SECONDS, "request body and answer"):
            super().respond()


class DeadlineConnection(cheroot_server.HTTPConnection):
    RequestHandlerClass = DeadlineRequest


class GuardedServer(wsgi.Server):
    """A cheroot WSGI server with :data:`THREADS` threads whose requests have read deadlines."""

    ConnectionClass = DeadlineConnection

    def __init__(self, address: tuple[str, int], app: Any, name: str) -> None:
        super().__init__(address, app, numthreads=THREADS, server_name=name, timeout=IDLE_SECONDS)
        self.deadlines = Deadlines()


def _deadlines(request: cheroot_server.HTTPRequest) -> Deadlines:
    server = request.server
    assert isinstance(server, GuardedServer)
    return server.deadlines
