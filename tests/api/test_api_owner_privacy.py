"""A data owner enforces its own privacy against a rogue coordinator (PROTOCOL.md sections 2, 7, 9).

Each test acts as a coordinator that is malicious toward privacy would: it calls the owner's API
with the very token the coordinator was issued for that owner, and substitutes keys, forges or
trims member lists, replays sets that differ by one owner, crafts jobs that read too much, or
provokes refusals to learn about the data. The owner answers each with a fixed refusal code (and
the job column concerned); what happened in detail is only on its operator's status page.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import (
    as_operator,
    assert_json_error,
    assert_refused,
    client_with,
    encrypted,
    enrolled,
    job_body,
    make_spec,
    peer_member,
)
from support import (
    DIABETES_COLUMNS,
    DIABETES_FEATURES,
    DIABETES_HEADER,
    DIABETES_LABEL,
    SHIPPED,
    UNREACHABLE,
    secrets_for,
)
from support import DIABETES_ROW as ROW

from common.crypto.identity import IdentityKey
from common.crypto.masking import JobKeyPair
from common.crypto.packing import unpack_sum
from common.dataset import load_columns
from common.protocol.errors import EncodingOverflow
from common.protocol.messages import MemberKey
from common.protocol.wire import decode_ciphertexts
from data_owner import create_app
from data_owner.affine import EncryptedAffineMap


def owner_app(tmp_path: Path, name: str = "owner-a", data: Path = SHIPPED / "owner_a.csv",
              coordinator: str = UNREACHABLE, **policy):
    """A data owner with its own state dir under ``tmp_path``; ``policy`` over the test-only small keys."""
    return create_app({"TESTING": True, "STATE_DIR": str(tmp_path / name), "NAME": name, "DATA": str(data),
                       "COORDINATOR_URL": coordinator, "REQUEST_TIMEOUT": 5, "WORKER_PROCESSES": 1,
                       "CONNECT_RETRIES": 0, "POLICY": {"test_only_small_keys": True, **policy},
                       **secrets_for("ENROLMENT_SECRET")})


def join(coordinator, key, spec):
    """What the coordinator relays of the model creator's job: PUT /jobs/<id>."""
    return coordinator.put(f"/jobs/{spec.job_id}", json=job_body(key, spec, callback_url=None))


def joined_member(coordinator, key, spec) -> MemberKey:
    response = join(coordinator, key, spec)
    assert response.status_code == 200, response.get_data(as_text=True)
    return MemberKey.model_validate(response.get_json()["member"])


def round_request(key, spec, members, round_number: int = 0, attempt: int = 1, weights=None) -> dict:
    """The body of a round request over ``members``; the coordinator relays one body to every member."""
    return {"round": round_number, "attempt": attempt, "key_fingerprint": key.public_key.fingerprint,
            "encrypted_weights": encrypted(key, weights or [1] * spec.dimension),
            "members": [member.model_dump(mode="json") for member in members]}


def ask_round(coordinator, key, spec, members, round_number: int = 0, attempt: int = 1, weights=None):
    """POST /jobs/<id>/rounds over ``members``, as the coordinator would."""
    body = round_request(key, spec, members, round_number, attempt, weights)
    return coordinator.post(f"/jobs/{spec.job_id}/rounds", json=body)


def status_of(app) -> dict:
    response = as_operator(app).get("/status")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def newest_refusal(app) -> dict:
    """The newest refusal on the owner's status page (contributions of earlier rounds are written
    by the owner's worker, so they may land after a refusal answered at once)."""
    refusals = [event for event in status_of(app)["events"] if event["outcome"] == "refused"]
    assert refusals, status_of(app)["events"]
    return refusals[0]


def served(app) -> list[list[str]]:
    return [entry["members"] for entry in status_of(app)["served_sets"]]


def assert_reveals_nothing(response, data: Path, refusal: str, column: str | None) -> None:
    """The answer is the code (and job column) only: no digit of the data, no path, no row, no header."""
    assert_refused(response, refusal)
    text = response.get_data(as_text=True)
    assert not any(character.isdigit() for character in text), text
    assert str(data) not in text and data.name not in text and "row" not in text, text
    for name in DIABETES_COLUMNS:
        assert name == column or f"'{name}'" not in text and f" {name}" not in text, text


# -- key substitution (section 2) ---------------------------------------------------------------

