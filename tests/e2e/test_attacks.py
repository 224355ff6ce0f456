"""Attacks that worked against the old main, performed as the attacker would, and refused now.

Each test takes the attacker's part through the interfaces the attacker has (PROTOCOL.md section 1):
a rogue coordinator holding the coordinator's database, a coordinator running the real coordinator
code with one change to its aggregation, a curious model creator choosing job parameters and the
owners' dropouts, a holder of the shared enrolment secret. Each shows the owner (or the model
creator) refusing with the expected code and the protected value never reaching the attacker.

1. Key substitution (section 2): a join under another key than the one the owner trusts.
2. Differencing (section 9): two sums over member sets that differ by one owner.
3. A forged contributor count or a repeated contribution (section 9): the masks do not cancel.
4. Refusals that leak (section 7): a refusal is a code, its details stay with the owner.
5. Identity hijack (section 9): another process enrolling under a running owner's name.
7. Crafted weights (section 7): weights too wide, and more rounds than the owner allows.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import (
    assert_finished_exact,
    assert_matches_lstsq,
    coordinator_job,
    get_json,
    load,
    lstsq_reference,
    pooled,
    post_model,
    read_table,
    running_federation,
    traffic_records,
    wait_coordinator_job,
)
from support import (
    CHECKOUT,
    DIABETES_FEATURES,
    DIABETES_LABEL,
    FAST_RETRIES,
    SHIPPED,
    SHIPPED_OWNER_NAMES,
    SHIPPED_OWNERS,
    design,
)

from common.crypto.identity import IdentityKey
from common.crypto.packing import pack_plain
from common.crypto.paillier import PrivateKey
from common.protocol.messages import Enrolment, JoinJob, PublicKeyMessage
from common.protocol.spec import JobSpec
from local_federation.cluster import LocalFederation, Party, free_port

pytestmark = pytest.mark.e2e

OWNER_DATA = dict(SHIPPED_OWNERS)
TEST_CSV = SHIPPED / "test.csv"
# What the impostor's log says each time the coordinator refuses to enrol it.
REFUSED_ENROLMENT = "HTTP 403: data owner 'owner_b' is enrolled with another identity key"
# What a gradient round's aggregate can decrypt to when it was not summed by the protocol
# (common/crypto/packing.py unpack_sum, model_creator/training.py absorb).
REJECTED_AGGREGATE = re.compile(
    r"round 0: (packed plaintext has bits beyond its slots|contributor count \d+ is outside"
    r"|value \d+ is outside what \d+ contributor\(s\) can sum|the aggregate sums \d+ data owner)"
)


# --------------------------------------------------------------------------------------------
# What the attackers hold and do
# --------------------------------------------------------------------------------------------

def coordinator_token(federation: LocalFederation, owner: str) -> str:
    """The token the coordinator presents to ``owner``, read from the coordinator's own database."""
    database = federation.workdir / "coordinator" / "coordinator.sqlite3"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT coordinator_token FROM data_owners WHERE name = ?", (owner,)).fetchone()
    assert row is not None, f"{owner} is not in the coordinator's database"
    return str(row[0])


def rogue_join(federation: LocalFederation, owner: str, job_id: str, key: PrivateKey) -> requests.Response:
    """PUT /jobs/<job_id> on ``owner`` as the coordinator, with a spec under ``key`` (the attacker's)."""
    spec = JobSpec.for_bounds(job_id, "linear_regression", DIABETES_FEATURES, DIABETES_LABEL, key.public_key,
                              data_bits=64, data_frac_bits=32, weight_bits=32, weight_frac_bits=32,
                              max_contributors=1000)
    body = JoinJob(spec=spec, public_key=PublicKeyMessage.of(key.public_key)).model_dump(mode="json")
    return federation.session.put(f"{federation.data_owner(owner).url}/jobs/{job_id}", json=body, timeout=30,
                                  headers={"Authorization": f"Bearer {coordinator_token(federation, owner)}"})


