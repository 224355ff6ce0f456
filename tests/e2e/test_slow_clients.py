"""Slow clients do not stop a party (issue 12, defect 2).

Before: about 20 connections sending their headers a byte a second made ``/health`` stop answering
on the model creator, the coordinator and an owner (16 worker threads, no header deadline), and
nothing was logged. Now each party has 64 threads and cuts a request whose headers are not in
within 5 s, with a warning naming the client (:mod:`common.service.server`).
"""

from __future__ import annotations

import socket
import time

import pytest
from e2e_support import running_federation
from support import SHIPPED, SHIPPED_OWNERS_ABC

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
