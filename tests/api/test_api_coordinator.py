"""The coordinator's API: the data-owner registry, jobs, rounds and contributions.

Every call carries the credential of the party that makes it: the enrolment secret to enrol, the
model creator's token for jobs and rounds, an owner's own credential (issued at enrolment) for
its contributions.

Enrolments are signed with the owner's identity key (PROTOCOL.md section 9): the first binds the
name to the key, and only that key can enrol the name again, later than the last time.

Rounds run for real: a stub peer on a loopback port plays the data owners and the model
creator's callback, so a round is fanned out, collected and aggregated by the coordinator's own
code; the stub owners answer joins with signed job keys, and the test sends their contributions.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time

import pytest
from api_support import (
    MISSING,
    SPEC_CASES,
    as_enrolling_owner,
    as_model_creator,
    assert_json_error,
    ciphertext_cases,
    client_with,
    encrypted,
    job_body,
    make_spec,
    patched,
    restart_config,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import TOKENS, UNREACHABLE

from common.crypto.identity import IdentityKey
from common.crypto.masking import JobKeyPair
from common.protocol.messages import Enrolment, MemberKey
from common.protocol.spec import JobSpec
from common.protocol.wire import decode_ciphertexts
from coordinator import create_app


def identity_of(name: str, version: int = 0) -> IdentityKey:
    """The identity key of the owner ``name`` in these tests (another ``version``: someone else's key)."""
    seed = hashlib.sha256(f"identity of {name} #{version}".encode()).digest()
    return IdentityKey(Ed25519PrivateKey.from_private_bytes(seed))


def enrolment(name: str, url: str, identity: IdentityKey | None = None, signed_at: float | None = None) -> dict:
    """An enrolment body signed by ``identity`` (by default the owner's own key), now (by default)."""
    identity = identity or identity_of(name)
    signed = Enrolment.signed(name, url, identity, time.time() if signed_at is None else signed_at)
    return signed.model_dump(mode="json")


def register(app, name: str, url: str, identity: IdentityKey | None = None, signed_at: float | None = None):
    """Enrol a data owner with the enrolment secret, signed by its identity key."""
    return as_enrolling_owner(app).post("/data_owners", json=enrolment(name, url, identity, signed_at))


def as_owner(app, name: str, url: str = "http://127.0.0.1:5001"):
    """The coordinator as called by a freshly enrolled data owner, with the credential it was issued."""
    enrolled = register(app, name, url)
    assert enrolled.status_code in (200, 201), enrolled.get_json()
    return client_with(app, enrolled.get_json()["credential"])


def create_job(client, key, spec=None, callback_url=UNREACHABLE):
    response = client.post("/jobs", json=job_body(key, spec, callback_url))
    assert response.status_code == 201, response.get_json()
    return response


def weights_body(key, spec: JobSpec, round_number: int = 0) -> dict:
    return {"round": round_number, "key_fingerprint": key.public_key.fingerprint,
            "encrypted_weights": encrypted(key, list(range(spec.dimension)))}


def contribution_body(key, spec: JobSpec, owner: str, attempt: int = 1, values=None) -> dict:
    count = spec.reply_ciphertexts()
    return {"data_owner": owner, "attempt": attempt, "key_fingerprint": key.public_key.fingerprint,
            "ciphertexts": encrypted(key, values if values is not None else [7] * count)}


# -- data owner registry -------------------------------------------------------------------------

def test_register_then_reregister_then_list(coordinator_app):
    client = as_model_creator(coordinator_app)
    assert client.get("/data_owners").get_json() == {"data_owners": []}

    first = register(coordinator_app, "owner-a", "http://127.0.0.1:5001/")
    assert first.status_code == 201
    issued = first.get_json()
    assert set(issued) == {"name", "credential", "coordinator_token"} and issued["name"] == "owner-a"
    assert issued["credential"] != issued["coordinator_token"]
    assert register(coordinator_app, "owner-b", "https://owner-b.example:5002").status_code == 201

    again = register(coordinator_app, "owner-a", "http://127.0.0.1:5003", signed_at=time.time() + 1)
    assert again.status_code == 200
    reissued = again.get_json()
    assert reissued["name"] == "owner-a"
    assert reissued["credential"] != issued["credential"]
    assert reissued["coordinator_token"] != issued["coordinator_token"]

    listed = client.get("/data_owners")
    assert listed.status_code == 200
    entries = listed.get_json()["data_owners"]
    assert [{key: entry[key] for key in ("name", "url", "columns", "online", "offline_reason")}
            for entry in entries] == [
        {"name": "owner-a", "url": "http://127.0.0.1:5003", "columns": [], "online": True, "offline_reason": None},
        {"name": "owner-b", "url": "https://owner-b.example:5002", "columns": [], "online": True,
         "offline_reason": None},
    ]
    # Each was heard from when it enrolled (owner-a last at its second enrolment).
    assert all(abs(entry["last_seen"] - time.time()) < 60 for entry in entries)
    assert issued["credential"] not in listed.get_data(as_text=True)


def test_reenrolment_replaces_the_old_credential(coordinator_app, small_key):
    spec = make_spec(small_key)
    create_job(as_model_creator(coordinator_app), small_key, spec)
    old = as_owner(coordinator_app, "owner-a")
    new = client_with(coordinator_app, register(coordinator_app, "owner-a", "http://127.0.0.1:5001",
                                                signed_at=time.time() + 1).get_json()["credential"])
    body = contribution_body(small_key, spec, "owner-a")
    assert_json_error(old.post("/jobs/job-1/rounds/0/contributions", json=body), 401, "credentials")
    assert_json_error(new.post("/jobs/job-1/rounds/0/contributions", json=body), 409, "is not open")


EMPTY = object()
"""A registration case whose body is the empty object."""

REGISTRATION_CASES = [
    pytest.param(EMPTY, "body.name", id="empty-object"),
    pytest.param({"name": MISSING}, "body.name", id="missing-name"),
    pytest.param({"name": 5}, "body.name", id="name-int"),
    pytest.param({"name": True}, "body.name", id="name-bool"),
    pytest.param({"name": ""}, "body.name", id="name-empty"),
    pytest.param({"name": "x" * 65}, "body.name", id="name-too-long"),
    pytest.param({"name": ["owner"]}, "body.name", id="name-list"),
    pytest.param({"name": "owner a"}, "body.name: String should match pattern", id="name-space"),
    pytest.param({"name": "../owner"}, "body.name: String should match pattern", id="name-path"),
    pytest.param({"url": MISSING}, "body.url", id="missing-url"),
    pytest.param({"url": 5000}, "body.url", id="url-int"),
    pytest.param({"url": "ftp://127.0.0.1:5000"}, "body.url: String should match pattern", id="url-ftp"),
    pytest.param({"url": "127.0.0.1:5000"}, "body.url: String should match pattern", id="url-no-scheme"),
    pytest.param({"identity_key": MISSING}, "body.identity_key", id="identity-key-missing"),
    pytest.param({"identity_key": "not a key"}, "body.identity_key", id="identity-key-junk"),
    pytest.param({"identity_key": 7}, "body.identity_key", id="identity-key-int"),
    pytest.param({"signed_at": MISSING}, "body.signed_at", id="signed-at-missing"),
    pytest.param({"signed_at": "now"}, "body.signed_at", id="signed-at-string"),
    pytest.param({"signed_at": -1.0}, "body.signed_at", id="signed-at-negative"),
    pytest.param({"signature": MISSING}, "body.signature", id="signature-missing"),
    pytest.param({"signature": "c2lnbmVk"}, "body.signature", id="signature-short"),
    pytest.param({"role": "admin"}, "body.role", id="unknown-field"),
]


def registration_payload(overrides) -> dict:
    """A signed enrolment of ``owner`` with ``overrides`` applied (a MISSING value removes the field)."""
    if overrides is EMPTY:
        return {}
    payload = {**enrolment("owner", "http://127.0.0.1:5000"), **overrides}
    return {name: value for name, value in payload.items() if value is not MISSING}


@pytest.mark.parametrize(("overrides", "fragment"), REGISTRATION_CASES)
def test_bad_registration(coordinator_app, overrides, fragment):
    response = as_enrolling_owner(coordinator_app).post("/data_owners", json=registration_payload(overrides))
    assert_json_error(response, 400, fragment)
    assert as_model_creator(coordinator_app).get("/data_owners").get_json() == {"data_owners": []}


# -- identity binding ----------------------------------------------------------------------------

def listed(app) -> list[dict]:
    """The registry's names, URLs and published columns (liveness is checked where it matters)."""
    return [{key: entry[key] for key in ("name", "url", "columns")}
            for entry in as_model_creator(app).get("/data_owners").get_json()["data_owners"]]


def test_reenrolment_under_a_bound_name_with_another_identity_key_is_refused(coordinator_app, small_key):
    """Identity hijack: the enrolment secret is shared, but only the name's own key re-enrols it."""
    spec = make_spec(small_key)
    create_job(as_model_creator(coordinator_app), small_key, spec)
    real = as_owner(coordinator_app, "owner-a", "http://127.0.0.1:5001")
    before = listed(coordinator_app)

    hijack = register(coordinator_app, "owner-a", "http://evil.example:5001", identity=identity_of("owner-a", 1),
                      signed_at=time.time() + 1)
    body = assert_json_error(hijack, 403, "data owner 'owner-a' is enrolled with another identity key")
    assert body["type"] == "Forbidden"
    assert "credential" not in hijack.get_json() and identity_of("owner-a", 1).public_text not in body["error"]

    assert listed(coordinator_app) == before
    contribution = contribution_body(small_key, spec, "owner-a")
    assert_json_error(real.post("/jobs/job-1/rounds/0/contributions", json=contribution), 409, "is not open")
    # The real owner may still enrol again, with its own key.
    assert register(coordinator_app, "owner-a", "http://127.0.0.1:5009", signed_at=time.time() + 2).status_code == 200
    assert listed(coordinator_app) == [{"name": "owner-a", "url": "http://127.0.0.1:5009", "columns": []}]


def test_another_name_may_use_another_key_and_a_key_may_not_take_a_bound_name(coordinator_app):
    assert register(coordinator_app, "owner-a", "http://127.0.0.1:5001").status_code == 201
    assert register(coordinator_app, "owner-b", "http://127.0.0.1:5002").status_code == 201
    taken = register(coordinator_app, "owner-b", "http://127.0.0.1:5002", identity=identity_of("owner-a"),
                     signed_at=time.time() + 1)
    assert_json_error(taken, 403, "data owner 'owner-b' is enrolled with another identity key")


def test_replayed_enrolment_is_refused(coordinator_app, small_key):
    spec = make_spec(small_key)
    create_job(as_model_creator(coordinator_app), small_key, spec)
    recorded = enrolment("owner-a", "http://127.0.0.1:5001")
    first = as_enrolling_owner(coordinator_app).post("/data_owners", json=recorded)
    assert first.status_code == 201
    replay = as_enrolling_owner(coordinator_app).post("/data_owners", json=recorded)
    assert_json_error(replay, 403, "signed no later than the last one accepted")
    earlier = register(coordinator_app, "owner-a", "http://127.0.0.1:5001", signed_at=recorded["signed_at"] - 10)
    assert_json_error(earlier, 403, "signed no later than the last one accepted")
    owner = client_with(coordinator_app, first.get_json()["credential"])
    contribution = contribution_body(small_key, spec, "owner-a")
    assert_json_error(owner.post("/jobs/job-1/rounds/0/contributions", json=contribution), 409, "is not open")


@pytest.fixture
def clocked_app(tmp_path):
    """A coordinator whose wall clock stands still at NOW."""
    return create_app({"TESTING": True, "TEST_ONLY_SMALL_KEYS": True, "STATE_DIR": str(tmp_path / "clocked-coordinator"), **TOKENS},
                      clock=lambda: NOW)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(("signed_at", "status", "fragment"), [
    pytest.param(NOW, 201, None, id="now"),
    pytest.param(NOW - 300, 201, None, id="300-s-old"),
    pytest.param(NOW + 300, 201, None, id="300-s-ahead"),
    pytest.param(NOW - 301, 403, "signed 301 s before the coordinator's time; at most 300 s", id="stale"),
    pytest.param(NOW + 301, 403, "signed 301 s after the coordinator's time", id="from-the-future"),
    pytest.param(0.0, 403, "before the coordinator's time", id="epoch"),
])
def test_enrolment_must_be_signed_within_the_window(clocked_app, signed_at, status, fragment):
    response = register(clocked_app, "owner-a", "http://127.0.0.1:5001", signed_at=signed_at)
    if fragment is None:
        assert response.status_code == status, response.get_json()
        assert listed(clocked_app) == [{"name": "owner-a", "url": "http://127.0.0.1:5001", "columns": []}]
    else:
        assert_json_error(response, status, fragment)
        assert listed(clocked_app) == []


def test_stale_reenrolment_keeps_the_owner(clocked_app):
    assert register(clocked_app, "owner-a", "http://127.0.0.1:5001", signed_at=NOW - 100).status_code == 201
    assert_json_error(register(clocked_app, "owner-a", "http://127.0.0.1:5002", signed_at=NOW - 400), 403,
                      "before the coordinator's time")
    assert register(clocked_app, "owner-a", "http://127.0.0.1:5003", signed_at=NOW - 99).status_code == 200
    assert listed(clocked_app) == [{"name": "owner-a", "url": "http://127.0.0.1:5003", "columns": []}]


@pytest.mark.parametrize("forge", [
    pytest.param(lambda body: {**body, "url": "http://evil.example:5001"}, id="url-changed-after-signing"),
    pytest.param(lambda body: {**body, "name": "owner-b"}, id="name-changed-after-signing"),
    pytest.param(lambda body: {**body, "signed_at": body["signed_at"] + 1}, id="time-changed-after-signing"),
    pytest.param(lambda body: {**body, "identity_key": identity_of("owner-a", 1).public_text},
                 id="signed-by-another-key"),
    pytest.param(lambda body: {**body, "signature": "A" * 86 + "=="}, id="zero-signature"),
    pytest.param(lambda body: {**body, "identity_key": "A" * 43 + "="}, id="small-order-key"),
])
def test_badly_signed_enrolment_is_refused(coordinator_app, forge):
    body = forge(enrolment("owner-a", "http://127.0.0.1:5001"))
    response = as_enrolling_owner(coordinator_app).post("/data_owners", json=body)
    assert_json_error(response, 403, "body.signature")
    assert listed(coordinator_app) == []


def test_badly_signed_enrolment_under_a_bound_name_keeps_the_owner(coordinator_app):
    first = register(coordinator_app, "owner-a", "http://127.0.0.1:5001")
    body = {**enrolment("owner-a", "http://127.0.0.1:5001", signed_at=time.time() + 1), "url": "http://evil:1"}
    assert_json_error(as_enrolling_owner(coordinator_app).post("/data_owners", json=body), 403, "body.signature")
    assert listed(coordinator_app) == [{"name": "owner-a", "url": "http://127.0.0.1:5001", "columns": []}]
    assert first.status_code == 201


def test_an_older_database_is_migrated_and_binds_at_the_next_enrolment(tmp_path):
    """A registry made before identity keys: its owners stay, and their next enrolment binds the key."""
    state = tmp_path / "old-coordinator"
    state.mkdir()
    with sqlite3.connect(state / "coordinator.sqlite3") as db:
        db.executescript("""
        CREATE TABLE data_owners (
            name TEXT PRIMARY KEY, url TEXT NOT NULL, credential_digest TEXT NOT NULL UNIQUE,
            coordinator_token TEXT NOT NULL, registered_at REAL NOT NULL
        );
        CREATE TABLE members (
            job_id TEXT NOT NULL, data_owner TEXT NOT NULL, refusal TEXT, PRIMARY KEY (job_id, data_owner)
        );
        INSERT INTO data_owners VALUES ('owner-a', 'http://127.0.0.1:5001', 'digest', 'token', 1.0);
        INSERT INTO members VALUES ('job-1', 'owner-a', NULL);
        """)
    app = create_app({"TESTING": True, "TEST_ONLY_SMALL_KEYS": True, "STATE_DIR": str(state), **TOKENS})
    with sqlite3.connect(state / "coordinator.sqlite3") as db:
        columns = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                   for table in ("data_owners", "members")}
    assert {"identity_key", "signed_at"} <= columns["data_owners"] and "member_key" in columns["members"]
    store = app.extensions["coordinator_store"]
    assert listed(app) == [{"name": "owner-a", "url": "http://127.0.0.1:5001", "columns": []}]
    assert store.identity_key("owner-a") is None
    # A job key from before job keys: the owner counts as not joined, and is joined again.
    assert store.member_keys("job-1") == {}

    assert register(app, "owner-a", "http://127.0.0.1:5002").status_code == 200
    assert store.identity_key("owner-a") == identity_of("owner-a").public_text
    assert_json_error(register(app, "owner-a", "http://evil:1", identity=identity_of("owner-a", 1),
                               signed_at=time.time() + 1), 403, "another identity key")
    # Opening it again changes nothing.
    again = create_app({"TESTING": True, "TEST_ONLY_SMALL_KEYS": True, "STATE_DIR": str(state), **TOKENS})
    assert again.extensions["coordinator_store"].identity_key("owner-a") == identity_of("owner-a").public_text