def model_creator_fingerprint(federation: LocalFederation) -> str:
    """The fingerprint of the model creator's key, as its operator would tell the owners' operators."""
    key_file = federation.workdir / "model_creator" / "paillier_private_key.json"
    return PrivateKey.from_json(json.loads(key_file.read_text())).public_key.fingerprint


def events_of(status: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    return [event for event in status["events"] if event["job_id"] == job_id]


def refusal_of(status: dict[str, Any], job_id: str, code: str) -> dict[str, Any]:
    """The owner's one record of refusing ``job_id`` with ``code`` (its status page, for its operator)."""
    refusals = [event for event in events_of(status, job_id) if event["outcome"] == "refused"]
    assert [event["code"] for event in refusals] == [code], f"{status['name']} recorded {refusals} for {job_id}"
    return refusals[0]


def refusal(code: str, at_join: bool = True) -> str:
    """How the coordinator records an owner's refusal of a job (or of a round): the call, its status, the code."""
    return rf"refused{' the job' if at_join else ''}: (?:[A-Z]+ \S+: HTTP 422: )?{re.escape(code)}"


def assert_refused_by(error: str, owners: list[str], code: str, at_join: bool = True) -> None:
    """Each owner's refusal with ``code`` is named in the job's ``error``, with nothing after the code."""
    for owner in owners:
        assert re.search(rf"(?:^|; ){owner}: {refusal(code, at_join)}(?:;|$)", error), f"{owner}, {code}: {error}"


def refused_job_everywhere(model: dict[str, Any], job: dict[str, Any], owners: list[str], code: str) -> None:
    """The job failed with every owner's refusal ``code`` recorded, and nothing was aggregated."""
    assert model["status"] == "failed", model
    assert model.get("coefficients") is None and not model.get("history"), model
    assert_refused_by(model["error"], owners, code)
    assert job["status"] == "failed", job
    assert job["rounds"] and all(entry["status"] == "failed" and not entry["contributors"]
                                 for entry in job["rounds"]), job["rounds"]
    for owner in owners:
        assert re.fullmatch(refusal(code), job["rounds"][0]["failures"][owner]), job["rounds"][0]["failures"]


def restart_owner_with(federation: LocalFederation, name: str, options: list[str]) -> None:
    """Restart owner ``name`` with ``options`` added to its command line; wait until it enrolled again."""
    owner = federation.data_owner(name)
    enrolments = owner.log_tail(10_000).count("enrolled with the coordinator")
    owner.stop()
    owner.arguments.extend(options)
    federation.start_party(owner)
    deadline = time.monotonic() + 60
    while owner.log_tail(10_000).count("enrolled with the coordinator") <= enrolments:
        assert time.monotonic() < deadline, f"{name} did not enrol again:\n{owner.log_tail()}"
        time.sleep(0.1)


def wait_logged(traffic_log: Path, offset: int, peer: str, timeout: float = 30) -> None:
    """Wait until the traffic log records the answer to a call on ``peer`` after ``offset``."""
    deadline = time.monotonic() + timeout
    while True:
        if any(record["direction"] == "answered" and record["peer"] == peer
               for record in traffic_records(traffic_log, offset)):
            return
        assert time.monotonic() < deadline, f"no answer to {peer} in {traffic_log}"
        time.sleep(0.1)


def aggregated_rounds(federation: LocalFederation, job_id: str) -> list[dict[str, Any]]:
    return [entry for entry in coordinator_job(federation, job_id)["rounds"] if entry["status"] == "aggregated"]


# --------------------------------------------------------------------------------------------
# The federation most attacks share: three shipped owners, trusting the model creator's key
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[LocalFederation]:
    """Three shipped owners with default policies and a coordinator traffic log, after one exact job."""
    directory = tmp_path_factory.mktemp("attacks")
    with running_federation(directory / "federation", SHIPPED_OWNERS, TEST_CSV, environment=dict(FAST_RETRIES),
                            coordinator_traffic_log=directory / "coordinator_traffic.jsonl") as federation:
        first = post_model(federation, None)
        assert_finished_exact(first, SHIPPED_OWNER_NAMES, DIABETES_FEATURES)
        yield federation


# --- 1. Key substitution -----------------------------------------------------------------------

def test_rogue_coordinator_cannot_substitute_its_own_key(shared):
    trusted = model_creator_fingerprint(shared)
    rogue = PrivateKey.generate(1024)
    for number, owner in enumerate(SHIPPED_OWNER_NAMES):
        job_id = f"rogue-key-{number}"
        answer = rogue_join(shared, owner, job_id, rogue)
        # A refusal is the code and nothing else: no job key, nothing computed under the rogue key.
        assert answer.status_code == 422, answer.text
        assert answer.json() == {"error": "policy:key", "type": "Refused"}
        status = shared.owner_status(owner)
        assert status["trusted_key"]["fingerprint"] == trusted
        assert status["trusted_key"]["source"] == "trusted on first use"
        assert job_id not in status["jobs"]
        assert [event["outcome"] for event in events_of(status, job_id)] == ["refused"]
        detail = refusal_of(status, job_id, "policy:key")["detail"]
        assert rogue.public_key.fingerprint in detail and trusted in detail, detail


def test_pinned_owner_refuses_another_key_on_its_first_job_and_small_keys_without_the_test_flag(federation):
    # 2048-bit keys, so that no party runs with the test-only flag that accepts smaller ones.
    running = federation(SHIPPED_OWNERS[:1], key_bits=2048)
    real = model_creator_fingerprint(running)
    running.add_data_owner("pinned", OWNER_DATA["owner_b"], options=["--model-creator-key", real])

    rogue = PrivateKey.generate(2048)
    answer = rogue_join(running, "pinned", "rogue-first-job", rogue)
    assert answer.status_code == 422, answer.text
    assert answer.json() == {"error": "policy:key", "type": "Refused"}
    status = running.owner_status("pinned")
    assert status["trusted_key"]["fingerprint"] == real
    assert status["trusted_key"]["source"] == "pinned by the operator"
    detail = refusal_of(status, "rogue-first-job", "policy:key")["detail"]
    assert rogue.public_key.fingerprint in detail and real in detail, detail

    # An owner without the test-only flag refuses a 1024-bit key, and does not trust it on first use.
    small = PrivateKey.generate(1024)
    answer = rogue_join(running, "owner_a", "rogue-small-key", small)
    assert answer.status_code == 422, answer.text
    assert answer.json() == {"error": "policy:key_size", "type": "Refused"}
    status = running.owner_status("owner_a")
    assert status["trusted_key"] is None
    assert small.public_key.fingerprint in refusal_of(status, "rogue-small-key", "policy:key_size")["detail"]

    # The real key still trains at both, and becomes the one owner_a trusts.
    model = post_model(running, None)
    assert_finished_exact(model, ["owner_a", "pinned"], DIABETES_FEATURES)
    assert running.owner_status("owner_a")["trusted_key"]["fingerprint"] == real


def test_model_creator_refuses_to_start_with_a_1024_bit_key_without_the_test_flag(tmp_path):
    state_dir = tmp_path / "model_creator"
    result = subprocess.run(
        [str(CHECKOUT / "run_model_deployer.sh"), "--key-bits", "1024", "--port", str(free_port()),
         "--state-dir", str(state_dir), "--secrets-file", str(tmp_path / "model_creator.json")],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert result.returncode != 0, result
    assert "KEY_BITS" in result.stderr and "--test-only-small-keys" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (state_dir / "paillier_private_key.json").exists()


# --- 4. Refusals that leak -----------------------------------------------------------------------

ABSOLUTE_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.-]+/)+[\w.-]+")
ROW_NUMBER = re.compile(r"(?i)\b(?:row|line|record)s?\b\W{0,3}(?:number|no)?\W{0,3}\d+")
# Ciphertexts, moduli and fingerprints: whole JSON strings of base64 or hexadecimal.
OPAQUE = re.compile(r'"(?:[A-Za-z0-9+/]{40,}={0,2}|[0-9a-f]{40,})"')
PUBLISHED_COLUMNS = re.compile(r'"columns":\[[^\]]*\]')
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
SIGNIFICANT_DIGITS = 6


