"""A data owner's audit (GET /audit, GET /audit/<id>): every message that left it, byte for byte, for its operator.

The owner joins a job, answers a round (its contribution goes to a stub coordinator) and leaves;
its audit lists each answer it gave and each request it sent, with the exact bytes. An audit that
cannot be written stops the message: a request is not sent, an answer is replaced by a 503.
"""

from __future__ import annotations

import hashlib
import json
import stat
import time
from contextlib import contextmanager

import pytest
from api_support import as_operator, assert_json_error, client_with, encrypted, enrolled, job_body, make_spec
from support import OWNER_COORDINATOR_TOKEN, SHIPPED, UNREACHABLE, secrets_for

from common.protocol.errors import StorageUnavailable
from data_owner import create_app, deregister


def owner_app(tmp_path, coordinator: str = UNREACHABLE, name: str = "owner-a"):
    return create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "owner-state"), "NAME": name,
                       "DATA": str(SHIPPED / "owner_a.csv"), "COORDINATOR_URL": coordinator, "REQUEST_TIMEOUT": 5,
                       "WORKER_PROCESSES": 1, "CONNECT_RETRIES": 0, "STATUS_RETRIES": 0,
                       "POLICY": {"test_only_small_keys": True}, **secrets_for("ENROLMENT_SECRET")})


