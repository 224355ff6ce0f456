"""A data owner's API: join a job (PUT /jobs/<id>), answer a round, leave.

Joining reads the owner's CSV, so a CSV that cannot serve the job is refused: a 422 whose error is
a fixed code and the job column concerned, while the file, the row and the cause go only to the
owner's own status page (GET /status, for its operator). A join is answered with the owner's
signed job key; a round names its member set by those keys and is answered in the background,
where a stub coordinator receives it. Every call comes from the coordinator, with the token it was
issued for this owner at enrolment.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import (
    MISSING,
    SPEC_CASES,
    as_operator,
    assert_json_error,
    assert_refused,
    ciphertext_cases,
    client_with,
    encrypted,
    enrolled,
    job_body,
    make_spec,
    patched,
    peer_member,
)
from support import DIABETES_HEADER as HEADER
from support import DIABETES_LABEL, OWNER_CREDENTIAL, SHIPPED, UNREACHABLE, secrets_for
from support import DIABETES_ROW as GOOD_ROW

from common.crypto.packing import SlotLayout, unpack_sum
from common.protocol.errors import EncodingOverflow, Forbidden
from common.protocol.messages import MemberKey, Refusal
from common.protocol.wire import decode_ciphertexts
from common.service.settings import SettingsError
from data_owner import create_app
from data_owner.affine import EncryptedAffineMap

SHIPPED_ROWS = len((SHIPPED / "owner_a.csv").read_text().splitlines()) - 1


def owner_app(tmp_path: Path, data: Path, coordinator: str = UNREACHABLE, name: str = "owner-under-test"):
    """A data owner over ``data``; its work stays in one process, so a round is cheap.

    Its policy lets it take the 1024-bit keys of these tests (the test-only flag).
    """
    return create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "owner-state"), "NAME": name, "DATA": str(data),
                       "COORDINATOR_URL": coordinator, "REQUEST_TIMEOUT": 5, "WORKER_PROCESSES": 1,
                       "CONNECT_RETRIES": 0, "POLICY": {"test_only_small_keys": True},
                       **secrets_for("ENROLMENT_SECRET")})


def join(client, key, spec=None):
    spec = spec or make_spec(key)
    return client.put(f"/jobs/{spec.job_id}", json=job_body(key, spec, callback_url=None))


def member_of(response) -> MemberKey:
    """The signed job key a join answered with."""
    assert response.status_code == 200, response.get_data(as_text=True)
    return MemberKey.model_validate(response.get_json()["member"])


def round_body(key, spec, members, round_number: int = 0, attempt: int = 1) -> dict:
    return {"round": round_number, "attempt": attempt, "key_fingerprint": key.public_key.fingerprint,
            "encrypted_weights": encrypted(key, [1] * spec.dimension),
            "members": [member.model_dump(mode="json") for member in members]}


def stranger(tmp_path, key, job_id: str = "job-1") -> list[MemberKey]:
    """A well-formed member list of an owner other than this one, for rounds that must not get that far."""
    return [peer_member(tmp_path / "peers", "owner-elsewhere", key, job_id)]


def refusal_event(app) -> dict:
    """The owner's newest event as its operator sees it on GET /status: it must be a refusal."""
    response = as_operator(app).get("/status")
    assert response.status_code == 200, response.get_data(as_text=True)
    event = response.get_json()["events"][0]
    assert event["outcome"] == "refused", event
    return event


class Joined:
    """A data owner joined to a job: the coordinator's client of it, and the member list of a round it is alone in."""

    def __init__(self, client, members: list[MemberKey]) -> None:
        self.client = client
        self.members = members


@pytest.fixture
def joined(tmp_path, small_key):
    """A data owner over the shipped owner_a.csv, joined to job-1 under ``small_key``."""
    client = enrolled(owner_app(tmp_path, SHIPPED / "owner_a.csv"))
    member = member_of(join(client, small_key))
    yield Joined(client, [member])
    client.delete("/jobs/job-1")


