"""The coordinator's API: the data-owner registry, jobs, rounds and contributions.

Every call carries the credential of the party that makes it: the enrolment secret to enrol, the
model creator's token for jobs and rounds, an owner's own credential (issued at enrolment) for
its contributions.

Rounds run for real: a stub peer on a loopback port plays the data owners and the model
creator's callback, so a round is fanned out, collected and aggregated by the coordinator's own
code; the test sends the data owners' contributions.
"""

from __future__ import annotations

import pytest
from api_support import (
    MISSING,
    SPEC_CASES,
    TOKENS,
    UNREACHABLE,
    as_enrolling_owner,
    as_model_creator,
    assert_json_error,
    ciphertext_cases,
    client_with,
    encrypted,
    job_body,
    make_spec,
    patched,
)

from common.protocol.spec import JobSpec
from common.protocol.wire import decode_ciphertexts
from coordinator import create_app


def register(app, name: str, url: str):
    """Enrol a data owner with the enrolment secret."""
    return as_enrolling_owner(app).post("/data_owners", json={"name": name, "url": url})


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

    again = register(coordinator_app, "owner-a", "http://127.0.0.1:5003")
    assert again.status_code == 200
    reissued = again.get_json()
    assert reissued["name"] == "owner-a"
    assert reissued["credential"] != issued["credential"]
    assert reissued["coordinator_token"] != issued["coordinator_token"]

    listed = client.get("/data_owners")
    assert listed.status_code == 200
    assert listed.get_json() == {"data_owners": [
        {"name": "owner-a", "url": "http://127.0.0.1:5003"},
        {"name": "owner-b", "url": "https://owner-b.example:5002"},
    ]}
    assert issued["credential"] not in listed.get_data(as_text=True)


def test_reenrolment_replaces_the_old_credential(coordinator_app, small_key):
    spec = make_spec(small_key)
    create_job(as_model_creator(coordinator_app), small_key, spec)
    old = as_owner(coordinator_app, "owner-a")
    new = as_owner(coordinator_app, "owner-a")
    body = contribution_body(small_key, spec, "owner-a")
    assert_json_error(old.post("/jobs/job-1/rounds/0/contributions", json=body), 401, "credentials")
    assert_json_error(new.post("/jobs/job-1/rounds/0/contributions", json=body), 409, "is not open")


REGISTRATION_CASES = [
    pytest.param({}, "body.name", id="empty-object"),
    pytest.param({"url": "http://127.0.0.1:5000"}, "body.name", id="missing-name"),
    pytest.param({"name": 5, "url": "http://127.0.0.1:5000"}, "body.name", id="name-int"),
    pytest.param({"name": True, "url": "http://127.0.0.1:5000"}, "body.name", id="name-bool"),
    pytest.param({"name": "", "url": "http://127.0.0.1:5000"}, "body.name", id="name-empty"),
    pytest.param({"name": "x" * 65, "url": "http://127.0.0.1:5000"}, "body.name", id="name-too-long"),
    pytest.param({"name": ["owner"], "url": "http://127.0.0.1:5000"}, "body.name", id="name-list"),
    pytest.param({"name": "owner a", "url": "http://127.0.0.1:5000"}, "body.name: String should match pattern", id="name-space"),
    pytest.param({"name": "../owner", "url": "http://127.0.0.1:5000"}, "body.name: String should match pattern", id="name-path"),
    pytest.param({"name": "owner"}, "body.url", id="missing-url"),
    pytest.param({"name": "owner", "url": 5000}, "body.url", id="url-int"),
    pytest.param({"name": "owner", "url": "ftp://127.0.0.1:5000"}, "body.url: String should match pattern", id="url-ftp"),
    pytest.param({"name": "owner", "url": "127.0.0.1:5000"}, "body.url: String should match pattern", id="url-no-scheme"),
]