# -- jobs ----------------------------------------------------------------------------------------

def test_create_then_show_job(coordinator_app, small_key):
    client = as_model_creator(coordinator_app)
    spec = make_spec(small_key, "job-42")
    created = create_job(client, small_key, spec)
    assert created.get_json() == {"job_id": "job-42", "status": "running"}

    shown = client.get("/jobs/job-42")
    assert shown.status_code == 200
    record = shown.get_json()
    opened = record.pop("created_at")
    assert isinstance(opened, float) and record.pop("updated_at") == opened
    assert record == {"job_id": "job-42", "status": "running", "error": None,
                      "spec": spec.model_dump(mode="json"), "rounds": []}
    assert JobSpec.model_validate(shown.get_json()["spec"]) == spec


JOB_CASES = [
    *SPEC_CASES,
    pytest.param("spec.job_id", "has space", 400, "spec.job_id: String should match pattern", id="job-id-space"),
    pytest.param("spec.job_id", "../etc", 400, "spec.job_id: String should match pattern", id="job-id-path"),
    pytest.param("callback_url", MISSING, 400, "body.callback_url", id="callback-missing"),
    pytest.param("callback_url", 9090, 400, "body.callback_url", id="callback-int"),
    # Data owners' URLs must be http(s); the model creator's callback URL is held to the same rule.
    pytest.param("callback_url", "ftp://127.0.0.1:9090", 400, "body.callback_url", id="callback-ftp"),
    pytest.param("callback_url", "model-creator:9090", 400, "body.callback_url", id="callback-no-scheme"),
]