def first_digits(value: float, count: int = SIGNIFICANT_DIGITS) -> set[str]:
    """The first ``count`` significant digits of ``value``, truncated and rounded."""
    truncated = repr(abs(float(value))).split("e")[0].replace(".", "").lstrip("0")[:count]
    rounded = f"{abs(float(value)):.{count - 1}e}".split("e")[0].replace(".", "")
    return {truncated, rounded}


def leaked_form(text: str, value: float) -> str | None:
    """How ``text`` gives ``value`` away to 6 significant digits: as a digit string or as any number close to it."""
    for digits in first_digits(value):
        if digits in text:
            return digits
    for token in NUMBER.findall(text):
        if math.isclose(float(token), abs(value), rel_tol=0.5 * 10 ** (1 - SIGNIFICANT_DIGITS)):
            return token
    return None


def test_refusals_carry_a_code_and_nothing_of_the_owners_data(shared):
    features = ["bmi", "bp", "s5"]
    headers = {name: read_table(path)[0] for name, path in SHIPPED_OWNERS}
    other_columns = sorted({column for header in headers.values() for column in header}
                           - {*features, DIABETES_LABEL})
    assert other_columns, "the job must leave some of the shards' columns out"
    largest = {}
    for name, path in SHIPPED_OWNERS:
        x, _ = load(path, features, DIABETES_LABEL)
        gram = design(x).T @ design(x)
        largest[name] = float(np.max(np.abs(gram)))

    traffic_log = shared.coordinator_traffic_log
    offset = traffic_log.stat().st_size
    creator = shared.model_creator
    creator.stop()
    # A curious model creator's one change: a single integer bit for the owners' statistics.
    shared.start_party(creator, {"FT_MODEL_CREATOR_DATA_BITS": "1"})
    try:
        model = post_model(shared, {"features": features, "label": DIABETES_LABEL})
        job = wait_coordinator_job(shared, model["model_id"])
        wait_logged(traffic_log, offset, f"/jobs/{model['model_id']}/finish")
    finally:
        creator.stop()
        shared.start_party(creator)

    records = traffic_records(traffic_log, offset)
    # The registry's column names are what each owner publishes at enrolment (the federation's
    # schema; these owners' policies publish their whole header): the one place names may stand.
    for record in records:
        if record["peer"].endswith("/data_owners") and record["body"].startswith('{"data_owners"'):
            registry = json.loads(record["body"])
            assert [sorted(entry["columns"]) for entry in registry["data_owners"]] == [
                sorted(headers[entry["name"]]) for entry in registry["data_owners"]]
            record["body"] = PUBLISHED_COLUMNS.sub('"columns":"<published>"', record["body"])
    held = [
        ("the model creator's GET /model", json.dumps(get_json(shared, f"{creator.url}/model/{model['model_id']}"))),
        ("the coordinator's GET /jobs", json.dumps(coordinator_job(shared, model["model_id"]))),
        *((f"the coordinator's traffic log ({record['direction']} {record['peer']})", record["body"])
          for record in records),
    ]
    assert len(records) > 5, "the traffic log recorded nothing of the job"
    workdir = str(shared.workdir.resolve())
    for where, text in held:
        for literal in (str(CHECKOUT), str(SHIPPED), workdir, ".csv", *(path.name for _, path in SHIPPED_OWNERS)):
            assert literal not in text, f"{where} holds {literal!r}: {text[:2000]}"
        readable = OPAQUE.sub('"<opaque>"', text)
        assert not ABSOLUTE_PATH.search(readable), f"{where} holds a path: {ABSOLUTE_PATH.search(readable)}"
        assert not ROW_NUMBER.search(readable), f"{where} holds a row number: {ROW_NUMBER.search(readable)}"
        for column in other_columns:
            assert not re.search(rf"(?<![A-Za-z0-9_]){re.escape(column)}(?![A-Za-z0-9_])", readable), (
                f"{where} names the shards' column {column!r}: {readable[:2000]}")
        for name, value in largest.items():
            leak = leaked_form(readable, value)
            assert leak is None, f"{where} holds {leak!r}, {name}'s largest XᵀX entry {value!r}: {readable[:2000]}"
    # The parties' logs hold nothing of the owners' files or values either.
    for party in (shared.coordinator, creator):
        text = party.log_path.read_text(errors="replace")
        for name, value in largest.items():
            assert OWNER_DATA[name].name not in text and str(shared.workdir / f"data_owner_{name}") not in text
            leak = leaked_form(OPAQUE.sub('"<opaque>"', text), value)
            assert leak is None, f"{party.name}'s log holds {leak!r}, {name}'s largest XᵀX entry {value!r}"
    # What they hold is the code alone, each owner's, and nothing was aggregated.
    refused_job_everywhere(model, job, SHIPPED_OWNER_NAMES, "bound_exceeded")

    # The owner's operator has the details: the file and the quantity that does not fit.
    for name, value in largest.items():
        detail = refusal_of(shared.owner_status(name), model["model_id"], "bound_exceeded")["detail"]
        assert str(OWNER_DATA[name]) in detail and "XᵀX" in detail and f"{value:.6g}" in detail, detail


