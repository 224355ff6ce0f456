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

Deadlines alone do not stop a slowloris that reconnects: 200 connections, each cut after 5 s and
opened again at once, kept every thread busy and ``/health`` waiting in the queue behind them.
So no client address may hold more than :data:`PER_ADDRESS` threads (three quarters) at once
(:class:`AddressLimit`): its further connections wait, parked, costing no thread, until one of its
own is done, and are closed if they wait longer than :data:`HEADER_SECONDS`. Every other address
always finds threads free. The limit delays, it never refuses: the parties of a federation on
one host all call from 127.0.0.1, and a burst of their calls beyond the limit is served as soon
as their earlier calls end (each handler answers at once), so inter-party calls still answer.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
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
#: Worker threads one client address may hold at once; its further connections wait, parked. The
#: other quarter is kept for every other address.
PER_ADDRESS = THREADS * 3 // 4
#: Connections of one address that may wait, parked; more are closed at once.
PARKED_PER_ADDRESS = 4 * THREADS


class Deadlines:
    """Sockets that must be done with a phase of their request by a time; the watchdog cuts those late."""

    def __init__(self, on_tick: Callable[[float], None]) -> None:
        self._on_tick = on_tick
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
            self._on_tick(now)


class AddressLimit:
    """At most ``per_address`` connections of one client address in the worker threads at once.

    ``dispatch`` hands a connection to the threads. A connection of an address that holds its
    share waits here, parked, until one of that address's connections is done
    (:meth:`release`); it is closed if it waited ``patience`` seconds (:meth:`expire`), or at once
    when ``parked_per_address`` of the address wait already.
    """

    def __init__(
        self,
        dispatch: Callable[[cheroot_server.HTTPConnection], None],
        per_address: int,
        parked_per_address: int,
        patience: float,
    ) -> None:
        self._dispatch = dispatch
        self.per_address = per_address
        self.parked_per_address = parked_per_address
        self.patience = patience
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}
        self._parked: dict[str, deque[tuple[cheroot_server.HTTPConnection, float]]] = {}

    def admit(self, connection: cheroot_server.HTTPConnection) -> None:
        """Hand ``connection`` to the threads, or park it while its address holds its share."""
        address = str(connection.remote_addr)
        with self._lock:
            if self._busy.get(address, 0) < self.per_address:
                self._busy[address] = self._busy.get(address, 0) + 1
                parked = None
            else:
                parked = self._parked.setdefault(address, deque())
                if len(parked) < self.parked_per_address:
                    if not parked:
                        logger.warning(
                            "%s holds %d worker threads; its further connections wait", address, self.per_address
                        )
                    parked.append((connection, time.monotonic()))
                    return
        if parked is None:
            self._dispatch(connection)
            return
        logger.warning("closed a connection of %s: %d of its connections wait already", address, len(parked))
        connection.close()

    def release(self, connection: cheroot_server.HTTPConnection) -> None:
        """One of an address's connections left its thread: the oldest of its parked ones takes its place."""
        address = str(connection.remote_addr)
        with self._lock:
            parked = self._parked.get(address)
            if parked:
                waiting, _ = parked.popleft()
                if not parked:
                    del self._parked[address]
            else:
                waiting = None
                self._busy[address] -= 1
                if not self._busy[address]:
                    del self._busy[address]
        if waiting is not None:
            self._dispatch(waiting)

    def expire(self, now: float) -> None:
        """Close the parked connections that waited ``patience`` seconds or more."""
        late: dict[str, list[cheroot_server.HTTPConnection]] = {}
        with self._lock:
            for address, parked in list(self._parked.items()):
                while parked and now - parked[0][1] >= self.patience:
                    late.setdefault(address, []).append(parked.popleft()[0])
                if not parked:
                    del self._parked[address]
        for address, connections in late.items():
            logger.warning(
                "closed %d connection(s) of %s that waited %g s for a thread", len(connections), address, self.patience
            )
            for connection in connections:
                connection.close()


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
    """cheroot's connection, whose thread is given back to its address's share when it is done."""

    RequestHandlerClass = DeadlineRequest

    def communicate(self) -> bool:
        server = self.server
        assert isinstance(server, GuardedServer)
        try:
            return bool(super().communicate())  # type: ignore[no-untyped-call]  # unannotated in cheroot 11.1.2
        finally:
            server.address_limit.release(self)


class GuardedServer(wsgi.Server):
    """A cheroot WSGI server with :data:`THREADS` threads, read deadlines and a share of them per address."""

    ConnectionClass = DeadlineConnection

    def __init__(self, address: tuple[str, int], app: Any, name: str) -> None:
        super().__init__(address, app, numthreads=THREADS, server_name=name, timeout=IDLE_SECONDS)
        self.address_limit = AddressLimit(
            lambda connection: wsgi.Server.process_conn(self, connection),
            PER_ADDRESS,
            PARKED_PER_ADDRESS,
            HEADER_SECONDS,
        )
        self.deadlines = Deadlines(self.address_limit.expire)

    def process_conn(self, conn: cheroot_server.HTTPConnection) -> None:
        """Hand a connection with a request to read to the threads, within its address's share."""
        self.address_limit.admit(conn)


def _deadlines(request: cheroot_server.HTTPRequest) -> Deadlines:
    server = request.server
    assert isinstance(server, GuardedServer)
    return server.deadlines