# -- joining -------------------------------------------------------------------------------------

def test_join_reveals_nothing_about_the_data(data_owner_app, small_key):
    response = join(enrolled(data_owner_app), small_key)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"job_id", "status", "member"}
    assert body["job_id"] == "job-1" and body["status"] == "joined"
    text = response.get_data(as_text=True)
    assert str(SHIPPED_ROWS) not in text and "row" not in text
    enrolled(data_owner_app).delete("/jobs/job-1")


def test_join_answers_the_owners_signed_job_key(data_owner_app, small_key):
    """The member key is signed by the owner's identity key, for this job and this key only."""
    member = member_of(join(enrolled(data_owner_app), small_key))
    status = as_operator(data_owner_app).get("/status").get_json()
    assert member.name == "owner-under-test" and member.identity_key == status["identity_key"]
    member.verify("job-1", small_key.public_key.fingerprint)
    with pytest.raises(Forbidden, match="signature is not valid"):
        member.verify("job-2", small_key.public_key.fingerprint)
    enrolled(data_owner_app).delete("/jobs/job-1")


def test_a_rejoin_makes_a_new_job_key(data_owner_app, small_key):
    client = enrolled(data_owner_app)
    first, second = member_of(join(client, small_key)), member_of(join(client, small_key))
    assert first.identity_key == second.identity_key and first.job_key != second.job_key
    client.delete("/jobs/job-1")


@pytest.mark.parametrize(("path", "value", "status", "fragment"), SPEC_CASES)
def test_bad_spec_is_refused(data_owner_app, small_key, other_small_key, tmp_path, path, value, status, fragment):
    client = enrolled(data_owner_app)
    body = patched(job_body(small_key, callback_url=None), path, value, small_key, other_small_key)
    assert_json_error(client.put("/jobs/job-1", json=body), status, fragment)
    round_request = round_body(small_key, make_spec(small_key), stranger(tmp_path, small_key))
    assert_json_error(client.post("/jobs/job-1/rounds", json=round_request), 404,
                      "job job-1 is unknown to this data owner")


def test_spec_for_another_job_than_the_url(data_owner_app, small_key):
    body = job_body(small_key, make_spec(small_key, "job-1"), callback_url=None)
    response = enrolled(data_owner_app).put("/jobs/job-2", json=body)
    assert_json_error(response, 422, "spec.job_id: 'job-1' does not match the URL's job 'job-2'")


@pytest.mark.parametrize(
    ("features", "label", "column"),
    [
        pytest.param(["age", "glucose"], DIABETES_LABEL, "glucose", id="unknown-feature"),
        pytest.param(["age", "bmi"], "outcome", "outcome", id="unknown-label"),
    ],
)
def test_column_the_owner_does_not_have(data_owner_app, small_key, features, label, column):
    """The refusal names the job's missing column; the file and its header only the operator sees."""
    spec = make_spec(small_key, features=features, label=label)
    assert_refused(join(enrolled(data_owner_app), small_key, spec), f"missing_column (column '{column}')")
    event = refusal_event(data_owner_app)
    assert event["job_id"] == "job-1" and event["code"] == "missing_column" and event["column"] == column
    assert str(SHIPPED / "owner_a.csv") in event["detail"] and f"missing column '{column}'" in event["detail"]
    assert HEADER.replace(",", ", ") in event["detail"]


def test_slots_too_narrow_for_the_data(data_owner_app, small_key):
    """XᵀX of the shipped data needs about 55 bits at 32 fractional bits; 80-bit slots leave 40."""
    spec = make_spec(small_key, value_bits=80)
    assert_refused(join(enrolled(data_owner_app), small_key, spec), "bound_exceeded")
    event = refusal_event(data_owner_app)
    assert event["code"] == "bound_exceeded" and event["column"] is None
    assert "does not fit" in event["detail"] and str(SHIPPED / "owner_a.csv") in event["detail"]