@pytest.mark.parametrize(("path", "value", "status", "fragment"), JOB_CASES)
def test_bad_job(coordinator_app, small_key, other_small_key, path, value, status, fragment):
    client = as_model_creator(coordinator_app)
    body = patched(job_body(small_key), path, value, small_key, other_small_key)
    assert_json_error(client.post("/jobs", json=body), status, fragment)
    assert_json_error(client.get("/jobs/job-1"), 404, "job job-1")


def test_duplicate_job_is_a_conflict_and_keeps_the_first(coordinator_app, small_key):
    client = as_model_creator(coordinator_app)
    create_job(client, small_key)
    before = client.get("/jobs/job-1").get_json()
    other = make_spec(small_key, features=["age", "bmi"])
    assert_json_error(client.post("/jobs", json=job_body(small_key, other)), 409, "job job-1 already exists")
    assert client.get("/jobs/job-1").get_json() == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/nope"),
        ("POST", "/jobs/nope/rounds"),
        ("POST", "/jobs/nope/finish"),
    ],
)
def test_unknown_job_is_a_404(coordinator_app, small_key, method, path):
    response = as_model_creator(coordinator_app).open(path, method=method, json={"status": "finished"})
    assert_json_error(response, 404, "job nope is unknown")


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        pytest.param({}, "body.status", id="status-missing"),
        pytest.param({"status": "done"}, "body.status: Input should be 'finished' or 'failed'", id="status-unknown"),
        pytest.param({"status": ["finished"]}, "body.status", id="status-list"),
    ],
)
def test_bad_finish(coordinator_app, small_key, payload, fragment):
    client = as_model_creator(coordinator_app)
    create_job(client, small_key)
    assert_json_error(client.post("/jobs/job-1/finish", json=payload), 400, fragment)
    assert client.get("/jobs/job-1").get_json()["status"] == "running"


def test_finished_job_takes_no_round(coordinator_app, small_key):
    client = as_model_creator(coordinator_app)
    spec = make_spec(small_key)
    create_job(client, small_key, spec)
    finished = client.post("/jobs/job-1/finish", json={"status": "finished"})
    assert finished.status_code == 200
    assert finished.get_json() == {"job_id": "job-1", "status": "finished"}
    assert_json_error(client.post("/jobs/job-1/rounds", json=weights_body(small_key, spec)), 409,
                      "job job-1 is finished")
    assert client.get("/jobs/job-1").get_json()["rounds"] == []


# -- rounds --------------------------------------------------------------------------------------

ROUND_START_CASES = [
    pytest.param("key_fingerprint", MISSING, 400, "body.key_fingerprint", id="fingerprint-missing"),
    pytest.param("key_fingerprint", 5, 400, "body.key_fingerprint", id="fingerprint-int"),
    pytest.param("key_fingerprint", lambda k, o: o.public_key.fingerprint, 422, "body.key_fingerprint",
                 id="fingerprint-of-other-key"),
    pytest.param("round", MISSING, 400, "body.round", id="round-missing"),
    pytest.param("round", True, 400, "body.round", id="round-bool"),
    pytest.param("round", "0", 400, "body.round", id="round-string"),
    pytest.param("round", -1, 400, "body.round", id="round-negative"),
    pytest.param("round", 0.5, 400, "body.round", id="round-float"),
    pytest.param("round", 1_000_001, 400, "body.round", id="round-too-big"),
    pytest.param("kind", "magic", 400, "body.kind", id="kind-unknown"),
    pytest.param("kind", ["gradient"], 400, "body.kind", id="kind-list"),
    pytest.param("kind", None, 400, "body.kind", id="kind-null"),
]