# --- 5. Identity hijack --------------------------------------------------------------------------

def test_a_second_process_under_a_running_owners_name_is_refused_enrolment(shared):
    coordinator_url = shared.coordinator.url
    real_url = shared.data_owner("owner_b").url
    enrolment_secret = shared.secrets["enrolment_secret"]

    # Whoever holds the shared enrolment secret enrols the name under another identity key: 403.
    forged = Enrolment.signed("owner_b", "http://127.0.0.1:9", IdentityKey(Ed25519PrivateKey.generate()),
                              time.time())
    answer = shared.session.post(f"{coordinator_url}/data_owners", json=forged.model_dump(mode="json"),
                                 headers={"Authorization": f"Bearer {enrolment_secret}"}, timeout=30)
    assert answer.status_code == 403, answer.text
    assert "another identity key" in answer.json()["error"]

    # The same with a real data owner process: same name and secret, its own state dir (and key).
    state_dir = shared.workdir / "impostor"
    impostor = Party("impostor", "data_owner", free_port(),
                     ["--name", "owner_b", "--data", str(OWNER_DATA["owner_b"]), "--coordinator", coordinator_url,
                      "--state-dir", str(state_dir), "--secrets-file", str(shared.secrets_file("data_owner")),
                      "--test-only-small-keys"],
                     shared.workdir / "impostor.log")
    impostor.start({**os.environ, **shared.environment, "FT_DATA_OWNER_REGISTER_INTERVAL": "0.2"})
    try:
        shared.wait_healthy(impostor)
        deadline = time.monotonic() + 30
        while impostor.log_tail(1000).count(REFUSED_ENROLMENT) < 3:
            assert time.monotonic() < deadline, f"the impostor was not refused repeatedly:\n{impostor.log_tail()}"
            time.sleep(0.1)
        assert "enrolled with the coordinator" not in impostor.log_tail(1000)
        registry = get_json(shared, f"{coordinator_url}/data_owners", shared.bearer("model_creator_token"))
        assert {entry["name"]: entry["url"] for entry in registry["data_owners"]}["owner_b"] == real_url

        # The real owner keeps its place: a job still has all three owners and is exact.
        model = post_model(shared, None)
        assert_finished_exact(model, SHIPPED_OWNER_NAMES, DIABETES_FEATURES)
        x, y = pooled([path for _, path in SHIPPED_OWNERS], DIABETES_FEATURES, DIABETES_LABEL)
        assert_matches_lstsq(model, DIABETES_FEATURES, lstsq_reference(x, y))
        assert any(event["outcome"] == "contributed"
                   for event in events_of(shared.owner_status("owner_b"), model["model_id"]))

        # The impostor was never asked to join a job, let alone to answer a round.
        token = (state_dir / "operator_token").read_text().strip()
        status = shared.session.get(f"{impostor.url}/status", headers={"Authorization": f"Bearer {token}"},
                                    timeout=30).json()
        assert status["name"] == "owner_b"
        assert status["identity_key"] != shared.owner_status("owner_b")["identity_key"]
        assert (status["events"], status["jobs"], status["served_sets"]) == ([], [], [])
    finally:
        impostor.stop()


