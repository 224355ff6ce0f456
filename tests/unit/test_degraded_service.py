"""A service under pressure, without HTTP: the per-address share of a server's threads, and a traffic
log whose disk fails (common/service/server.py, common/service/audit.py)."""

from __future__ import annotations

import errno
import io
import json
import logging
import time

import pytest

from common.protocol.errors import StorageUnavailable
from common.service import audit
from common.service.audit import RecordingMiddleware, TrafficLog
from common.service.server import AddressLimit


class Connection:
    """What the share reads of a cheroot connection: its client's address; and whether it was closed."""

    def __init__(self, address: str) -> None:
        self.remote_addr = address
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_an_address_holds_at_most_its_share_and_the_others_still_get_threads():
    dispatched: list[Connection] = []
    limit = AddressLimit(dispatched.append, per_address=2, parked_per_address=3, patience=5.0)
    abusive = [Connection("127.0.0.2") for _ in range(6)]
    for connection in abusive:
        limit.admit(connection)
    other = Connection("127.0.0.1")
    limit.admit(other)
    assert dispatched == [abusive[0], abusive[1], other]
    # Beyond the parked ones, closed at once.
    assert [c.closed for c in abusive] == [False, False, False, False, False, True]

    limit.release(abusive[0])  # its place goes to the oldest parked connection of the same address
    assert dispatched[-1] is abusive[2]
    limit.release(other)
    assert dispatched[-1] is abusive[2]


def test_parked_connections_are_closed_once_they_waited_their_patience(caplog):
    dispatched: list[Connection] = []
    limit = AddressLimit(dispatched.append, per_address=1, parked_per_address=10, patience=5.0)
    first, second, third = (Connection("10.0.0.9") for _ in range(3))
    for connection in (first, second, third):
        limit.admit(connection)
    with caplog.at_level(logging.WARNING):
        limit.expire(time.monotonic() + 5.0)
    assert second.closed and third.closed and not first.closed
    assert "closed 2 connection(s) of 10.0.0.9 that waited 5 s for a thread" in caplog.text
    limit.release(first)  # nothing waits any more: the address's share is free again
    fourth = Connection("10.0.0.9")
    limit.admit(fourth)
    assert dispatched == [first, fourth]


def _full_disk(monkeypatch: pytest.MonkeyPatch, full: list[bool]) -> None:
    """``append_private`` fails with ENOSPC while ``full[0]``, after writing part of the text (as a disk does)."""
    real = audit.append_private

    def append(path, text):
        if full[0]:
            real(path, text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(audit, "append_private", append)


def test_a_traffic_log_refuses_what_is_to_come_keeps_what_happened_and_writes_it_in_order(tmp_path, monkeypatch,
                                                                                          caplog):
    full = [False]
    _full_disk(monkeypatch, full)
    log = TrafficLog(tmp_path / "traffic.jsonl")
    log.record("received", "/a", b"1")
    full[0] = True
    with caplog.at_level(logging.INFO):
        log.record_outcome("answered", "/a", b"2")  # the exchange happened: kept
        with pytest.raises(StorageUnavailable, match="cannot write its traffic log right now"):
            log.record("received", "/b", b"3")
        with pytest.raises(StorageUnavailable):
            log.record("sent", "http://peer/c", b"4")
        assert (tmp_path / "traffic.jsonl").read_text().count("\n") == 1  # no half line left behind
        full[0] = False
        log.record("received", "/d", b"5")
    lines = [json.loads(line) for line in (tmp_path / "traffic.jsonl").read_text().splitlines()]
    assert [(line["direction"], line["peer"], line["body"]) for line in lines] == [
        ("received", "/a", "1"), ("answered", "/a", "2"), ("received", "/d", "5")]
    assert caplog.text.count("cannot write ([Errno 28] No space left on device)") == 1
    assert "writable again; 2 exchange(s) were refused meanwhile, none is missing" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_request_that_cannot_be_recorded_is_answered_503_and_never_reaches_the_application(tmp_path,
                                                                                                 monkeypatch):
    full = [True]
    _full_disk(monkeypatch, full)
    called = []

    def application(environ, start_response):
        called.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    middleware = RecordingMiddleware(application, TrafficLog(tmp_path / "traffic.jsonl"), retry_after=2)
    started = []
    body = b"".join(middleware({"PATH_INFO": "/jobs", "CONTENT_LENGTH": "2", "wsgi.input": io.BytesIO(b"{}")},
                               lambda status, headers: started.append((status, dict(headers)))))
    assert called == []
    (status, headers), = started
    assert status == "503 Service Unavailable" and headers["Retry-After"] == "2"
    assert json.loads(body) == {"error": "this party cannot write its traffic log right now (its disk is full or"
                                         " failing); try again later", "type": "StorageUnavailable"}