@pytest.mark.parametrize(("path", "value", "status", "fragment"), ROUND_START_CASES)
def test_bad_round_start(coordinator_app, small_key, other_small_key, path, value, status, fragment):
    client = as_model_creator(coordinator_app)
    spec = make_spec(small_key)
    create_job(client, small_key, spec)
    body = patched(weights_body(small_key, spec), path, value, small_key, other_small_key)
    assert_json_error(client.post("/jobs/job-1/rounds", json=body), status, fragment)
    assert client.get("/jobs/job-1").get_json()["rounds"] == []


def test_a_moments_round_in_a_job_of_gradients_is_refused(coordinator_app, small_key):
    client = as_model_creator(coordinator_app)
    spec = make_spec(small_key)
    create_job(client, small_key, spec)
    body = {"round": 0, "kind": "moments", "key_fingerprint": spec.key_fingerprint}
    assert_json_error(client.post("/jobs/job-1/rounds", json=body), 422,
                      "body.kind: a moments round has no place in a job of protocol 'gradients'")
    assert client.get("/jobs/job-1").get_json()["rounds"] == []


@pytest.mark.parametrize(("make", "status"), ciphertext_cases("body.encrypted_weights"))
def test_bad_encrypted_weights(coordinator_app, small_key, make, status):
    client = as_model_creator(coordinator_app)
    spec = make_spec(small_key)
    create_job(client, small_key, spec)
    body = weights_body(small_key, spec)
    body["encrypted_weights"], fragment = make(small_key, body["encrypted_weights"])
    assert_json_error(client.post("/jobs/job-1/rounds", json=body), status, fragment)
    shown = client.get("/jobs/job-1").get_json()
    assert shown["rounds"] == [] and shown["status"] == "running"


def round_app_with(tmp_path, **settings):
    return create_app({"TESTING": True, "TEST_ONLY_SMALL_KEYS": True, "STATE_DIR": str(tmp_path / "round-coordinator"), "ROUND_TIMEOUT": 30,
                       "ROUND_RETRIES": 0, "RETRY_DELAY": 0, "REQUEST_TIMEOUT": 5, **TOKENS, **settings})


@pytest.fixture
def round_app(tmp_path):
    """A coordinator whose round waits long enough for the test's contributions, and never retries."""
    return round_app_with(tmp_path)


class StubOwners:
    """What stub data owners (and the model creator's callback) answer, as typed as the real ones.

    An owner answers a join as a data owner does: with a fresh job key, signed by its identity key
    for the job and model creator key it was asked to join. ``join_answers`` and ``round_answers``
    replace an owner's answer to a join, or to a round request, with what a test wants.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.member_keys: dict[str, list[MemberKey]] = {}
        self.join_answers: dict = {}
        self.round_answers: dict = {}

    def latest(self, owner: str) -> MemberKey:
        """The job key ``owner`` answered its latest join with."""
        with self._lock:
            return self.member_keys[owner][-1]

    def member_list(self, *owners: str) -> list[dict]:
        """The member list a round request to ``owners`` carries: their latest keys, by name."""
        return [self.latest(owner).model_dump(mode="json", exclude_none=True) for owner in sorted(owners)]

    def __call__(self, method: str, path: str, body) -> tuple[int, dict]:
        owner, *_, job_id, last = path.rstrip("/").split("/")[1:]
        if method == "PUT":
            if owner in self.join_answers:
                return self.join_answers[owner](last, body)
            member = MemberKey.signed(owner, identity_of(owner), JobKeyPair.generate(), last,
                                      body["public_key"]["fingerprint"])
            with self._lock:
                self.member_keys.setdefault(owner, []).append(member)
            return 200, {"job_id": last, "status": "joined", "member": member.model_dump(mode="json")}
        if method == "DELETE":
            return 200, {"job_id": last, "status": "left"}
        if last == "rounds":
            answer = self.round_answers.get(owner)
            replaced = answer(body) if answer else None
            return replaced or (202, {"job_id": job_id, "round": body["round"], "status": "accepted"})
        return 202, {"status": "accepted"}


def is_round_request(attempt: int | None = None):
    def matches(recorded) -> bool:
        return (recorded.method == "POST" and recorded.path.endswith("/jobs/job-1/rounds")
                and (attempt is None or recorded.body["attempt"] == attempt))
    return matches


def asked_owner(recorded) -> str:
    return recorded.path.split("/")[1]


class OpenRound:
    """A round in flight: the stub data owners ``owners`` were asked, none answered yet.

    ``prepare(answers)`` may change the stub owners' answers before anything is sent.
    """

    def __init__(self, app, stub_peer, key, owners=("owner-a", "owner-b"), min_data_owners=1, prepare=None):
        self.app, self.key, self.owners = app, key, tuple(owners)
        self.answers = StubOwners()
        if prepare:
            prepare(self.answers)
        self.stub = stub_peer(self.answers)
        self.client = as_model_creator(app)
        self.spec = make_spec(key, min_data_owners=min_data_owners)
        self.issued = {}
        for owner in self.owners:
            enrolled = register(app, owner, f"{self.stub.url}/{owner}")
            assert enrolled.status_code == 201
            self.issued[owner] = enrolled.get_json()
        create_job(self.client, key, self.spec, callback_url=f"{self.stub.url}/model-creator")
        self.weights = weights_body(key, self.spec)
        accepted = self.client.post("/jobs/job-1/rounds", json=self.weights)
        assert accepted.status_code == 202, accepted.get_json()
        assert accepted.get_json() == {"job_id": "job-1", "round": 0, "status": "started"}

    def asked(self, attempt: int = 1, count: int | None = None):
        """The round requests of ``attempt`` (``count`` of them, by default one per owner)."""
        return self.stub.wait_for(is_round_request(attempt), count=len(self.owners) if count is None else count)

    def owner(self, name: str):
        """The coordinator as called by the enrolled owner ``name``."""
        return client_with(self.app, self.issued[name]["credential"])

    def contribute(self, owner: str, **overrides):
        body = {**contribution_body(self.key, self.spec, owner), **overrides}
        return self.owner(owner).post("/jobs/job-1/rounds/0/contributions", json=body)

    def refuse(self, owner: str, attempt: int = 1, **refusal):
        body = {"data_owner": owner, "attempt": attempt, **refusal}
        return self.owner(owner).post("/jobs/job-1/rounds/0/refusals", json=body)

    def aggregate(self):
        (delivered,) = self.stub.wait_for(lambda r: r.path == "/model-creator/jobs/job-1/aggregates")
        return delivered.body

    def record(self):
        (record,) = self.client.get("/jobs/job-1").get_json()["rounds"]
        return record


@pytest.fixture
def open_round(round_app, stub_peer, small_key):
    round_ = OpenRound(round_app, stub_peer, small_key)
    round_.asked()
    return round_


def test_round_is_fanned_out_collected_and_aggregated(open_round, small_key):
    stub, spec = open_round.stub, open_round.spec
    joins = stub.wait_for(lambda r: r.method == "PUT", count=2)
    assert sorted(r.path for r in joins) == ["/owner-a/jobs/job-1", "/owner-b/jobs/job-1"]
    for join in joins:
        assert join.body == {"spec": spec.model_dump(mode="json", exclude_none=True), "public_key": small_key.public_key.to_json()}
        owner = join.path.split("/")[1]
        assert join.authorization == f"Bearer {open_round.issued[owner]['coordinator_token']}"
    # Every member is sent the same request: the whole member set, with each member's signed job key.
    expected = {"round": 0, "attempt": 1, "key_fingerprint": small_key.public_key.fingerprint,
                "encrypted_weights": open_round.weights["encrypted_weights"],
                "members": open_round.answers.member_list("owner-a", "owner-b")}
    asked = open_round.asked()
    for request in asked:
        assert {name: request.body.get(name) for name in expected} == expected
        owner = asked_owner(request)
        assert request.authorization == f"Bearer {open_round.issued[owner]['coordinator_token']}"
    members = [MemberKey.model_validate(member) for member in asked[0].body["members"]]
    assert [member.name for member in members] == ["owner-a", "owner-b"]
    for member in members:
        assert member.identity_key == identity_of(member.name).public_text
        member.verify("job-1", small_key.public_key.fingerprint)

    count = spec.reply_ciphertexts()
    first = open_round.contribute("owner-a", ciphertexts=encrypted(small_key, list(range(1, count + 1))))
    assert first.status_code == 202 and first.get_json() == {"status": "accepted"}
    second = open_round.contribute("owner-b", ciphertexts=encrypted(small_key, [100] * count))
    assert second.status_code == 202

    aggregate = open_round.aggregate()
    (delivered,) = stub.wait_for(lambda r: r.path.endswith("/aggregates"))
    assert delivered.authorization == f"Bearer {open_round.app.extensions['settings'].coordinator_token}"
    assert aggregate["round"] == 0
    assert aggregate.get("kind", "gradient") == "gradient"
    assert aggregate["contributors"] == ["owner-a", "owner-b"]
    assert aggregate["failures"] == {}
    assert aggregate["key_fingerprint"] == small_key.public_key.fingerprint
    summed = decode_ciphertexts(aggregate["ciphertexts"], small_key.public_key, "aggregate", count)
    assert [int(small_key.raw_decrypt(c)) for c in summed] == [i + 100 for i in range(1, count + 1)]

    rounds = open_round.client.get("/jobs/job-1").get_json()["rounds"]
    assert len(rounds) == 1
    assert rounds[0]["round"] == 0 and rounds[0]["status"] == "aggregated"
    assert rounds[0]["contributors"] == ["owner-a", "owner-b"] and rounds[0]["failures"] == {}


def operator_of(app):
    """The coordinator, called by the federation's operator with the token kept in its state dir."""
    return client_with(app, (app.extensions["settings"].state_dir / "operator_token").read_text().strip())


