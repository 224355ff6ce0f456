"""Slow clients do not stop a party (issue 12, defect 2).

Before: about 20 connections sending their headers a byte a second made ``/health`` stop answering
on the model creator, the coordinator and an owner (16 worker threads, no header deadline), and
nothing was logged. Now each party has 64 threads and cuts a request whose headers are not in
within 5 s, with a warning naming the client (:mod:`common.service.server`); and one client
address holds at most three quarters of the threads, so a slowloris that reconnects as soon as it is cut
does not hold up the others either.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from e2e_support import running_federation
from support import SHIPPED, SHIPPED_OWNERS_ABC

from common.service.server import HEADER_SECONDS
from local_federation.slow_clients import health_latency

pytestmark = pytest.mark.e2e

SLOW_CLIENTS = 40  # more than twice the threads that were enough to stop a party


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    with running_federation(tmp_path_factory.mktemp("slow"), SHIPPED_OWNERS_ABC[:1], SHIPPED / "test.csv") as running:
        yield running


@pytest.mark.parametrize("party", ["coordinator", "model_creator", "data_owner:a"])
def test_health_answers_while_slow_clients_hang_on(federation, party):
    latency = health_latency(federation.parties[party].port, SLOW_CLIENTS, patience=5.0)
    assert latency is not None, f"{party}: /health did not answer within 5 s beside {SLOW_CLIENTS} slow clients"


def test_a_client_that_does_not_finish_its_headers_is_cut_and_logged(federation):
    party = federation.model_creator
    with socket.create_connection(("127.0.0.1", party.port), timeout=30) as connection:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        received = b""
        while True:
            connection.sendall(b"X")
            connection.settimeout(1.0)
            try:
                chunk = connection.recv(4096)
            except TimeoutError:
                assert time.monotonic() - started < 20, "the slow client was never cut"
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    assert time.monotonic() - started < 20
    assert b"200 OK" not in received
    log = party.log_path.read_text(errors="replace")
    assert "closed the connection of 127.0.0.1:" in log and "request line and headers not within 5 s" in log


RECONNECTING = 200  # the slowloris that still held /health up: each connection opened again when cut


def test_a_reconnecting_slowloris_from_one_address_does_not_hold_health_up(federation):
    """200 slow connections from 127.0.0.2, each opened again when cut, take at most three quarters of the threads.

    Before the per-address share, /health from another address waited in the queue behind them
    (13 s at 200). Now it answers at once, and the address is named in the log.
    """
    party = federation.model_creator
    latency = health_latency(party.port, RECONNECTING, patience=5.0, source="127.0.0.2", reconnect=True)
    assert latency is not None, f"/health did not answer within 5 s beside {RECONNECTING} reconnecting slow clients"
    # The defect is a wait in the queue behind the slow clients, for their header deadline or
    # longer (8.1 s measured before the share); a loaded CI machine answered in about 1 s.
    assert latency < HEADER_SECONDS / 2, f"/health took {latency:.2f} s beside {RECONNECTING} reconnecting slow clients"
    log = party.log_path.read_text(errors="replace")
    assert "127.0.0.2 holds 48 worker threads; its further connections wait" in log
    assert "127.0.0.2 that waited 5 s for a thread" in log


def test_a_burst_of_calls_from_one_address_beyond_its_share_is_served_not_refused(federation):
    """The share delays, it never refuses: the parties of a local federation all call from 127.0.0.1."""
    url = f"{federation.coordinator.url}/health"
    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(lambda _: requests.get(url, timeout=30).status_code, range(300)))
    assert statuses == [200] * 300