def test_a_job_under_another_key_than_the_first_one_is_refused(tmp_path, small_key, other_small_key):
    """Trust on first use: once the owner computed for K, a coordinator cannot make it use K'."""
    app = owner_app(tmp_path)
    coordinator = enrolled(app)
    joined_member(coordinator, small_key, make_spec(small_key, "job-1"))
    trusted = status_of(app)["trusted_key"]
    assert trusted["fingerprint"] == small_key.public_key.fingerprint and trusted["source"] == "trusted on first use"

    response = join(coordinator, other_small_key, make_spec(other_small_key, "job-2"))
    assert_refused(response, "policy:key")
    text = response.get_data(as_text=True)
    assert small_key.public_key.fingerprint not in text and other_small_key.public_key.fingerprint not in text
    event = newest_refusal(app)
    assert event["job_id"] == "job-2" and event["code"] == "policy:key"
    assert small_key.public_key.fingerprint in event["detail"]
    assert other_small_key.public_key.fingerprint in event["detail"]
    assert status_of(app)["trusted_key"]["fingerprint"] == small_key.public_key.fingerprint
    assert "job-2" not in status_of(app)["jobs"]
    # The trusted key still serves.
    joined_member(coordinator, small_key, make_spec(small_key, "job-3"))


def test_the_trusted_key_survives_a_restart(tmp_path, small_key, other_small_key):
    app = owner_app(tmp_path)
    joined_member(enrolled(app), small_key, make_spec(small_key, "job-1"))
    restarted = owner_app(tmp_path)
    assert_refused(join(enrolled(restarted), other_small_key, make_spec(other_small_key, "job-2")), "policy:key")


def test_with_a_pinned_key_the_first_job_under_another_key_is_refused(tmp_path, small_key, other_small_key):
    app = owner_app(tmp_path, model_creator_key=small_key.public_key.fingerprint)
    coordinator = enrolled(app)
    assert_refused(join(coordinator, other_small_key, make_spec(other_small_key, "job-1")), "policy:key")
    assert status_of(app)["trusted_key"]["source"] == "pinned by the operator"
    assert app.extensions["ledger"].trusted_key() is None
    joined_member(coordinator, small_key, make_spec(small_key, "job-2"))


def test_a_small_key_without_the_test_only_flag_is_refused(tmp_path, small_key):
    app = owner_app(tmp_path, test_only_small_keys=False)
    response = join(enrolled(app), small_key, make_spec(small_key))
    assert_refused(response, "policy:key_size")
    assert small_key.public_key.fingerprint not in response.get_data(as_text=True)
    assert "1024" in newest_refusal(app)["detail"]
    assert status_of(app)["trusted_key"] is None


# -- the member list of a round (section 9) -----------------------------------------------------

def _alone(own, peers, key, tmp_path):
    return [own]


def _forged_peer_signature(own, peers, key, tmp_path):
    substituted = peers[0].model_copy(update={"job_key": JobKeyPair.generate().public_text})
    return [own, substituted]


def _peer_key_for_another_job(own, peers, key, tmp_path):
    return [own, peer_member(tmp_path / "peers", "owner-b", key, "job-2")]


def _peer_key_under_another_model_creator_key(own, peers, key, tmp_path):
    identity = IdentityKey.load_or_create(tmp_path / "peers" / "owner-b" / "identity_key.pem")
    return [own, MemberKey.signed("owner-b", identity, JobKeyPair.generate(), "job-1", "0" * 64)]


def _own_job_key_substituted(own, peers, key, tmp_path):
    """The coordinator puts a job key of its own, under its own identity key, in this owner's place."""
    return [peer_member(tmp_path / "coordinator", own.name, key, "job-1"), peers[0]]


def _own_job_key_dropped(own, peers, key, tmp_path):
    return peers


def _a_name_twice(own, peers, key, tmp_path):
    return [own, peers[0], peers[0]]


MEMBER_ATTACKS = [
    pytest.param(_alone, "policy:min_peers", id="only-this-owner"),
    pytest.param(_forged_peer_signature, "policy:members", id="forged-peer-signature"),
    pytest.param(_peer_key_for_another_job, "policy:members", id="peer-key-of-another-job"),
    pytest.param(_peer_key_under_another_model_creator_key, "policy:members", id="peer-key-under-another-mc-key"),
    pytest.param(_own_job_key_substituted, "policy:members", id="own-job-key-substituted"),
    pytest.param(_own_job_key_dropped, "policy:members", id="without-this-owner"),
    pytest.param(_a_name_twice, "policy:members", id="a-name-twice"),
]