def test_the_operator_sees_each_rounds_member_set_timings_and_sizes(open_round, small_key):
    count = open_round.spec.reply_ciphertexts()
    bodies = {name: {**contribution_body(small_key, open_round.spec, name),
                     "ciphertexts": encrypted(small_key, [index + 1] * count)}
              for index, name in enumerate(("owner-a", "owner-b"))}
    sizes = {}
    for name, body in bodies.items():
        raw = json.dumps(body).encode()
        sizes[name] = len(raw)
        answered = open_round.owner(name).post("/jobs/job-1/rounds/0/contributions", data=raw,
                                               content_type="application/json")
        assert answered.status_code == 202, answered.get_data(as_text=True)
    delivered = open_round.aggregate()

    shown = operator_of(open_round.app).get("/jobs/job-1")
    assert shown.status_code == 200, shown.get_data(as_text=True)
    (summary,) = shown.get_json()["rounds"]
    assert summary["members"] == ["owner-a", "owner-b"]
    assert summary["contribution_bytes"] == sizes
    # The aggregate's size is that of the body the model creator received (sent as compact JSON by requests).
    assert summary["aggregate_bytes"] == len(json.dumps(delivered).encode())
    assert summary["started_at"] <= summary["finished_at"] <= time.time()
    (attempt,) = summary["attempt_log"]
    assert attempt["attempt"] == 1 and attempt["members"] == ["owner-a", "owner-b"]
    assert attempt["contribution_bytes"] == sizes
    assert summary["started_at"] <= attempt["started_at"] <= attempt["finished_at"] <= summary["finished_at"]
    # The model creator sees the same record.
    assert open_round.client.get("/jobs/job-1").get_json()["rounds"] == [summary]


def test_the_jobs_are_listed_newest_first_for_the_operator_and_the_model_creator(coordinator_app, small_key):
    client = as_model_creator(coordinator_app)
    for job_id in ("job-old", "job-mid", "job-new"):
        create_job(client, small_key, make_spec(small_key, job_id))
        time.sleep(0.01)
    client.post("/jobs/job-mid/finish", json={"status": "failed", "error": "stopped by its user"})
    for caller in (client, operator_of(coordinator_app)):
        listed = caller.get("/jobs")
        assert listed.status_code == 200, listed.get_data(as_text=True)
        jobs = listed.get_json()["jobs"]
        assert [job["job_id"] for job in jobs] == ["job-new", "job-mid", "job-old"]
        spec = make_spec(small_key, "job-new")
        assert jobs[0] == {**jobs[0], "status": "running", "error": None, "model": spec.model,
                           "features": list(spec.features), "label": spec.label, "rounds": 0,
                           "last_round_status": None, "min_data_owners": spec.min_data_owners}
        assert jobs[1]["status"] == "failed" and jobs[1]["error"] == "stopped by its user"
        assert [job["job_id"] for job in caller.get("/jobs?limit=2").get_json()["jobs"]] == ["job-new", "job-mid"]
    assert operator_of(coordinator_app).get("/jobs/job-old").status_code == 200
    assert operator_of(coordinator_app).get("/data_owners").status_code == 200


@pytest.mark.parametrize("query, fragment", [("limit=0", "query.limit"), ("limit=1001", "query.limit"),
                                             ("limit=many", "query.limit")])
def test_a_bad_job_list_query_is_a_400_naming_it(coordinator_app, query, fragment):
    assert_json_error(operator_of(coordinator_app).get(f"/jobs?{query}"), 400, fragment)


def test_the_operator_views_are_for_the_operator_and_the_model_creator_only(coordinator_app):
    owner = as_owner(coordinator_app, "owner-a")
    for path in ("/jobs", "/jobs/job-1", "/data_owners"):
        assert_json_error(coordinator_app.test_client().get(path), 401, "missing or unknown credentials")
        assert_json_error(owner.get(path), 403, f"a data owner may not call GET {path}")
        assert_json_error(as_enrolling_owner(coordinator_app).get(path), 403, "may not call")


def test_an_offline_owner_stays_offline_across_a_restart(coordinator_app):
    as_owner(coordinator_app, "owner-a")
    as_owner(coordinator_app, "owner-b", "http://127.0.0.1:5002")
    coordinator_app.extensions["round_runner"].liveness.mark_offline("owner-b", "http://127.0.0.1:5002",
                                                                    "missed round 3 of job job-1")
    before = {entry["name"]: entry for entry in operator_of(coordinator_app).get("/data_owners").get_json()["data_owners"]}
    assert before["owner-b"]["online"] is False and before["owner-b"]["offline_reason"] == "missed round 3 of job job-1"
    assert before["owner-a"]["online"] is True and before["owner-a"]["offline_since"] is None

    restarted = create_app(restart_config(coordinator_app))
    after = {entry["name"]: entry for entry in operator_of(restarted).get("/data_owners").get_json()["data_owners"]}
    assert after["owner-b"]["online"] is False
    assert after["owner-b"]["offline_reason"] == before["owner-b"]["offline_reason"]
    assert after["owner-b"]["offline_since"] == before["owner-b"]["offline_since"]
    assert restarted.extensions["round_runner"].liveness.offline() == {"owner-b": "missed round 3 of job job-1"}
    # Back online (it enrolled again): forgotten as offline for good, also by the next restart.
    as_owner(restarted, "owner-b", "http://127.0.0.1:5002")
    again = create_app(restart_config(coordinator_app))
    assert again.extensions["round_runner"].liveness.offline() == {}