# --- 7. Crafted weights --------------------------------------------------------------------------

def test_weights_wider_than_the_owners_allow_are_refused(shared):
    model = post_model(shared, {"max_abs_weight": 2.0**100})
    job = wait_coordinator_job(shared, model["model_id"])
    refused_job_everywhere(model, job, SHIPPED_OWNER_NAMES, "policy:max_weight_bits")
    for name in SHIPPED_OWNER_NAMES:
        detail = refusal_of(shared.owner_status(name), model["model_id"], "policy:max_weight_bits")["detail"]
        assert "132 bits" in detail and "64" in detail, detail


def test_more_rounds_than_the_owners_allow_are_refused(federation):
    running = federation(SHIPPED_OWNERS, owner_options=["--max-rounds", "3"], environment=dict(FAST_RETRIES))
    model = post_model(running, None)
    assert model["status"] == "failed", model
    assert model.get("coefficients") is None
    assert [entry["round"] for entry in model["history"]] == [0, 1, 2]
    assert "round 3: not aggregated" in model["error"], model["error"]
    assert_refused_by(model["error"], SHIPPED_OWNER_NAMES, "policy:max_rounds", at_join=False)
    for name in SHIPPED_OWNER_NAMES:
        detail = refusal_of(running.owner_status(name), model["model_id"], "policy:max_rounds")["detail"]
        assert "round 3" in detail, detail
    job = wait_coordinator_job(running, model["model_id"])
    assert [entry["status"] for entry in job["rounds"]] == ["aggregated"] * 3 + ["failed"]