def test_slots_narrower_than_one_weight_are_a_4xx_not_a_500(data_owner_app, small_key):
    """value_bits below weight_bits + weight_frac_bits leaves XᵀX a negative number of bits.

    The spec parses, the key fits; the owner must refuse it with a 4xx naming the problem, not
    crash on a negative shift count (``1 << -10``) and answer 500.
    """
    spec = make_spec(small_key).model_copy(
        update={"layout": SlotLayout.for_key(small_key.public_key.bits, 30, 1000)}
    )
    response = join(enrolled(data_owner_app), small_key, spec)
    text = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, f"{response.status_code}: {text}"
    assert response.get_json()["type"] != "InternalError", text


def test_join_at_the_real_key_size(tmp_path, real_key):
    """A 2048-bit key needs no test-only flag: an owner with the default policy joins."""
    app = create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "default-policy"), "NAME": "owner-under-test",
                      "DATA": str(SHIPPED / "owner_a.csv"), "COORDINATOR_URL": UNREACHABLE, "REQUEST_TIMEOUT": 5,
                      **secrets_for("ENROLMENT_SECRET")})
    assert as_operator(app).get("/status").get_json()["policy"]["test_only_small_keys"] is False
    response = join(enrolled(app), real_key, make_spec(real_key))
    member_of(response).verify("job-1", real_key.public_key.fingerprint)
    assert response.get_json()["status"] == "joined"
    enrolled(app).delete("/jobs/job-1")


def test_wide_slots_at_the_real_key_size_are_not_a_500(data_owner_app, real_key):
    """A 2048-bit key leaves room for one 1511-bit slot per ciphertext: a valid layout that fits.

    The owner's bound check turns ``2**bound_bits`` into a float, which overflows above 2**1023;
    the join must succeed (the data fit easily) or be refused with a 4xx, never answer 500.
    """
    layout = SlotLayout(value_bits=1500, count_bits=10, slots_per_ciphertext=1)
    spec = make_spec(real_key).model_copy(update={"layout": layout})
    assert spec.layout.fits(real_key.public_key.bits)
    response = join(enrolled(data_owner_app), real_key, spec)
    text = response.get_data(as_text=True)
    assert response.status_code < 500, f"{response.status_code}: {text}"
    enrolled(data_owner_app).delete("/jobs/job-1")


# (CSV content, the refusal answered, what only the operator's status page shows of it)
CSV_CASES = [
    pytest.param(f"{HEADER.replace(',bmi', '')}\n{GOOD_ROW.replace(',32.1', '')}\n", "missing_column (column 'bmi')",
                 ["missing column 'bmi'"], id="missing-feature-column"),
    pytest.param(f"{HEADER.replace(',progression', '')}\n{GOOD_ROW.rsplit(',', 1)[0]}\n",
                 "missing_column (column 'progression')", ["missing column 'progression'"], id="missing-label-column"),
    pytest.param(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW}\n{GOOD_ROW.replace(',101,', ',nan,')}\n", "bad_value (column 'bp')",
                 ["row 3, column 'bp'", "value is not a finite number"], id="nan"),
    pytest.param(f"{HEADER}\n{GOOD_ROW.replace(',101,', ',NaN,')}\n", "bad_value (column 'bp')",
                 ["row 1, column 'bp'", "not a finite number"], id="NaN"),
    pytest.param(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW.replace(',151', ',inf')}\n", "bad_value (column 'progression')",
                 ["row 2, column 'progression'", "not a finite number"], id="infinite-label"),
    pytest.param(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW.replace('59,', ',', 1)}\n", "bad_value (column 'age')",
                 ["row 2, column 'age'", "value is empty"], id="empty-cell"),
    pytest.param(f"{HEADER}\n{GOOD_ROW.replace(',4.8598,', ',high,')}\n", "bad_value (column 's5')",
                 ["row 1, column 's5'", "value is not a number"], id="text-cell"),
    pytest.param(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW}\n{GOOD_ROW}\n59,2,32.1\n", "bad_value (column 'bp')",
                 ["row 4, column 'bp'", "missing"], id="short-row"),
    pytest.param(f"{HEADER}\n", "no_data", ["no rows"], id="header-only"),
    pytest.param("", "no_data", ["empty"], id="empty-file"),
]