def audit_of(app, query: str = "") -> dict:
    response = as_operator(app).get(f"/audit{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def body_of(app, entry_id: int):
    response = as_operator(app).get(f"/audit/{entry_id}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


@contextmanager
def full_disk(app):
    """The audit's database cannot be written, as on a full disk (SQLite's 'database or disk is full')."""
    audit = app.extensions["audit"]

    @contextmanager
    def unavailable(*args, **kwargs):
        raise StorageUnavailable("this party cannot use its state storage right now (database or disk is full)")
        yield

    audit.connect = unavailable
    try:
        yield
    finally:
        del audit.connect


def joined_round(tmp_path, stub_peer, small_key):
    """An owner that joined job-1, answered round 0 and sent its contribution; (app, coordinator, join answer)."""
    coordinator = stub_peer()
    app = owner_app(tmp_path, coordinator.url)
    client = enrolled(app)
    spec = make_spec(small_key)
    joined = client.put("/jobs/job-1", json=job_body(small_key, spec, callback_url=None))
    assert joined.status_code == 200, joined.get_data(as_text=True)
    round_body = {"round": 0, "attempt": 1, "key_fingerprint": small_key.public_key.fingerprint,
                  "encrypted_weights": encrypted(small_key, [1] * spec.dimension),
                  "members": [joined.get_json()["member"]]}
    accepted = client.post("/jobs/job-1/rounds", json=round_body)
    assert accepted.status_code == 202, accepted.get_data(as_text=True)
    coordinator.wait_for(lambda r: r.path == "/jobs/job-1/rounds/0/contributions")
    # The stub records a request before it answers; the status is in the audit once the answer is back.
    deadline = time.monotonic() + 30
    while any(entry["status"] is None for entry in audit_of(app)["entries"]):
        assert time.monotonic() < deadline, audit_of(app)
        time.sleep(0.01)
    return app, coordinator, joined, accepted


def test_every_message_that_left_is_listed_with_its_exact_bytes(tmp_path, stub_peer, small_key):
    app, coordinator, joined, accepted = joined_round(tmp_path, stub_peer, small_key)
    left = enrolled(app).delete("/jobs/job-1")
    assert left.status_code == 200
    # The operator's own calls and the health check are no messages to another party.
    assert app.test_client().get("/health").status_code == 200
    assert as_operator(app).get("/status").status_code == 200

    entries = audit_of(app)["entries"][::-1]
    assert sorted(entry["kind"] for entry in entries) == ["contribution", "join", "leave", "round_acceptance"]
    by_kind = {entry["kind"]: entry for entry in entries}
    assert entries[0]["kind"] == "join" and entries[-1]["kind"] == "leave"
    for kind, answer in (("join", joined), ("round_acceptance", accepted), ("leave", left)):
        entry = by_kind[kind]
        assert entry["direction"] == "answered" and entry["peer"].startswith("coordinator at ")
        assert entry["status"] == answer.status_code
        assert body_of(app, entry["id"]).data == answer.data, f"the {kind} answer recorded is not the one given"
    assert by_kind["join"]["method"] == "PUT" and by_kind["join"]["path"] == "/jobs/job-1"
    assert "member" in json.loads(body_of(app, by_kind["join"]["id"]).data)

    contribution = by_kind["contribution"]
    assert contribution["direction"] == "sent" and contribution["method"] == "POST"
    assert contribution["peer"] == f"{coordinator.url}/jobs/job-1/rounds/0/contributions"
    assert contribution["path"] == "/jobs/job-1/rounds/0/contributions" and contribution["status"] == 200
    download = body_of(app, contribution["id"])
    (received,) = [r for r in coordinator.requests if r.path.endswith("/contributions")]
    assert json.loads(download.data) == received.body, "the bytes recorded are the contribution the coordinator got"
    assert len(download.data) == contribution["size"]
    assert hashlib.sha256(download.data).hexdigest() == contribution["sha256"] == download.headers["X-Audit-SHA256"]
    assert download.headers["Content-Disposition"] == f"attachment; filename=audit-{contribution['id']}-contribution.json"
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert set(entries[0]) == {"id", "at", "direction", "peer", "method", "path", "kind", "status", "size", "sha256"}


def test_the_audit_is_private_and_outlives_a_restart(tmp_path, stub_peer, small_key):
    app, *_ = joined_round(tmp_path, stub_peer, small_key)
    before = audit_of(app)
    path = app.extensions["settings"].state_dir / "audit.sqlite3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    restarted = owner_app(tmp_path)
    assert audit_of(restarted) == before


def test_pages_go_newest_first_until_next_before_is_none(tmp_path):
    app = owner_app(tmp_path)
    client = client_with(app, "not-the-coordinator")
    for index in range(5):  # five refused calls: answers on the coordinator's endpoints, recorded too
        assert client.delete(f"/jobs/job-{index}").status_code == 401
    first = audit_of(app, "?limit=2")
    assert [entry["path"] for entry in first["entries"]] == ["/jobs/job-4", "/jobs/job-3"]
    assert first["entries"][0]["kind"] == "error" and first["entries"][0]["peer"].startswith("unauthenticated caller")
    second = audit_of(app, f"?limit=2&before={first['next_before']}")
    assert [entry["path"] for entry in second["entries"]] == ["/jobs/job-2", "/jobs/job-1"]
    last = audit_of(app, f"?limit=2&before={second['next_before']}")
    assert [entry["path"] for entry in last["entries"]] == ["/jobs/job-0"] and last["next_before"] is None
    assert audit_of(app, "?limit=5")["next_before"] is None


@pytest.mark.parametrize("path, status, fragment", [
    ("/audit/0", 400, "path.audit_id"),
    ("/audit/-3", 400, "path.audit_id"),
    ("/audit/abc", 400, "path.audit_id"),
    ("/audit/99", 404, "audit entry 99 does not exist"),
    ("/audit?limit=0", 400, "query.limit"),
    ("/audit?limit=1001", 400, "query.limit"),
    ("/audit?before=0", 400, "query.before"),
    ("/audit?before=x", 400, "query.before"),
])
def test_a_bad_audit_request_names_what_was_wrong(tmp_path, path, status, fragment):
    assert_json_error(as_operator(owner_app(tmp_path)).get(path), status, fragment)


@pytest.mark.parametrize("path", ["/audit", "/audit/1"])
def test_the_audit_is_for_the_operator_only(tmp_path, path):
    app = owner_app(tmp_path)
    enrolled(app)
    assert_json_error(app.test_client().get(path), 401, "missing or unknown credentials")
    assert_json_error(client_with(app, OWNER_COORDINATOR_TOKEN).get(path), 403, f"a coordinator may not call GET {path}")


def test_a_request_the_audit_cannot_record_is_not_sent(tmp_path, stub_peer):
    coordinator = stub_peer(lambda method, path, body: (200, {"name": "owner-a", "status": "removed"}))
    app = owner_app(tmp_path, coordinator.url)
    app.extensions["enrolment"].set("credential", OWNER_COORDINATOR_TOKEN)
    with full_disk(app), pytest.raises(StorageUnavailable):
        deregister(app)
    assert coordinator.requests == [], "nothing left unaudited"
    deregister(app)
    (sent,) = coordinator.requests
    (entry,) = audit_of(app)["entries"]
    assert entry["kind"] == "deregistration" and entry["status"] == 200
    assert json.loads(body_of(app, entry["id"]).data) == sent.body


def test_an_answer_the_audit_cannot_record_is_a_503_carrying_nothing_of_the_owner(tmp_path, small_key):
    app = owner_app(tmp_path)
    client = enrolled(app)
    with full_disk(app):
        refused = client.put("/jobs/job-1", json=job_body(small_key, make_spec(small_key), callback_url=None))
    body = assert_json_error(refused, 503, "cannot use its state storage right now")
    assert body["type"] == "StorageUnavailable" and refused.headers["Retry-After"] == "2"
    assert audit_of(app)["entries"] == []