# --- 2. Differencing -----------------------------------------------------------------------------

def test_sums_over_member_sets_differing_by_one_owner_are_refused(federation):
    running = federation(SHIPPED_OWNERS, owner_options=["--min-peers", "2"], environment=dict(FAST_RETRIES))
    first = post_model(running, None)
    assert_finished_exact(first, SHIPPED_OWNER_NAMES, DIABETES_FEATURES)
    everyone = sorted(SHIPPED_OWNER_NAMES)

    # The model creator asks for a column owner_c does not publish: the round would run over a and b.
    restart_owner_with(running, "owner_c", ["--allow-columns", ",".join(
        column for column in [*DIABETES_FEATURES, DIABETES_LABEL] if column != "s6")])
    without_column = post_model(running, None)
    # ... or owner_c drops out, and the round runs without it.
    running.data_owner("owner_c").stop()
    dropout = post_model(running, {"features": DIABETES_FEATURES[:-1]})

    for model in (without_column, dropout):
        assert model["status"] == "failed", model
        assert model.get("coefficients") is None and not model["history"], model
        assert_refused_by(model["error"], ["owner_a", "owner_b"], "policy:differencing", at_join=False)
        job = wait_coordinator_job(running, model["model_id"])
        assert job["status"] == "failed" and not aggregated_rounds(running, model["model_id"]), job
    assert_refused_by(without_column["error"], ["owner_c"], "policy:columns (column 's6')")

    # Nothing over {owner_a, owner_b} was ever aggregated, delivered or served.
    models = get_json(running, f"{running.model_creator.url}/models")["models"]
    assert len(models) == 3
    for listed in models:
        model = get_json(running, f"{running.model_creator.url}/model/{listed['model_id']}")
        assert all(sorted(entry["data_owners"]) == everyone for entry in model["history"] or []), model
        for entry in aggregated_rounds(running, model["model_id"]):
            assert sorted(entry["contributors"]) == everyone, entry
    for name in ("owner_a", "owner_b"):
        status = running.owner_status(name)
        assert [served["members"] for served in status["served_sets"]] == [everyone]
        for model in (without_column, dropout):
            detail = refusal_of(status, model["model_id"], "policy:differencing")["detail"]
            assert "owner_c" in detail and "differ by 1" in detail, detail


# --- 3. A coordinator that fakes the contributor count --------------------------------------------