def test_joined_owners_job_keys_outlive_a_restart(open_round, small_key):
    store = open_round.app.extensions["coordinator_store"]
    keys = {owner: open_round.answers.latest(owner) for owner in open_round.owners}
    assert store.member_keys("job-1") == keys
    restarted = create_app(restart_config(open_round.app, "ROUND_TIMEOUT", "ROUND_RETRIES", "TEST_ONLY_SMALL_KEYS"))
    assert restarted.extensions["coordinator_store"].member_keys("job-1") == keys
    for owner in open_round.owners:
        assert open_round.contribute(owner).status_code == 202
    assert open_round.aggregate()["contributors"] == ["owner-a", "owner-b"]


# -- membership: every member, or the attempt is over --------------------------------------------

@pytest.fixture
def retry_app(tmp_path):
    """A coordinator that tries a round three times, waiting at most 2 s for an attempt's replies."""
    return round_app_with(tmp_path, ROUND_TIMEOUT=2, ROUND_RETRIES=2)


THREE = ("owner-a", "owner-b", "owner-c")


def test_an_attempt_a_member_missed_is_not_aggregated_and_the_next_goes_to_the_others(retry_app, stub_peer,
                                                                                         small_key):
    round_ = OpenRound(retry_app, stub_peer, small_key, owners=THREE)
    first = round_.asked(attempt=1)
    assert all(request.body["members"] == round_.answers.member_list(*THREE) for request in first)
    count = round_.spec.reply_ciphertexts()
    for owner in ("owner-a", "owner-b"):
        assert round_.contribute(owner, ciphertexts=encrypted(small_key, [1000] * count)).status_code == 202
    # owner-c does not reply: after the timeout the attempt is over, and nothing was aggregated.
    second = round_.asked(attempt=2, count=2)
    assert not [r for r in round_.stub.requests if r.path.endswith("/aggregates")]
    assert sorted(asked_owner(request) for request in second) == ["owner-a", "owner-b"]
    for request in second:
        assert request.body["members"] == round_.answers.member_list("owner-a", "owner-b")
    assert_json_error(round_.contribute("owner-c"), 409, "job job-1 round 0 attempt 1 is not open")
    assert_json_error(round_.contribute("owner-c", attempt=2), 409, "'owner-c' was not asked for round 0")

    for owner, value in (("owner-a", 1), ("owner-b", 2)):
        assert round_.contribute(owner, attempt=2, ciphertexts=encrypted(small_key, [value] * count)).status_code == 202
    aggregate = round_.aggregate()
    assert aggregate["contributors"] == ["owner-a", "owner-b"]
    assert aggregate["failures"] == {"owner-c": "no reply within 2 s"}
    summed = decode_ciphertexts(aggregate["ciphertexts"], small_key.public_key, "aggregate", count)
    assert [int(small_key.raw_decrypt(c)) for c in summed] == [3] * count
    record = round_.record()
    assert record["status"] == "aggregated" and record["attempts"] == 2
    assert record["contributors"] == ["owner-a", "owner-b"]
    assert len([r for r in round_.stub.requests if is_round_request(3)(r)]) == 0


@pytest.mark.parametrize(("refusal", "reason"), [
    pytest.param({"code": "policy:differencing"}, "refused: policy:differencing", id="policy"),
    pytest.param({"code": "missing_column", "column": "bmi"}, "refused: missing_column (column 'bmi')",
                 id="with-column"),
])
def test_a_refusal_ends_the_attempt_and_is_recorded_as_its_code(retry_app, stub_peer, small_key, refusal, reason):
    round_ = OpenRound(retry_app, stub_peer, small_key, owners=THREE)
    round_.asked(attempt=1)
    assert round_.refuse("owner-b", **refusal).status_code == 202
    for owner in ("owner-a", "owner-c"):
        assert round_.contribute(owner).status_code == 202
    second = round_.asked(attempt=2, count=2)
    assert sorted(asked_owner(request) for request in second) == ["owner-a", "owner-c"]
    for owner in ("owner-a", "owner-c"):
        assert round_.contribute(owner, attempt=2).status_code == 202
    aggregate = round_.aggregate()
    assert aggregate["contributors"] == ["owner-a", "owner-c"]
    assert aggregate["failures"] == {"owner-b": reason}


@pytest.mark.parametrize(("refusal", "status", "fragment"), [
    pytest.param({"code": "out of memory"}, 400, "body.code", id="free-text-code"),
    pytest.param({"code": "bad_value", "error": "row 17: value 3.2"}, 400, "body.error", id="free-text-detail"),
    pytest.param({"code": "bad_value", "column": "x" * 201}, 400, "body.column", id="column-too-long"),
    pytest.param({"code": "bad_value", "column": 3}, 400, "body.column", id="column-int"),
    pytest.param({}, 400, "body.code", id="code-missing"),
])
def test_a_refusal_carries_a_code_only(open_round, refusal, status, fragment):
    assert_json_error(open_round.refuse("owner-a", **refusal), status, fragment)
    for owner in open_round.owners:
        assert open_round.contribute(owner).status_code == 202
    assert open_round.aggregate()["contributors"] == ["owner-a", "owner-b"]


def test_too_few_members_left_fails_the_round_without_asking(retry_app, stub_peer, small_key):
    round_ = OpenRound(retry_app, stub_peer, small_key, min_data_owners=2)
    round_.asked(attempt=1)
    assert round_.refuse("owner-b", code="policy:min_peers").status_code == 202
    assert round_.contribute("owner-a").status_code == 202
    (failure,) = round_.stub.wait_for(lambda r: r.path == "/model-creator/jobs/job-1/failure")
    assert "round 0: not aggregated in 3 attempt(s)" in failure.body["error"]
    assert "1 member(s), fewer than the 2 required" in failure.body["error"]
    assert "owner-b: refused: policy:min_peers" in failure.body["error"]
    # Attempts 2 and 3 had a member set of one, smaller than the quorum: nobody was asked.
    assert [r.body["attempt"] for r in round_.stub.requests if is_round_request()(r)] == [1, 1]
    record = round_.record()
    assert record["status"] == "failed" and record["attempts"] == 3 and record["contributors"] == []


def test_a_member_that_forgot_the_job_is_joined_again_and_takes_part_with_its_new_key(retry_app, stub_peer,
                                                                                        small_key):
    forgot = threading.Event()

    def forget_once(body):
        if forgot.is_set():
            return None
        forgot.set()
        return 404, {"error": "job job-1 is unknown to the data owner", "type": "NotFound"}

    round_ = OpenRound(retry_app, stub_peer, small_key, owners=THREE,
                       prepare=lambda answers: answers.round_answers.update({"owner-c": forget_once}))
    round_.asked(attempt=1)
    old_key = round_.answers.latest("owner-c")
    for owner in ("owner-a", "owner-b"):
        assert round_.contribute(owner).status_code == 202
    second = round_.asked(attempt=2)
    joins = [r for r in round_.stub.requests if r.method == "PUT" and r.path == "/owner-c/jobs/job-1"]
    assert len(joins) == 2
    new_key = round_.answers.latest("owner-c")
    assert new_key != old_key
    for request in second:
        assert request.body["members"] == round_.answers.member_list(*THREE)
    assert new_key.model_dump(mode="json", exclude_none=True) in second[0].body["members"]
    for owner in THREE:
        assert round_.contribute(owner, attempt=2).status_code == 202
    aggregate = round_.aggregate()
    assert aggregate["contributors"] == list(THREE) and aggregate["failures"] == {}
    assert round_.app.extensions["coordinator_store"].member_keys("job-1")["owner-c"] == new_key


def join_answer(make):
    """A join answer of owner-b built by ``make(job_id, fingerprint)`` → member key JSON (or a whole answer)."""
    def answer(job_id, body):
        made = make(job_id, body["public_key"]["fingerprint"])
        if isinstance(made, tuple):
            return made
        return 200, {"job_id": job_id, "status": "joined", "member": made}
    return answer