@pytest.mark.parametrize(("content", "refusal", "fragments"), CSV_CASES)
def test_csv_that_cannot_serve_the_job(tmp_path, small_key, content, refusal, fragments):
    """The file is read again at each join: one that went bad after start-up is refused at the join.

    The answer is the code and column only; the file, row and cause are on the operator's page.
    """
    data = tmp_path / "owner.csv"
    data.write_text(f"{HEADER}\n{GOOD_ROW}\n")
    app = owner_app(tmp_path, data)
    data.write_text(content)
    response = join(enrolled(app), small_key)
    assert_refused(response, refusal)
    assert str(tmp_path) not in response.get_data(as_text=True)
    event = refusal_event(app)
    assert str(data) in event["detail"]
    for fragment in fragments:
        assert fragment in event["detail"]


def test_csv_that_does_not_exist(tmp_path, small_key):
    data = tmp_path / "owner.csv"
    data.write_text(f"{HEADER}\n{GOOD_ROW}\n")
    app = owner_app(tmp_path, data)
    data.unlink()
    assert_refused(join(enrolled(app), small_key), "no_data")
    event = refusal_event(app)
    assert "cannot be read" in event["detail"] and str(data) in event["detail"]


@pytest.mark.parametrize(("content", "fragment"), [(None, "cannot be read"), ("", "file is empty")])
def test_a_data_file_that_cannot_be_read_stops_the_owner_at_start_up(tmp_path, content, fragment):
    data = tmp_path / "owner.csv"
    if content is not None:
        data.write_text(content)
    with pytest.raises(SettingsError) as info:
        owner_app(tmp_path, data)
    assert str(info.value).startswith("DATA: ") and fragment in str(info.value) and str(data) in str(info.value)


def test_non_binary_label_for_logistic_regression(tmp_path, small_key):
    data = tmp_path / "owner.csv"
    data.write_text(f"{HEADER}\n{GOOD_ROW.rsplit(',', 1)[0]},1\n{GOOD_ROW.rsplit(',', 1)[0]},0\n{GOOD_ROW}\n")
    spec = make_spec(small_key)
    body = job_body(small_key, spec, callback_url=None)
    body["spec"]["model"] = "logistic_regression"
    app = owner_app(tmp_path, data)
    assert_refused(enrolled(app).put("/jobs/job-1", json=body), "not_binary (column 'progression')")
    event = refusal_event(app)
    assert "row 3, column 'progression'" in event["detail"] and str(data) in event["detail"]


def test_failed_rejoin_keeps_the_joined_job(joined, small_key, other_small_key):
    client = joined.client
    bad_specs = [
        make_spec(small_key, features=["age", "glucose"]),
        make_spec(small_key, value_bits=80),
    ]
    for spec in bad_specs:
        assert join(client, small_key, spec).status_code == 422
    for case in SPEC_CASES:
        path, value, _, _ = case.values
        body = patched(job_body(small_key, callback_url=None), path, value, small_key, other_small_key)
        assert 400 <= client.put("/jobs/job-1", json=body).status_code < 500
    # Still joined with the original spec and job key: 11 weights are what a round of it takes.
    spec = make_spec(small_key)
    assert client.post("/jobs/job-1/rounds", json=round_body(small_key, spec, joined.members)).status_code == 202
    short = round_body(small_key, make_spec(small_key, features=["age", "glucose"]), joined.members, 1)
    assert_json_error(client.post("/jobs/job-1/rounds", json=short), 422,
                      "body.encrypted_weights: expected 11 ciphertexts, got 3")


# -- rounds --------------------------------------------------------------------------------------