@pytest.mark.parametrize(("attack", "refusal"), MEMBER_ATTACKS)
def test_a_member_list_the_owner_cannot_trust_is_refused(tmp_path, small_key, attack, refusal):
    """min_peers=2: nothing is computed or recorded for a list that is too short or not signed as relayed."""
    app = owner_app(tmp_path, min_peers=2)
    coordinator = enrolled(app)
    spec = make_spec(small_key)
    own = joined_member(coordinator, small_key, spec)
    peers = [peer_member(tmp_path / "peers", name, small_key, "job-1") for name in ("owner-b", "owner-c")]
    assert_refused(ask_round(coordinator, small_key, spec, attack(own, peers, small_key, tmp_path)), refusal)
    assert newest_refusal(app)["code"] == refusal
    assert served(app) == []
    assert "contributed" not in [event["outcome"] for event in status_of(app)["events"]]
    # The honest list of the same round is still served.
    assert ask_round(coordinator, small_key, spec, [own, *peers]).status_code == 202
    assert served(app) == [["owner-a", "owner-b", "owner-c"]]


def test_a_stale_own_job_key_is_refused(tmp_path, small_key):
    """After a rejoin only the new job key is this owner's: a replayed member list is refused."""
    app = owner_app(tmp_path, min_peers=2)
    coordinator = enrolled(app)
    spec = make_spec(small_key)
    stale = joined_member(coordinator, small_key, spec)
    fresh = joined_member(coordinator, small_key, spec)
    peer = peer_member(tmp_path / "peers", "owner-b", small_key, "job-1")
    assert_refused(ask_round(coordinator, small_key, spec, [stale, peer]), "policy:members")
    assert ask_round(coordinator, small_key, spec, [fresh, peer]).status_code == 202


def test_a_peer_that_shows_another_identity_key_is_refused(tmp_path, small_key):
    """A coordinator that swaps a peer for an owner of its own under the peer's name is caught."""
    app = owner_app(tmp_path, min_peers=2)
    coordinator = enrolled(app)
    spec = make_spec(small_key)
    own = joined_member(coordinator, small_key, spec)
    assert ask_round(coordinator, small_key, spec, [own, peer_member(tmp_path / "peers", "owner-b", small_key,
                                                                      "job-1")]).status_code == 202
    impostor = peer_member(tmp_path / "impostor", "owner-b", small_key, "job-1")
    impostor.verify("job-1", small_key.public_key.fingerprint)
    response = ask_round(coordinator, small_key, spec, [own, impostor], round_number=1)
    assert_refused(response, "policy:identity")
    assert "owner-b" not in response.get_data(as_text=True)
    event = newest_refusal(app)
    assert event["round"] == 1 and "owner-b" in event["detail"]
    # Also in another job, and after a restart.
    restarted = enrolled(owner_app(tmp_path, min_peers=2))
    spec_2 = make_spec(small_key, "job-2")
    own_2 = joined_member(restarted, small_key, spec_2)
    impostor_2 = peer_member(tmp_path / "impostor", "owner-b", small_key, "job-2")
    assert_refused(ask_round(restarted, small_key, spec_2, [own_2, impostor_2]), "policy:identity")


# -- differencing (section 9) -------------------------------------------------------------------

