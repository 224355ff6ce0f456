"""A data owner's API: join a job (PUT /jobs/<id>), answer a round, leave.

Joining reads the owner's CSV, so a CSV that cannot serve the job is a 422 naming the file, the
column and the row. A round is answered in the background; a stub coordinator receives it.
Every call comes from the coordinator, with the token it was issued for this owner at enrolment.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from common.service.settings import SettingsError
from tests.conftest import secrets_for
from api_support import (
    FEATURES,
    LABEL,
    MISSING,
    OWNER_CREDENTIAL,
    SPEC_CASES,
    TOKENS,
    UNREACHABLE,
    assert_json_error,
    ciphertext_cases,
    client_with,
    encrypted,
    enrolled,
    job_body,
    make_spec,
    patched,
)

from data_owner.affine import EncryptedAffineMap
from common.protocol.errors import EncodingOverflow
from common.crypto.packing import SlotLayout, unpack_sum
from common.crypto.paillier import PrivateKey
from common.protocol.wire import decode_ciphertexts
from data_owner import create_app

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "diabetes"
HEADER = ",".join([*FEATURES, LABEL])
GOOD_ROW = "59,2,32.1,101,157,93.2,38,4,4.8598,87,151"
SHIPPED_ROWS = len((SHIPPED / "owner_a.csv").read_text().splitlines()) - 1


def owner_app(tmp_path: Path, data: Path, coordinator: str = UNREACHABLE, name: str = "owner-under-test"):
    """A data owner over ``data``; its work stays in one process, so a round is cheap."""
    return create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "owner-state"), "NAME": name, "DATA": str(data),
                       "COORDINATOR_URL": coordinator, "REQUEST_TIMEOUT": 5, "WORKER_PROCESSES": 1,
                       "CONNECT_RETRIES": 0, **secrets_for("ENROLMENT_SECRET")})


def join(client, key, spec=None):
    spec = spec or make_spec(key)
    return client.put(f"/jobs/{spec.job_id}", json=job_body(key, spec, callback_url=None))


def round_body(key, spec, round_number: int = 0, attempt: int = 1) -> dict:
    return {"round": round_number, "attempt": attempt, "key_fingerprint": key.public_key.fingerprint,
            "encrypted_weights": encrypted(key, [1] * spec.dimension)}


@pytest.fixture
def joined(tmp_path, small_key):
    """A data owner over the shipped owner_a.csv, joined to job-1 under ``small_key``."""
    client = enrolled(owner_app(tmp_path, SHIPPED / "owner_a.csv"))
    assert join(client, small_key).status_code == 200
    yield client
    client.delete("/jobs/job-1")


# -- joining -------------------------------------------------------------------------------------

def test_join_reveals_nothing_about_the_data(data_owner_app, small_key):
    response = join(enrolled(data_owner_app), small_key)
    assert response.status_code == 200
    assert response.get_json() == {"job_id": "job-1", "status": "joined"}
    text = response.get_data(as_text=True)
    assert str(SHIPPED_ROWS) not in text and "row" not in text
    enrolled(data_owner_app).delete("/jobs/job-1")


@pytest.mark.parametrize(("path", "value", "status", "fragment"), SPEC_CASES)
def test_bad_spec_is_refused(data_owner_app, small_key, other_small_key, path, value, status, fragment):
    client = enrolled(data_owner_app)
    body = patched(job_body(small_key, callback_url=None), path, value, small_key, other_small_key)
    assert_json_error(client.put("/jobs/job-1", json=body), status, fragment)
    assert_json_error(client.post("/jobs/job-1/rounds", json=round_body(small_key, make_spec(small_key))), 404,
                      "job job-1 is unknown to this data owner")


def test_spec_for_another_job_than_the_url(data_owner_app, small_key):
    body = job_body(small_key, make_spec(small_key, "job-1"), callback_url=None)
    response = enrolled(data_owner_app).put("/jobs/job-2", json=body)
    assert_json_error(response, 400, "spec.job_id: 'job-1' does not match the URL's job 'job-2'")


@pytest.mark.parametrize(
    ("features", "label", "fragment"),
    [
        pytest.param(["age", "glucose"], LABEL, "missing column 'glucose'", id="unknown-feature"),
        pytest.param(["age", "bmi"], "outcome", "missing column 'outcome'", id="unknown-label"),
    ],
)
def test_column_the_owner_does_not_have(data_owner_app, small_key, features, label, fragment):
    spec = make_spec(small_key, features=features, label=label)
    body = assert_json_error(join(enrolled(data_owner_app), small_key, spec), 422, fragment)
    assert str(SHIPPED / "owner_a.csv") in body["error"]


def test_slots_too_narrow_for_the_data(data_owner_app, small_key):
    """XᵀX of the shipped data needs about 55 bits at 32 fractional bits; 80-bit slots leave 40."""
    spec = make_spec(small_key, value_bits=80)
    body = assert_json_error(join(enrolled(data_owner_app), small_key, spec), 422, "does not fit")
    assert str(SHIPPED / "owner_a.csv") in body["error"]


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


@pytest.fixture(scope="module")
def real_key() -> PrivateKey:
    """A key of the default (real) size, 2048 bits."""
    return PrivateKey.generate(2048)


def test_join_at_the_real_key_size(data_owner_app, real_key):
    response = join(enrolled(data_owner_app), real_key, make_spec(real_key))
    assert response.status_code == 200
    assert response.get_json() == {"job_id": "job-1", "status": "joined"}
    enrolled(data_owner_app).delete("/jobs/job-1")


def test_wide_slots_at_the_real_key_size_are_not_a_500(data_owner_app, real_key):
    """A 2048-bit key leaves room for one 1511-bit slot per ciphertext: a valid layout that fits.

    The owner's bound check turns ``2**bound_bits`` into a float, which overflows above 2**1023;
    the join must succeed (the data fit easily) or be refused with a 4xx, never answer 500.
    """
    spec = make_spec(real_key).model_copy(update={"layout": SlotLayout(value_bits=1500, count_bits=10, slots_per_ciphertext=1)})
    assert spec.layout.fits(real_key.public_key.bits)
    response = join(enrolled(data_owner_app), real_key, spec)
    text = response.get_data(as_text=True)
    assert response.status_code < 500, f"{response.status_code}: {text}"
    enrolled(data_owner_app).delete("/jobs/job-1")


CSV_CASES = [
    pytest.param(f"{HEADER.replace(',bmi', '')}\n{GOOD_ROW.replace(',32.1', '')}\n", 422, ["missing column 'bmi'"],
                 id="missing-feature-column"),
    pytest.param(f"{HEADER.replace(',progression', '')}\n{GOOD_ROW.rsplit(',', 1)[0]}\n", 422,
                 ["missing column 'progression'"], id="missing-label-column"),
    pytest.param(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW}\n{GOOD_ROW.replace(',101,', ',nan,')}\n", 422,
                 ["row 3, column 'bp'", "value is not a finite number"], id="nan"),
    pytest.param(f"{HEADER}\n{GOOD_ROW.replace(',101,', ',NaN,')}\n", 422,
                 ["row 1, column 'bp'", "not a finite number"], id="NaN"),
    pytest.param(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW.replace(',151', ',inf')}\n", 422,
                 ["row 2, column 'progression'", "not a finite number"], id="infinite-label"),
    pytest.param(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW.replace('59,', ',', 1)}\n", 422,
                 ["row 2, column 'age'", "value is empty"], id="empty-cell"),
    pytest.param(f"{HEADER}\n{GOOD_ROW.replace(',4.8598,', ',high,')}\n", 422,
                 ["row 1, column 's5'", "value is not a number"], id="text-cell"),
    pytest.param(f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW}\n{GOOD_ROW}\n59,2,32.1\n", 422,
                 ["row 4, column 'bp'", "missing"], id="short-row"),
    pytest.param(f"{HEADER}\n", 422, ["no rows"], id="header-only"),
    pytest.param("", 422, ["empty"], id="empty-file"),
]


@pytest.mark.parametrize(("content", "status", "fragments"), CSV_CASES)
def test_csv_that_cannot_serve_the_job(tmp_path, small_key, content, status, fragments):
    """The file is read again at each join: one that went bad after start-up is refused at the join."""
    data = tmp_path / "owner.csv"
    data.write_text(f"{HEADER}\n{GOOD_ROW}\n")
    app = owner_app(tmp_path, data)
    data.write_text(content)
    body = assert_json_error(join(enrolled(app), small_key), status, fragments[0])
    assert str(data) in body["error"]
    for fragment in fragments[1:]:
        assert fragment in body["error"]


def test_csv_that_does_not_exist(tmp_path, small_key):
    data = tmp_path / "owner.csv"
    data.write_text(f"{HEADER}\n{GOOD_ROW}\n")
    app = owner_app(tmp_path, data)
    data.unlink()
    body = assert_json_error(join(enrolled(app), small_key), 422, "cannot be read")
    assert str(data) in body["error"]


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
    response = enrolled(owner_app(tmp_path, data)).put("/jobs/job-1", json=body)
    error = assert_json_error(response, 422, "row 3, column 'progression'")["error"]
    assert str(data) in error


def test_failed_rejoin_keeps_the_joined_job(joined, small_key, other_small_key):
    bad_specs = [
        make_spec(small_key, features=["age", "glucose"]),
        make_spec(small_key, value_bits=80),
    ]
    for spec in bad_specs:
        assert join(joined, small_key, spec).status_code == 422
    for case in SPEC_CASES:
        path, value, _, _ = case.values
        body = patched(job_body(small_key, callback_url=None), path, value, small_key, other_small_key)
        assert 400 <= joined.put("/jobs/job-1", json=body).status_code < 500
    # Still joined with the original spec: 11 weights are what a round of it takes.
    assert joined.post("/jobs/job-1/rounds", json=round_body(small_key, make_spec(small_key))).status_code == 202
    short = round_body(small_key, make_spec(small_key, features=["age", "glucose"]))
    assert_json_error(joined.post("/jobs/job-1/rounds", json=short), 400,
                      "body.encrypted_weights: expected 11 ciphertexts, got 3")


# -- rounds --------------------------------------------------------------------------------------

ROUND_CASES = [
    pytest.param("key_fingerprint", MISSING, "body.key_fingerprint", id="fingerprint-missing"),
    pytest.param("key_fingerprint", ["abc"], "body.key_fingerprint", id="fingerprint-list"),
    pytest.param("key_fingerprint", lambda k, o: o.public_key.fingerprint, "body.key_fingerprint",
                 id="fingerprint-of-other-key"),
    pytest.param("round", MISSING, "body.round", id="round-missing"),
    pytest.param("round", True, "body.round", id="round-bool"),
    pytest.param("round", "1", "body.round", id="round-string"),
    pytest.param("round", -3, "body.round", id="round-negative"),
    pytest.param("attempt", MISSING, "body.attempt", id="attempt-missing"),
    pytest.param("attempt", 0, "body.attempt", id="attempt-zero"),
    pytest.param("attempt", False, "body.attempt", id="attempt-bool"),
    pytest.param("attempt", 1001, "body.attempt", id="attempt-too-big"),
    pytest.param("kind", "weights", "body.kind", id="kind-unknown"),
]


@pytest.mark.parametrize(("path", "value", "fragment"), ROUND_CASES)
def test_bad_round(joined, small_key, other_small_key, path, value, fragment):
    body = patched(round_body(small_key, make_spec(small_key)), path, value, small_key, other_small_key)
    assert_json_error(joined.post("/jobs/job-1/rounds", json=body), 400, fragment)


@pytest.mark.parametrize("make", ciphertext_cases("body.encrypted_weights"))
def test_bad_encrypted_weights(joined, small_key, make):
    body = round_body(small_key, make_spec(small_key))
    body["encrypted_weights"], fragment = make(small_key, body["encrypted_weights"])
    assert_json_error(joined.post("/jobs/job-1/rounds", json=body), 400, fragment)


def test_round_of_an_unknown_job(data_owner_app, small_key):
    response = enrolled(data_owner_app).post("/jobs/job-9/rounds", json=round_body(small_key, make_spec(small_key)))
    assert_json_error(response, 404, "job job-9 is unknown to this data owner")


def test_round_is_answered_with_the_packed_encrypted_reply(tmp_path, stub_peer, small_key):
    coordinator = stub_peer()
    client = enrolled(owner_app(tmp_path, SHIPPED / "owner_a.csv", coordinator.url, name="owner-a"))
    spec = make_spec(small_key)
    assert join(client, small_key, spec).status_code == 200

    body = round_body(small_key, spec, round_number=4, attempt=2)
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
    app = joined.application
    spec = make_spec(small_key)
    strangers = [app.test_client(), client_with(app, "forged"), client_with(app, OWNER_CREDENTIAL),
                 client_with(app, app.extensions["settings"].enrolment_secret)]
    for stranger in strangers:
        assert_json_error(stranger.put("/jobs/job-2", json=job_body(small_key, make_spec(small_key, "job-2"),
                                                                  callback_url=None)), 401, "credentials")
        assert_json_error(stranger.post("/jobs/job-1/rounds", json=round_body(small_key, spec)), 401, "credentials")
        assert_json_error(stranger.delete("/jobs/job-1"), 401, "credentials")
    assert joined.post("/jobs/job-1/rounds", json=round_body(small_key, spec)).status_code == 202
    assert_json_error(joined.post("/jobs/job-2/rounds", json=round_body(small_key, spec)), 404, "job job-2")


def test_leave_then_rounds_are_unknown(joined, small_key):
    response = joined.delete("/jobs/job-1")
    assert response.status_code == 200
    assert response.get_json() == {"job_id": "job-1", "status": "left"}
    assert_json_error(joined.post("/jobs/job-1/rounds", json=round_body(small_key, make_spec(small_key))), 404,
                      "job job-1 is unknown")
    assert joined.delete("/jobs/job-1").status_code == 200


def test_a_round_that_cannot_be_computed_is_refused_at_once(tmp_path, stub_peer, small_key, monkeypatch):
    coordinator = stub_peer()
    client = enrolled(owner_app(tmp_path, SHIPPED / "owner_a.csv", coordinator.url, name="owner-a"))
    spec = make_spec(small_key)
    assert join(client, small_key, spec).status_code == 200

    def fail(*args, **kwargs):
        raise EncodingOverflow("weights beyond what this owner's slots hold")

    monkeypatch.setattr(EncryptedAffineMap, "evaluate", fail)
    response = client.post("/jobs/job-1/rounds", json=round_body(small_key, spec, round_number=3, attempt=1))
    assert response.status_code == 202

    (refusal,) = coordinator.wait_for(lambda r: r.method == "POST")
    assert refusal.path == "/jobs/job-1/rounds/3/refusals"
    assert refusal.authorization == f"Bearer {OWNER_CREDENTIAL}"
    assert refusal.body == {"data_owner": "owner-a", "attempt": 1,
                            "error": "weights beyond what this owner's slots hold"}