ROUND_REQUEST_CASES = [
    pytest.param("key_fingerprint", MISSING, 400, "body.key_fingerprint", id="fingerprint-missing"),
    pytest.param("key_fingerprint", ["abc"], 400, "body.key_fingerprint", id="fingerprint-list"),
    pytest.param("key_fingerprint", lambda k, o: o.public_key.fingerprint, 422, "body.key_fingerprint",
                 id="fingerprint-of-other-key"),
    pytest.param("round", MISSING, 400, "body.round", id="round-missing"),
    pytest.param("round", True, 400, "body.round", id="round-bool"),
    pytest.param("round", "1", 400, "body.round", id="round-string"),
    pytest.param("round", -3, 400, "body.round", id="round-negative"),
    pytest.param("attempt", MISSING, 400, "body.attempt", id="attempt-missing"),
    pytest.param("attempt", 0, 400, "body.attempt", id="attempt-zero"),
    pytest.param("attempt", False, 400, "body.attempt", id="attempt-bool"),
    pytest.param("attempt", 1001, 400, "body.attempt", id="attempt-too-big"),
    pytest.param("kind", "weights", 400, "body.kind", id="kind-unknown"),
    pytest.param("members", MISSING, 400, "body.members", id="members-missing"),
    pytest.param("members", [], 400, "body.members", id="members-empty"),
    pytest.param("members", "owner-under-test", 400, "body.members", id="members-string"),
    pytest.param("members", [{"name": "owner-under-test"}], 400, "body.members[0]", id="member-without-keys"),
]


@pytest.mark.parametrize(("path", "value", "status", "fragment"), ROUND_REQUEST_CASES)
def test_bad_round(joined, small_key, other_small_key, path, value, status, fragment):
    body = patched(round_body(small_key, make_spec(small_key), joined.members), path, value, small_key,
                   other_small_key)
    assert_json_error(joined.client.post("/jobs/job-1/rounds", json=body), status, fragment)


def test_a_moments_round_in_a_job_of_gradients_is_refused(joined, small_key):
    body = round_body(small_key, make_spec(small_key), joined.members)
    del body["encrypted_weights"]
    body["kind"] = "moments"
    assert_json_error(joined.client.post("/jobs/job-1/rounds", json=body), 422,
                      "body.kind: a moments round has no place in a job of protocol 'gradients'")


@pytest.mark.parametrize(("make", "status"), ciphertext_cases("body.encrypted_weights"))
def test_bad_encrypted_weights(joined, small_key, make, status):
    body = round_body(small_key, make_spec(small_key), joined.members)
    body["encrypted_weights"], fragment = make(small_key, body["encrypted_weights"])
    assert_json_error(joined.client.post("/jobs/job-1/rounds", json=body), status, fragment)


def test_round_of_an_unknown_job(data_owner_app, small_key, tmp_path):
    body = round_body(small_key, make_spec(small_key, "job-9"), stranger(tmp_path, small_key, "job-9"))
    response = enrolled(data_owner_app).post("/jobs/job-9/rounds", json=body)
    assert_json_error(response, 404, "job job-9 is unknown to this data owner")


def test_round_is_answered_with_the_packed_encrypted_reply(tmp_path, stub_peer, small_key):
    coordinator = stub_peer()
    client = enrolled(owner_app(tmp_path, SHIPPED / "owner_a.csv", coordinator.url, name="owner-a"))
    spec = make_spec(small_key)
    members = [member_of(join(client, small_key, spec))]

    body = round_body(small_key, spec, members, round_number=4, attempt=2)
    response = client.post("/jobs/job-1/rounds", json=body)
    assert response.status_code == 202
    assert response.get_json() == {"job_id": "job-1", "round": 4, "status": "accepted"}

    (reply,) = coordinator.wait_for(lambda r: r.method == "POST")
    assert reply.path == "/jobs/job-1/rounds/4/contributions"
    assert reply.authorization == f"Bearer {OWNER_CREDENTIAL}"
    assert set(reply.body) == {"data_owner", "attempt", "key_fingerprint", "ciphertexts"}
    assert reply.body["data_owner"] == "owner-a" and reply.body["attempt"] == 2
    assert reply.body["key_fingerprint"] == small_key.public_key.fingerprint
    ciphertexts = decode_ciphertexts(reply.body["ciphertexts"], small_key.public_key, "reply",
                                     spec.reply_ciphertexts())
    plaintexts = [small_key.raw_decrypt(c) for c in ciphertexts]
    contributors, values = unpack_sum(plaintexts, spec.layout, spec.reply_values(), "reply")
    assert contributors == 1
    assert values[0] == SHIPPED_ROWS

    # The same weights again: fresh randomness, so no ciphertext repeats.
    assert client.post("/jobs/job-1/rounds", json={**body, "round": 5}).status_code == 202
    (again,) = coordinator.wait_for(lambda r: r.path == "/jobs/job-1/rounds/5/contributions")
    assert not set(again.body["ciphertexts"]) & set(reply.body["ciphertexts"])
    client.delete("/jobs/job-1")