@pytest.mark.parametrize(("payload", "fragment"), REGISTRATION_CASES)
def test_bad_registration(coordinator_app, payload, fragment):
    assert_json_error(as_enrolling_owner(coordinator_app).post("/data_owners", json=payload), 400, fragment)
    assert as_model_creator(coordinator_app).get("/data_owners").get_json() == {"data_owners": []}


# -- jobs ----------------------------------------------------------------------------------------

def test_create_then_show_job(coordinator_app, small_key):
    client = as_model_creator(coordinator_app)
    spec = make_spec(small_key, "job-42")
    created = create_job(client, small_key, spec)
    assert created.get_json() == {"job_id": "job-42", "status": "running"}

    shown = client.get("/jobs/job-42")
    assert shown.status_code == 200
    assert shown.get_json() == {"job_id": "job-42", "status": "running", "error": None,
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

ROUND_CASES = [
    pytest.param("key_fingerprint", MISSING, "body.key_fingerprint", id="fingerprint-missing"),
    pytest.param("key_fingerprint", 5, "body.key_fingerprint", id="fingerprint-int"),
    pytest.param("key_fingerprint", lambda k, o: o.public_key.fingerprint, "body.key_fingerprint",
                 id="fingerprint-of-other-key"),
    pytest.param("round", MISSING, "body.round", id="round-missing"),
    pytest.param("round", True, "body.round", id="round-bool"),
    pytest.param("round", "0", "body.round", id="round-string"),
    pytest.param("round", -1, "body.round", id="round-negative"),
    pytest.param("round", 0.5, "body.round", id="round-float"),
    pytest.param("round", 1_000_001, "body.round", id="round-too-big"),
    pytest.param("kind", "magic", "body.kind", id="kind-unknown"),
    pytest.param("kind", ["gradient"], "body.kind", id="kind-list"),
    pytest.param("kind", None, "body.kind", id="kind-null"),
]


@pytest.mark.parametrize(("path", "value", "fragment"), ROUND_CASES)
def test_bad_round_start(coordinator_app, small_key, other_small_key, path, value, fragment):
    client = as_model_creator(coordinator_app)
    spec = make_spec(small_key)
    create_job(client, small_key, spec)
    body = patched(weights_body(small_key, spec), path, value, small_key, other_small_key)
    assert_json_error(client.post("/jobs/job-1/rounds", json=body), 400, fragment)
    assert client.get("/jobs/job-1").get_json()["rounds"] == []


@pytest.mark.parametrize("make", ciphertext_cases("body.encrypted_weights"))
def test_bad_encrypted_weights(coordinator_app, small_key, make):
    client = as_model_creator(coordinator_app)
    spec = make_spec(small_key)
    create_job(client, small_key, spec)
    body = weights_body(small_key, spec)
    body["encrypted_weights"], fragment = make(small_key, body["encrypted_weights"])
    assert_json_error(client.post("/jobs/job-1/rounds", json=body), 400, fragment)
    shown = client.get("/jobs/job-1").get_json()
    assert shown["rounds"] == [] and shown["status"] == "running"


@pytest.fixture
def round_app(tmp_path):
    """A coordinator whose round waits long enough for the test's contributions, and never retries."""
    return create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "round-coordinator"), "ROUND_TIMEOUT": 30,
                       "ROUND_RETRIES": 0, "RETRY_DELAY": 0, "REQUEST_TIMEOUT": 5, **TOKENS})