def test_member_sets_that_differ_by_one_owner_are_refused(tmp_path, small_key):
    """With min_peers=2, after {A, B, C} the sum over {A, B} would isolate C: refused in any job."""
    app = owner_app(tmp_path, min_peers=2)
    coordinator = enrolled(app)
    peers = tmp_path / "peers"

    def members(own, spec, *names):
        return [own, *(peer_member(peers, name, small_key, spec.job_id) for name in names)]

    spec = make_spec(small_key, "job-1")
    own = joined_member(coordinator, small_key, spec)
    assert ask_round(coordinator, small_key, spec, members(own, spec, "owner-b", "owner-c")).status_code == 202
    assert served(app) == [["owner-a", "owner-b", "owner-c"]]

    # The dropout "retry": the same round, the same weights, one owner fewer.
    response = ask_round(coordinator, small_key, spec, members(own, spec, "owner-b"), attempt=2)
    assert_refused(response, "policy:differencing")
    assert "owner-c" not in response.get_data(as_text=True)
    assert "owner-c" in newest_refusal(app)["detail"]
    # One owner more is one owner isolated too.
    assert_refused(ask_round(coordinator, small_key, spec, members(own, spec, "owner-b", "owner-c", "owner-d"), 1),
                   "policy:differencing")
    # The same set again is no new information about any one owner.
    assert ask_round(coordinator, small_key, spec, members(own, spec, "owner-b", "owner-c"), 1).status_code == 202

    # Another job under the same key: the statistics are the same, so is the guard.
    spec_2 = make_spec(small_key, "job-2")
    own_2 = joined_member(coordinator, small_key, spec_2)
    assert_refused(ask_round(coordinator, small_key, spec_2, members(own_2, spec_2, "owner-b")),
                   "policy:differencing")
    assert ask_round(coordinator, small_key, spec_2, members(own_2, spec_2, "owner-b", "owner-c")).status_code == 202

    # The ledger outlives the process: a new app on the same state dir still refuses.
    restarted = owner_app(tmp_path, min_peers=2)
    again = enrolled(restarted)
    spec_3 = make_spec(small_key, "job-3")
    own_3 = joined_member(again, small_key, spec_3)
    assert_refused(ask_round(again, small_key, spec_3, members(own_3, spec_3, "owner-c")), "policy:differencing")
    assert served(restarted) == [["owner-a", "owner-b", "owner-c"]]


# -- crafted jobs and rounds (section 7) --------------------------------------------------------

def test_weights_wider_than_the_policy_allows_are_refused(tmp_path, small_key):
    """Wide weights let a model creator read several statistics from one coordinate."""
    app = owner_app(tmp_path)
    spec = make_spec(small_key, weight_bits=40)
    assert spec.weight_bits + spec.weight_frac_bits > 64
    assert_refused(join(enrolled(app), small_key, spec), "policy:max_weight_bits")
    assert "72" in newest_refusal(app)["detail"]
    narrow = owner_app(tmp_path, "owner-narrow", max_weight_bits=32)
    assert_refused(join(enrolled(narrow), small_key, make_spec(small_key)), "policy:max_weight_bits")
    assert joined_member(enrolled(owner_app(tmp_path, "owner-wide", max_weight_bits=40)), small_key,
                         make_spec(small_key))


def test_rounds_beyond_max_rounds_are_refused(tmp_path, small_key):
    app = owner_app(tmp_path, max_rounds=2)
    coordinator = enrolled(app)
    spec = make_spec(small_key)
    members = [joined_member(coordinator, small_key, spec)]
    assert ask_round(coordinator, small_key, spec, members, 0).status_code == 202
    assert ask_round(coordinator, small_key, spec, members, 1).status_code == 202
    assert_refused(ask_round(coordinator, small_key, spec, members, 2), "policy:max_rounds")
    assert_refused(ask_round(coordinator, small_key, spec, members, 999), "policy:max_rounds")
    assert newest_refusal(app)["round"] == 999


@pytest.mark.parametrize(
    ("features", "label", "column"),
    [
        pytest.param(DIABETES_FEATURES, DIABETES_LABEL, "bmi", id="feature"),
        pytest.param(["age", "sex"], "bmi", "bmi", id="label"),
    ],
)
def test_a_column_the_policy_does_not_publish_is_refused(tmp_path, small_key, features, label, column):
    published = [name for name in DIABETES_COLUMNS if name != "bmi"]
    app = owner_app(tmp_path, allow_columns=published)
    coordinator = enrolled(app)
    assert_refused(join(coordinator, small_key, make_spec(small_key, features=features, label=label)),
                   f"policy:columns (column '{column}')")
    assert newest_refusal(app)["column"] == column
    joined_member(coordinator, small_key, make_spec(small_key, features=["age", "sex", "bp"]))


def test_a_model_the_policy_does_not_serve_is_refused(tmp_path, small_key):
    app = owner_app(tmp_path, allow_models=["logistic_regression"])
    assert_refused(join(enrolled(app), small_key, make_spec(small_key)), "policy:model")


# -- refusals that would leak (section 7) -------------------------------------------------------