@contextmanager
def coordinator_in_process(federation: LocalFederation) -> Iterator[Any]:
    """The real coordinator code, on the stopped coordinator's port, state and secrets; yields its round runner."""
    from cheroot import wsgi

    from coordinator import create_app

    party = federation.coordinator
    app = create_app({"STATE_DIR": str(federation.workdir / "coordinator"),
                      "SECRETS_FILE": str(federation.secrets_file("coordinator")), "PUBLIC_URL": party.url,
                      "TEST_ONLY_SMALL_KEYS": True, "RETRY_DELAY": 0.1, "ROUND_TIMEOUT": 60})
    server = wsgi.Server((party.host, party.port), app, numthreads=8)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="hostile-coordinator", daemon=True)
    thread.start()
    runner = app.extensions["round_runner"]
    try:
        deadline = time.monotonic() + 30
        while federation.session.get(f"{party.url}/health", timeout=2).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield runner
    finally:
        server.stop()
        thread.join(10)
        runner.worker.shutdown()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Iterator[tuple[LocalFederation, Any]]:
    """Two shipped owners and a model creator (real processes) served by a coordinator the attacker runs."""
    directory = tmp_path_factory.mktemp("hostile")
    with running_federation(directory / "federation", SHIPPED_OWNERS[:2], TEST_CSV) as federation:
        federation.coordinator.stop()
        with coordinator_in_process(federation) as runner:
            yield federation, runner


def attacking(runner: Any, monkeypatch, tamper: Callable[[Any, Any, dict[str, Any]], dict[str, Any]]) -> list[int]:
    """Replace what the runner aggregates with ``tamper(job, state, replies)``; returns the rounds tampered with."""
    honest = runner._aggregate
    tampered: list[int] = []

    def aggregate(job, state, decision, replies, keys, seconds):
        tampered.append(state.round)
        honest(job, state, decision, tamper(job, state, replies), keys, seconds)

    monkeypatch.setattr(runner, "_aggregate", aggregate)
    return tampered


def assert_aggregate_rejected(federation: LocalFederation, model: dict[str, Any], tampered: list[int]) -> None:
    assert model["status"] == "failed", f"the model creator took forged aggregates of rounds {tampered}: {model}"
    assert tampered == [0], tampered
    assert REJECTED_AGGREGATE.search(model["error"]), model["error"]
    assert model.get("coefficients") is None and not model["history"], model
    answer = federation.session.get(f"{federation.model_creator.url}/prediction",
                                    params={"model_id": model["model_id"]}, timeout=30)
    assert 400 <= answer.status_code < 500, answer.text


def test_the_hostile_coordinator_trains_exactly_while_it_is_honest(hostile):
    federation, _ = hostile
    model = post_model(federation, {"min_data_owners": 2})
    assert_finished_exact(model, ["owner_a", "owner_b"], DIABETES_FEATURES)
    x, y = pooled([OWNER_DATA["owner_a"], OWNER_DATA["owner_b"]], DIABETES_FEATURES, DIABETES_LABEL)
    assert_matches_lstsq(model, DIABETES_FEATURES, lstsq_reference(x, y))


def test_one_owners_contribution_passed_off_as_two_is_rejected(hostile, monkeypatch):
    federation, runner = hostile

    def forge(job, state, replies):
        # owner_a's reply times the coordinator's own encryption of (count 1, zeros), in owner_b's place.
        zeros = pack_plain([0] * job.spec.reply_values(state.kind), job.spec.layout)
        return {"owner_a": replies["owner_a"], "owner_b": [job.public_key.raw_encrypt(p) for p in zeros]}

    tampered = attacking(runner, monkeypatch, forge)
    model = post_model(federation, {"min_data_owners": 2})
    assert_aggregate_rejected(federation, model, tampered)


def test_one_owners_reply_squared_is_rejected(hostile, monkeypatch):
    federation, runner = hostile
    tampered = attacking(runner, monkeypatch,
                         lambda job, state, replies: {"owner_a": replies["owner_a"], "owner_b": replies["owner_a"]})
    model = post_model(federation, {"min_data_owners": 2})
    assert_aggregate_rejected(federation, model, tampered)