class OpenRound:
    """A round in flight at ``round_app``: two stub data owners were asked, neither answered yet."""

    owners = ("owner-a", "owner-b")

    def __init__(self, app, stub, key):
        self.app, self.stub, self.key = app, stub, key
        self.client = as_model_creator(app)
        self.spec = make_spec(key, min_data_owners=1)
        self.issued = {}
        for owner in self.owners:
            enrolled = register(app, owner, f"{stub.url}/{owner}")
            assert enrolled.status_code == 201
            self.issued[owner] = enrolled.get_json()
        create_job(self.client, key, self.spec, callback_url=f"{stub.url}/model-creator")
        self.weights = weights_body(key, self.spec)
        accepted = self.client.post("/jobs/job-1/rounds", json=self.weights)
        assert accepted.status_code == 202, accepted.get_json()
        assert accepted.get_json() == {"job_id": "job-1", "round": 0, "status": "started"}
        self.asked = stub.wait_for(lambda r: r.method == "POST" and r.path.endswith("/jobs/job-1/rounds"), count=2)

    def owner(self, name: str):
        """The coordinator as called by the enrolled owner ``name``."""
        return client_with(self.app, self.issued[name]["credential"])

    def contribute(self, owner: str, **overrides):
        body = {**contribution_body(self.key, self.spec, owner), **overrides}
        return self.owner(owner).post("/jobs/job-1/rounds/0/contributions", json=body)

    def aggregate(self):
        (delivered,) = self.stub.wait_for(lambda r: r.path == "/model-creator/jobs/job-1/aggregates")
        return delivered.body


def typed_answer(method: str, path: str, body) -> tuple[int, dict]:
    """What a real data owner or model creator answers: the coordinator's typed clients check it."""
    *_, job_id, last = path.rstrip("/").split("/")
    if method == "PUT":
        return 200, {"job_id": last, "status": "joined"}
    if method == "DELETE":
        return 200, {"job_id": last, "status": "left"}
    if last == "rounds":
        return 202, {"job_id": job_id, "round": body["round"], "status": "accepted"}
    return 202, {"status": "accepted"}


@pytest.fixture
def open_round(round_app, stub_peer, small_key):
    return OpenRound(round_app, stub_peer(typed_answer), small_key)


def test_round_is_fanned_out_collected_and_aggregated(open_round, small_key):
    stub, spec = open_round.stub, open_round.spec
    joins = stub.wait_for(lambda r: r.method == "PUT", count=2)
    assert sorted(r.path for r in joins) == ["/owner-a/jobs/job-1", "/owner-b/jobs/job-1"]
    for join in joins:
        assert join.body == {"spec": spec.model_dump(mode="json"), "public_key": small_key.public_key.to_json()}
        owner = join.path.split("/")[1]
        assert join.authorization == f"Bearer {open_round.issued[owner]['coordinator_token']}"
    expected = {"round": 0, "attempt": 1, "key_fingerprint": small_key.public_key.fingerprint,
                "encrypted_weights": open_round.weights["encrypted_weights"]}
    for asked in open_round.asked:
        assert {name: asked.body.get(name) for name in expected} == expected
        owner = asked.path.split("/")[1]
        assert asked.authorization == f"Bearer {open_round.issued[owner]['coordinator_token']}"

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
    model_creator = stub_peer(typed_answer)
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
    pytest.param({"key_fingerprint": "ab" * 32}, 400, "body.key_fingerprint", id="fingerprint-wrong"),
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


@pytest.mark.parametrize("make", ciphertext_cases("body.ciphertexts"))
def test_bad_contribution_ciphertexts(open_round, make):
    body = contribution_body(open_round.key, open_round.spec, "owner-a")
    body["ciphertexts"], fragment = make(open_round.key, body["ciphertexts"])
    response = open_round.owner("owner-a").post("/jobs/job-1/rounds/0/contributions", json=body)
    assert_json_error(response, 400, fragment)
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
        payload, _ = case.values
        statuses.append(enrol.post("/data_owners", json=payload).status_code)
    statuses.append(enrol.post("/data_owners", json={"name": "owner-a", "url": "ftp://elsewhere"}).status_code)
    # Right body, wrong caller: no credentials, a forged one, another party's.
    for caller in (coordinator_app.test_client(), client_with(coordinator_app, "forged"), client, owner):
        statuses.append(caller.post("/data_owners", json={"name": "owner-a", "url": "http://evil"}).status_code)
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
    for case in ROUND_CASES:
        path, value, _ = case.values
        body = patched(weights_body(small_key, spec), path, value, small_key, other_small_key)
        statuses.append(client.post("/jobs/job-1/rounds", json=body).status_code)
    for case in ciphertext_cases("body.encrypted_weights"):
        (make,) = case.values
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