def member_json(name="owner-b", identity=None, job_id="job-1", fingerprint=None, **overrides):
    def make(asked_job_id, asked_fingerprint):
        member = MemberKey.signed(name, identity or identity_of("owner-b"), JobKeyPair.generate(), job_id,
                                  fingerprint or asked_fingerprint)
        return {**member.model_dump(mode="json"), **overrides}
    return make


BAD_JOINS = [
    pytest.param(member_json(job_id="job-2"), "member owner-b: the signature is not valid", id="key-for-another-job"),
    pytest.param(member_json(fingerprint="ab" * 32), "member owner-b: the signature is not valid",
                 id="key-for-another-model-creator-key"),
    pytest.param(member_json(name="owner-a", identity=identity_of("owner-a")),
                 "the job key offered names data owner 'owner-a', not 'owner-b'", id="key-of-another-name"),
    pytest.param(member_json(identity=identity_of("owner-b", 1)),
                 "not under the identity key the owner enrolled with", id="key-of-another-identity"),
    pytest.param(member_json(signature="A" * 86 + "=="), "member owner-b: the signature is not valid",
                 id="badly-signed"),
    pytest.param(member_json(job_key=JobKeyPair.generate().public_text), "member owner-b: the signature is not valid",
                 id="job-key-swapped"),
    pytest.param(lambda job_id, fingerprint: (200, {"job_id": job_id, "status": "joined"}), "unexpected answer",
                 id="no-key"),
    pytest.param(lambda job_id, fingerprint: (200, {"job_id": "job-9", "status": "joined",
                                                    "member": member_json()(job_id, fingerprint)}),
                 "the join answer is for job job-9", id="answer-for-another-job"),
]


@pytest.mark.parametrize(("make", "fragment"), BAD_JOINS)
def test_a_join_answered_with_a_job_key_not_the_owners_own_is_that_owners_failure(round_app, stub_peer, small_key,
                                                                                    make, fragment):
    round_ = OpenRound(round_app, stub_peer, small_key,
                       prepare=lambda answers: answers.join_answers.update({"owner-b": join_answer(make)}))
    (request,) = round_.asked(count=1)
    assert asked_owner(request) == "owner-a"
    assert request.body["members"] == round_.answers.member_list("owner-a")
    assert round_.contribute("owner-a").status_code == 202
    aggregate = round_.aggregate()
    assert aggregate["contributors"] == ["owner-a"]
    assert set(aggregate["failures"]) == {"owner-b"}
    assert aggregate["failures"]["owner-b"].startswith("could not join: ")
    assert fragment in aggregate["failures"]["owner-b"]
    assert "owner-b" not in round_.app.extensions["coordinator_store"].member_keys("job-1")
    assert not [r for r in round_.stub.requests if is_round_request()(r) and asked_owner(r) == "owner-b"]


def test_late_contribution_is_a_conflict_and_an_aggregated_round_is_delivered_again(open_round):
    """Asking again for a round that was aggregated (a restarted model creator does) re-sends the
    stored aggregate; it never runs the round again or folds a late reply into it."""
    for owner in open_round.owners:
        assert open_round.contribute(owner).status_code == 202
    first = open_round.aggregate()
    rounds = open_round.client.get("/jobs/job-1").get_json()["rounds"]
    assert_json_error(open_round.contribute("owner-a"), 409, "job job-1 round 0 attempt 1 is not open")

    again = open_round.client.post("/jobs/job-1/rounds", json=open_round.weights)
    assert again.status_code == 202
    assert again.get_json() == {"job_id": "job-1", "round": 0, "status": "delivering again"}
    delivered = open_round.stub.wait_for(lambda r: r.path.endswith("/aggregates"), count=2)
    assert delivered[1].body == first
    assert open_round.client.get("/jobs/job-1").get_json()["rounds"] == rounds
    assert len([r for r in open_round.stub.requests if r.path.endswith("/jobs/job-1/rounds")]) == 2


def test_round_asked_for_again_while_running_runs_once(open_round):
    again = open_round.client.post("/jobs/job-1/rounds", json=open_round.weights)
    assert again.status_code == 202
    assert again.get_json() == {"job_id": "job-1", "round": 0, "status": "in progress"}
    statistics = {"round": 0, "kind": "statistics", "key_fingerprint": open_round.weights["key_fingerprint"]}
    assert_json_error(open_round.client.post("/jobs/job-1/rounds", json=statistics),
                      409, "round 0 of job job-1 is a gradient round")
    for owner in open_round.owners:
        assert open_round.contribute(owner).status_code == 202
    assert open_round.aggregate()["contributors"] == ["owner-a", "owner-b"]
    assert len([r for r in open_round.stub.requests if r.path.endswith("/jobs/job-1/rounds")]) == 2
    (record,) = open_round.client.get("/jobs/job-1").get_json()["rounds"]
    assert record["status"] == "aggregated" and record["attempts"] == 1


def test_round_of_a_failed_job_is_a_conflict(round_app, stub_peer, small_key):
    """No data owner is enrolled: the only attempt fails, the job fails, the model creator is told."""
    model_creator = stub_peer(StubOwners())
    client = as_model_creator(round_app)
    spec = make_spec(small_key)
    create_job(client, small_key, spec, callback_url=f"{model_creator.url}/mc")
    weights = weights_body(small_key, spec)
    assert client.post("/jobs/job-1/rounds", json=weights).status_code == 202
    (failure,) = model_creator.wait_for(lambda r: r.path == "/mc/jobs/job-1/failure")
    assert "round 0" in failure.body["error"] and "no data owner" in failure.body["error"]
    assert_json_error(client.post("/jobs/job-1/rounds", json=weights), 409, "job job-1 is failed")
    assert_json_error(client.post("/jobs/job-1/rounds", json={**weights, "round": 1}), 409, "job job-1 is failed")
    shown = client.get("/jobs/job-1").get_json()
    assert shown["status"] == "failed" and [r["status"] for r in shown["rounds"]] == ["failed"]


CONTRIBUTION_CASES = [
    pytest.param({"data_owner": MISSING}, 400, "body.data_owner", id="owner-missing"),
    pytest.param({"data_owner": 3}, 400, "body.data_owner", id="owner-int"),
    pytest.param({"attempt": MISSING}, 400, "body.attempt", id="attempt-missing"),
    pytest.param({"attempt": 0}, 400, "body.attempt", id="attempt-zero"),
    pytest.param({"attempt": True}, 400, "body.attempt", id="attempt-bool"),
    pytest.param({"attempt": 2}, 409, "job job-1 round 0 attempt 2 is not open", id="attempt-not-open"),
    pytest.param({"key_fingerprint": MISSING}, 400, "body.key_fingerprint", id="fingerprint-missing"),
    pytest.param({"key_fingerprint": "ab" * 32}, 422, "body.key_fingerprint", id="fingerprint-wrong"),
    pytest.param({"data_owner": "owner-b"}, 403, "data owner 'owner-a' may not speak for 'owner-b'",
                 id="as-another-owner"),
    pytest.param({"data_owner": "mallory"}, 403, "data owner 'owner-a' may not speak for 'mallory'",
                 id="as-unknown-owner"),
]


@pytest.mark.parametrize(("overrides", "status", "fragment"), CONTRIBUTION_CASES)
def test_bad_contribution_leaves_the_round_intact(open_round, overrides, status, fragment):
    body = contribution_body(open_round.key, open_round.spec, "owner-a")
    for name, value in overrides.items():
        body = patched(body, name, value, open_round.key, open_round.key)
    response = open_round.owner("owner-a").post("/jobs/job-1/rounds/0/contributions", json=body)
    assert_json_error(response, status, fragment)
    for owner in open_round.owners:
        assert open_round.contribute(owner).status_code == 202
    assert open_round.aggregate()["contributors"] == ["owner-a", "owner-b"]