LEAKS = [
    pytest.param(f"{DIABETES_HEADER}\n{ROW}\n", dict(features=["age", "glucose"]), "linear_regression",
                 "missing_column (column 'glucose')", "glucose", ["missing column 'glucose'", "the header has"],
                 id="missing-column"),
    pytest.param(f"{DIABETES_HEADER}\n{ROW}\n{ROW.replace(',101,', ',NaN,')}\n", {}, "linear_regression",
                 "bad_value (column 'bp')", "bp", ["row 2, column 'bp'", "not a finite number"], id="nan"),
    pytest.param(f"{DIABETES_HEADER}\n{ROW.rsplit(',', 1)[0]},1\n{ROW}\n", {}, "logistic_regression",
                 "not_binary (column 'progression')", "progression", ["row 2, column 'progression'"],
                 id="non-binary-label"),
    pytest.param(f"{DIABETES_HEADER}\n{ROW}\n", dict(value_bits=80), "linear_regression", "bound_exceeded", None,
                 ["does not fit"], id="tiny-slots"),
]


@pytest.mark.parametrize(("content", "options", "model", "refusal", "column", "details"), LEAKS)
def test_a_provoked_refusal_tells_the_coordinator_only_a_code(tmp_path, small_key, content, options, model, refusal,
                                                               column, details):
    data = tmp_path / "private" / "owner-a-records.csv"
    data.parent.mkdir()
    data.write_text(content)
    app = owner_app(tmp_path, data=data)
    spec = make_spec(small_key, **options).model_copy(update={"model": model})
    assert_reveals_nothing(join(enrolled(app), small_key, spec), data, refusal, column)

    event = newest_refusal(app)
    assert event["code"] == refusal.split(" ")[0] and event["column"] == column
    assert str(data) in event["detail"]
    for detail in details:
        assert detail in event["detail"]
    # The details are the operator's alone.
    assert_json_error(app.test_client().get("/status"), 401, "credentials")
    assert_json_error(enrolled(app).get("/status"), 403, "may not call GET /status")
    assert_json_error(client_with(app, "the-coordinators-guess").get("/status"), 401, "credentials")


# -- masks (section 9) --------------------------------------------------------------------------

def test_only_the_sum_over_the_whole_member_set_can_be_decrypted(tmp_path, stub_peer, small_key):
    """Two owners, each masked with the other: their product decrypts to the plain sum, one alone to noise."""
    coordinator = stub_peer()
    shards = {"owner-a": SHIPPED / "owner_a.csv", "owner-b": SHIPPED / "owner_b.csv"}
    apps = {name: owner_app(tmp_path, name, data, coordinator.url, min_peers=2) for name, data in shards.items()}
    clients = {name: enrolled(app) for name, app in apps.items()}
    spec = make_spec(small_key)
    members = [joined_member(client, small_key, spec) for client in clients.values()]
    weights = [3 << 30, 1 << 32, 0, 5, 1 << 20, 7, 2 << 32, 1, 0, 9, 4 << 31]
    body = round_request(small_key, spec, members, 0, 1, weights)
    for client in clients.values():
        assert client.post(f"/jobs/{spec.job_id}/rounds", json=body).status_code == 202

    replies = coordinator.wait_for(lambda r: r.path == "/jobs/job-1/rounds/0/contributions", count=2)
    ciphertexts = {reply.body["data_owner"]: decode_ciphertexts(reply.body["ciphertexts"], small_key.public_key,
                                                                "reply", spec.reply_ciphertexts())
                   for reply in replies}
    assert set(ciphertexts) == set(shards)
    nsquare = small_key.public_key.nsquare
    product = [a * b % nsquare for a, b in zip(ciphertexts["owner-a"], ciphertexts["owner-b"], strict=True)]
    count, sums = unpack_sum([small_key.raw_decrypt(c) for c in product], spec.layout, spec.reply_values(), "sum")

    expected_rows, expected_gradient = 0, [0] * spec.dimension
    for data in shards.values():
        features, labels = load_columns(data, spec.features, spec.label)
        statistics = EncryptedAffineMap.prepare(spec, features, labels, str(data))
        expected_rows += statistics.row_count
        for index, (row, offset) in enumerate(zip(statistics.matrix, statistics.offset, strict=True)):
            expected_gradient[index] += sum(a * w for a, w in zip(row, weights, strict=True)) - offset
    assert count == 2
    assert sums == [expected_rows, *expected_gradient]
    assert expected_rows == sum(len(data.read_text().splitlines()) - 1 for data in shards.values())

    for name, alone in ciphertexts.items():
        with pytest.raises(EncodingOverflow):
            unpack_sum([small_key.raw_decrypt(c) for c in alone], spec.layout, spec.reply_values(), name)
    for client in clients.values():
        client.delete("/jobs/job-1")