def test_calls_not_from_the_coordinator_change_nothing(joined, small_key, tmp_path):
    client = joined.client
    app = client.application
    spec = make_spec(small_key)
    strangers = [app.test_client(), client_with(app, "forged"), client_with(app, OWNER_CREDENTIAL),
                 client_with(app, app.extensions["settings"].enrolment_secret)]
    for caller in strangers:
        assert_json_error(caller.put("/jobs/job-2", json=job_body(small_key, make_spec(small_key, "job-2"),
                                                                callback_url=None)), 401, "credentials")
        assert_json_error(caller.post("/jobs/job-1/rounds", json=round_body(small_key, spec, joined.members)), 401,
                          "credentials")
        assert_json_error(caller.delete("/jobs/job-1"), 401, "credentials")
        assert_json_error(caller.get("/status"), 401, "credentials")
    assert_json_error(client.get("/status"), 403, "may not call GET /status")
    assert client.post("/jobs/job-1/rounds", json=round_body(small_key, spec, joined.members)).status_code == 202
    other_job = round_body(small_key, spec, stranger(tmp_path, small_key, "job-2"))
    assert_json_error(client.post("/jobs/job-2/rounds", json=other_job), 404, "job job-2")


def test_leave_then_rounds_are_unknown(joined, small_key):
    client = joined.client
    response = client.delete("/jobs/job-1")
    assert response.status_code == 200
    assert response.get_json() == {"job_id": "job-1", "status": "left"}
    body = round_body(small_key, make_spec(small_key), joined.members)
    assert_json_error(client.post("/jobs/job-1/rounds", json=body), 404, "job job-1 is unknown")
    assert client.delete("/jobs/job-1").status_code == 200


def test_a_round_that_cannot_be_computed_is_refused_at_once(tmp_path, stub_peer, small_key, monkeypatch):
    """The coordinator gets a coded Refusal; what went wrong stays on the owner's status page."""
    coordinator = stub_peer()
    app = owner_app(tmp_path, SHIPPED / "owner_a.csv", coordinator.url, name="owner-a")
    client = enrolled(app)
    spec = make_spec(small_key)
    members = [member_of(join(client, small_key, spec))]

    def fail(*args, **kwargs):
        raise EncodingOverflow("weights beyond what this owner's slots hold")

    monkeypatch.setattr(EncryptedAffineMap, "evaluate", fail)
    response = client.post("/jobs/job-1/rounds", json=round_body(small_key, spec, members, round_number=3, attempt=1))
    assert response.status_code == 202

    (refusal,) = coordinator.wait_for(lambda r: r.method == "POST")
    assert refusal.path == "/jobs/job-1/rounds/3/refusals"
    assert refusal.authorization == f"Bearer {OWNER_CREDENTIAL}"
    assert refusal.body == {"data_owner": "owner-a", "attempt": 1, "code": "bound_exceeded"}
    assert Refusal.model_validate(refusal.body).column is None
    event = refusal_event(app)
    assert event["round"] == 3 and event["code"] == "bound_exceeded"
    assert event["detail"] == "weights beyond what this owner's slots hold"
    client.delete("/jobs/job-1")