@pytest.mark.parametrize(("make", "status"), ciphertext_cases("body.ciphertexts"))
def test_bad_contribution_ciphertexts(open_round, make, status):
    body = contribution_body(open_round.key, open_round.spec, "owner-a")
    body["ciphertexts"], fragment = make(open_round.key, body["ciphertexts"])
    response = open_round.owner("owner-a").post("/jobs/job-1/rounds/0/contributions", json=body)
    assert_json_error(response, status, fragment)
    for owner in open_round.owners:
        assert open_round.contribute(owner).status_code == 202
    assert open_round.aggregate()["contributors"] == ["owner-a", "owner-b"]


def test_owner_enrolled_after_the_round_started_was_not_asked(open_round):
    latecomer = as_owner(open_round.app, "owner-c")
    body = contribution_body(open_round.key, open_round.spec, "owner-c")
    assert_json_error(latecomer.post("/jobs/job-1/rounds/0/contributions", json=body), 409,
                      "data owner 'owner-c' was not asked for round 0")
    for owner in open_round.owners:
        assert open_round.contribute(owner).status_code == 202
    assert open_round.aggregate()["contributors"] == ["owner-a", "owner-b"]


def test_contribution_with_other_credentials_is_refused(open_round):
    body = contribution_body(open_round.key, open_round.spec, "owner-a")
    path = "/jobs/job-1/rounds/0/contributions"
    assert_json_error(open_round.app.test_client().post(path, json=body), 401, "credentials")
    assert_json_error(client_with(open_round.app, "forged").post(path, json=body), 401, "credentials")
    assert_json_error(open_round.client.post(path, json=body), 403, "may not call")
    for owner in open_round.owners:
        assert open_round.contribute(owner).status_code == 202
    assert open_round.aggregate()["contributors"] == ["owner-a", "owner-b"]


def test_second_reply_from_one_owner_is_a_conflict(open_round):
    assert open_round.contribute("owner-a").status_code == 202
    assert_json_error(open_round.contribute("owner-a"), 409, "data owner 'owner-a' already replied to round 0")
    assert open_round.contribute("owner-b").status_code == 202
    assert open_round.aggregate()["contributors"] == ["owner-a", "owner-b"]


@pytest.mark.parametrize(
    ("round_path", "fragment"),
    [
        pytest.param("/jobs/job-1/rounds/0/contributions", "job job-1 round 0 attempt 1 is not open",
                     id="no-round-yet"),
        pytest.param("/jobs/job-1/rounds/7/contributions", "job job-1 round 7 attempt 1 is not open",
                     id="unknown-round"),
        pytest.param("/jobs/nope/rounds/0/contributions", "job nope round 0 attempt 1 is not open", id="unknown-job"),
    ],
)
def test_contribution_to_no_open_round_is_a_conflict(coordinator_app, small_key, round_path, fragment):
    spec = make_spec(small_key)
    create_job(as_model_creator(coordinator_app), small_key, spec)
    owner = as_owner(coordinator_app, "owner-a")
    response = owner.post(round_path, json=contribution_body(small_key, spec, "owner-a"))
    assert_json_error(response, 409, fragment)


# -- nothing stored changes ----------------------------------------------------------------------

def test_bad_requests_change_nothing_stored(coordinator_app, small_key, other_small_key):
    client = as_model_creator(coordinator_app)
    enrol = as_enrolling_owner(coordinator_app)
    owner = as_owner(coordinator_app, "owner-a")
    assert register(coordinator_app, "owner-b", "http://127.0.0.1:5002").status_code == 201
    spec = make_spec(small_key)
    create_job(client, small_key, spec)
    owners_before = client.get("/data_owners").get_json()
    job_before = client.get("/jobs/job-1").get_json()

    statuses = []
    for case in REGISTRATION_CASES:
        overrides, _ = case.values
        statuses.append(enrol.post("/data_owners", json=registration_payload(overrides)).status_code)
    for overrides in ({"name": "owner-a"}, {"name": "owner-a", "url": "ftp://elsewhere"}):
        statuses.append(enrol.post("/data_owners", json=registration_payload(overrides)).status_code)
    # Signed, but by another key than owner-a's, or a replay of its enrolment, or forged.
    later = time.time() + 1
    statuses.append(register(coordinator_app, "owner-a", "http://evil:1", identity_of("owner-a", 1), later).status_code)
    statuses.append(register(coordinator_app, "owner-a", "http://evil:1", signed_at=time.time() - 3600).status_code)
    forged = {**enrolment("owner-a", "http://127.0.0.1:5001", signed_at=later), "url": "http://evil:1"}
    statuses.append(enrol.post("/data_owners", json=forged).status_code)
    # Right body, wrong caller: no credentials, a forged one, another party's.
    for caller in (coordinator_app.test_client(), client_with(coordinator_app, "forged"), client, owner):
        body = enrolment("owner-a", "http://evil:1", signed_at=later)
        statuses.append(caller.post("/data_owners", json=body).status_code)
    for caller in (coordinator_app.test_client(), enrol, owner):
        statuses.append(caller.post("/jobs", json=job_body(small_key, make_spec(small_key, "job-2"))).status_code)
        statuses.append(caller.post("/jobs/job-1/rounds", json=weights_body(small_key, spec)).status_code)
        statuses.append(caller.post("/jobs/job-1/finish", json={"status": "failed"}).status_code)
    for case in JOB_CASES:
        path, value, _, _ = case.values
        body = patched(job_body(small_key), path, value, small_key, other_small_key)
        statuses.append(client.post("/jobs", json=body).status_code)
    changed_spec = make_spec(small_key, features=["age"], min_data_owners=2)
    statuses.append(client.post("/jobs", json=job_body(small_key, changed_spec)).status_code)
    for case in ROUND_START_CASES:
        path, value, _, _ = case.values
        body = patched(weights_body(small_key, spec), path, value, small_key, other_small_key)
        statuses.append(client.post("/jobs/job-1/rounds", json=body).status_code)
    for case in ciphertext_cases("body.encrypted_weights"):
        make, _ = case.values
        body = weights_body(small_key, spec)
        body["encrypted_weights"], _ = make(small_key, body["encrypted_weights"])
        statuses.append(client.post("/jobs/job-1/rounds", json=body).status_code)
    for caller in (owner, client, enrol):
        statuses.append(caller.post("/jobs/job-1/rounds/0/contributions",
                                    json=contribution_body(small_key, spec, "owner-a")).status_code)
    for finish in ({}, {"status": "done"}, {"status": True}, {"status": "finished" * 5}):
        statuses.append(client.post("/jobs/job-1/finish", json=finish).status_code)
    for raw in (b"{", b"[]", b"null"):
        for path in ("/jobs", "/jobs/job-1/rounds", "/jobs/job-1/finish"):
            statuses.append(client.post(path, data=raw, content_type="application/json").status_code)
        statuses.append(enrol.post("/data_owners", data=raw, content_type="application/json").status_code)
        statuses.append(owner.post("/jobs/job-1/rounds/0/contributions", data=raw,
                                   content_type="application/json").status_code)

    assert client.get("/data_owners").get_json() == owners_before
    assert client.get("/jobs/job-1").get_json() == job_before
    assert_json_error(client.get("/jobs/job-2"), 404, "job job-2")
    assert all(400 <= status < 500 for status in statuses), statuses
