"""Differential privacy enforced by each data owner (PROTOCOL.md section 8), against real processes.

Three shipped owners started with ``--dp-epsilon 1 --dp-delta 1e-5 --privacy-budget 1.6`` (a
budget of exactly two jobs):

* a job with the shipped bounds (data/diabetes/dp_job.json) trains; the model reports each
  owner's (ε, δ) and the regularisation it used, and its coefficients are exactly the AdaSSP
  solution of the releases the owners' ledgers hold: every round was post-processing of them;
* a job without bounds is refused by every owner with ``policy:bounds``, and costs nothing;
* the averaging attack: a coordinator (holding the coordinator's database and the model
  creator's key) joins an owner to a finished job again, before and after restarting it, and asks
  it for the job's statistics each time; both answers decrypt to the same noisy sums, those of the
  owner's stored release, and the budget is not charged again;
* after every party restarted, the second job trains and the third is refused with
  ``policy:budget`` by every owner, whose status shows the two charges and nothing left.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e_support import (
    assert_matches_lstsq,
    coordinator_job,
    lstsq_reference,
    pooled,
    post_model,
    running_federation,
    traffic_records,
)
from support import DIABETES_FEATURES, DIABETES_LABEL, FAST_RETRIES, SHIPPED, SHIPPED_OWNER_NAMES, SHIPPED_OWNERS

from common.crypto.packing import unpack_sum
from common.crypto.paillier import PrivateKey
from common.protocol.messages import JobJoined, JoinJob, PublicKeyMessage, ciphertexts_under
from common.protocol.scales import unscaled_coefficients
from common.protocol.spec import STATISTICS, JobSpec
from data_owner.accounting import epsilon_of, rho_for
from data_owner.release import NoisyRelease
from local_federation.cluster import LocalFederation
from model_creator.noisy_statistics import NoiseModel, solve_adassp

pytestmark = pytest.mark.e2e

DP_JOB = json.loads((SHIPPED / "dp_job.json").read_text())
DP_OPTIONS = ["--dp-epsilon", "1", "--dp-delta", "1e-5", "--privacy-budget", "1.6"]


def ledger_releases(federation: LocalFederation, owner: str, job_id: str) -> list[NoisyRelease]:
    """The releases an owner's ledger holds for a job, read as the owner's operator would."""
    database = federation.workdir / f"data_owner_{owner}" / "ledger.sqlite3"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT release FROM releases WHERE job_id = ?", (job_id,)).fetchall()
    return [NoisyRelease.from_json(json.loads(row[0])) for row in rows]


def job_spec(federation: LocalFederation, job_id: str) -> JobSpec:
    """The job's spec as the coordinator stored it (what a rogue coordinator would replay)."""
    database = federation.workdir / "coordinator" / "coordinator.sqlite3"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        (spec,) = db.execute("SELECT spec FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return JobSpec.model_validate_json(spec)


def coordinator_token(federation: LocalFederation, owner: str) -> str:
    database = federation.workdir / "coordinator" / "coordinator.sqlite3"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        (token,) = db.execute("SELECT coordinator_token FROM data_owners WHERE name = ?", (owner,)).fetchone()
    return str(token)


def model_creator_key(federation: LocalFederation) -> PrivateKey:
    key_file = federation.workdir / "model_creator" / "paillier_private_key.json"
    return PrivateKey.from_json(json.loads(key_file.read_text()))


@pytest.fixture(scope="module")
def dp_federation(tmp_path_factory) -> Iterator[tuple[LocalFederation, dict[str, Any]]]:
    """The three private owners after the first job (with the shipped bounds) finished."""
    workdir = tmp_path_factory.mktemp("dp")
    with running_federation(workdir, SHIPPED_OWNERS, SHIPPED / "test.csv", owner_options=DP_OPTIONS,
                            environment=dict(FAST_RETRIES), coordinator_traffic_log=workdir / "traffic.jsonl") as fed:
        model = post_model(fed, DP_JOB)
        assert model["status"] == "finished", model.get("error")
        yield fed, model


def test_a_private_job_is_the_adassp_solution_of_the_owners_stored_releases(dp_federation):
    federation, model = dp_federation
    assert model["stop_reason"] == "exact on the noisy statistics: all directions probed, then regularised"
    assert len(model["history"]) == len(DIABETES_FEATURES) + 2
    privacy = model["privacy"]
    assert sorted(privacy["data_owners"]) == SHIPPED_OWNER_NAMES
    for declared in privacy["data_owners"].values():
        assert (declared["epsilon"], declared["delta"]) == (1.0, 1e-5)
        assert declared["rho"] == pytest.approx(rho_for(1.0, 1e-5), rel=1e-9)

    spec = job_spec(federation, model["model_id"])
    releases = {name: ledger_releases(federation, name, model["model_id"]) for name in SHIPPED_OWNER_NAMES}
    assert all(len(stored) == 1 for stored in releases.values()), releases
    encoded = [stored[0].encoded(spec) for stored in releases.values()]
    matrix = sum(np.array(e.matrix, dtype=float) for e in encoded) / 2**spec.data_frac_bits
    vector = sum(np.array(e.offset, dtype=float) for e in encoded) / 2**spec.gradient_frac_bits
    noise = NoiseModel.of(spec, {name: stored[0].declaration for name, stored in releases.items()})
    expected = solve_adassp(matrix, vector, noise)
    coefficients = [model["coefficients"][name] for name in ["intercept", *DIABETES_FEATURES]]
    unscaled = unscaled_coefficients(spec.feature_scales, spec.label_scale, list(map(Fraction, expected.coefficients)))
    np.testing.assert_allclose(coefficients, [float(c) for c in unscaled], rtol=1e-9)
    assert privacy["regularisation"]["lambda"] == pytest.approx(expected.strength, rel=1e-9)
    assert privacy["regularisation"]["tau"] == pytest.approx(noise.tau, rel=1e-9)
    # The noise is there: the exact pooled least squares is not what was trained.
    assert model["metrics"]["mse"] > 0

    for name in SHIPPED_OWNER_NAMES:
        ledger = federation.owner_status(name)["privacy"]
        assert [(c["job_id"], c["epsilon"], c["delta"]) for c in ledger["charges"]] == [(model["model_id"], 1.0, 1e-5)]
        assert ledger["charges"][0]["key_fingerprint"] == model_creator_key(federation).public_key.fingerprint
        assert ledger["jobs_remaining"] == 1 and ledger["budget_epsilon"] == 1.6


def test_a_private_owner_refuses_a_job_without_bounds_and_is_not_charged(dp_federation):
    federation, first = dp_federation
    model = post_model(federation, {"features": DIABETES_FEATURES[:4]})
    assert model["status"] == "failed"
    for name in SHIPPED_OWNER_NAMES:
        assert f"{name}: refused the job: PUT " in model["error"]
        assert model["error"].count("policy:bounds (column 'age')") == len(SHIPPED_OWNER_NAMES)
        status = federation.owner_status(name)
        assert [c["job_id"] for c in status["privacy"]["charges"]] == [first["model_id"]]
        refused = [e for e in status["events"] if e["job_id"] == model["model_id"] and e["outcome"] == "refused"]
        assert refused and "no bounds for column 'age'" in refused[0]["detail"]


def rejoin_and_ask_statistics(federation: LocalFederation, owner: str, spec: JobSpec, key: PrivateKey,
                              round_number: int) -> list[int]:
    """As a rogue coordinator: join ``owner`` to the job again, ask its statistics alone, decrypt the reply."""
    url = f"{federation.data_owner(owner).url}/jobs/{spec.job_id}"
    headers = {"Authorization": f"Bearer {coordinator_token(federation, owner)}"}
    body = JoinJob(spec=spec, public_key=PublicKeyMessage.of(key.public_key)).model_dump(mode="json")
    answer = federation.session.put(url, json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    joined = JobJoined.model_validate(answer.json())
    assert joined.member.privacy is not None and joined.member.privacy.epsilon == 1.0
    log = federation.coordinator_traffic_log
    assert log is not None
    offset = log.stat().st_size
    request = {"round": round_number, "attempt": 1, "kind": STATISTICS, "key_fingerprint": key.public_key.fingerprint,
               "members": [joined.member.model_dump(mode="json", exclude_none=True)]}
    asked = federation.session.post(f"{url}/rounds", json=request, headers=headers, timeout=30)
    assert asked.status_code == 202, asked.text
    path = f"/jobs/{spec.job_id}/rounds/{round_number}/contributions"
    for _ in range(300):
        received = traffic_records(log, offset)
        bodies = [r["body"] for r in received if r["direction"] == "received" and r["peer"].endswith(path)]
        if bodies:
            break
        federation.session.get(f"{federation.coordinator.url}/health", timeout=5)
    else:
        raise AssertionError(f"{owner} sent no statistics for {path}")
    contribution = json.loads(bodies[0])
    ciphertexts = ciphertexts_under(contribution["ciphertexts"], key.public_key, "ciphertexts", None)
    plaintexts = [key.raw_decrypt(c) for c in ciphertexts]
    contributors, values = unpack_sum(plaintexts, spec.layout, spec.reply_values(STATISTICS), "stolen reply")
    assert contributors == 1
    return values


def test_joining_a_job_again_gets_the_same_noise_even_across_a_restart(dp_federation):
    federation, model = dp_federation
    spec = job_spec(federation, model["model_id"])
    key = model_creator_key(federation)
    before = rejoin_and_ask_statistics(federation, "owner_a", spec, key, 50)
    federation.restart(federation.data_owner("owner_a"))
    after = rejoin_and_ask_statistics(federation, "owner_a", spec, key, 51)
    (stored,) = ledger_releases(federation, "owner_a", model["model_id"])
    assert before == after == list(stored.encoded(spec).feature_sums)
    # The stolen row count is the release's noisy one, not the file's.
    ledger = federation.owner_status("owner_a")["privacy"]
    assert [c["job_id"] for c in ledger["charges"]] == [model["model_id"]] and ledger["jobs_remaining"] == 1


def test_the_budget_survives_restarts_of_every_party_and_refuses_the_job_past_it(dp_federation):
    federation, first = dp_federation
    for party in list(federation.parties.values()):
        federation.restart(party)
    federation.wait_registered(SHIPPED_OWNER_NAMES)
    second = post_model(federation, DP_JOB)
    assert second["status"] == "finished", second.get("error")
    third = post_model(federation, DP_JOB)
    assert third["status"] == "failed" and not third.get("coefficients")
    assert third["error"].count("policy:budget") == len(SHIPPED_OWNER_NAMES), third["error"]
    job = coordinator_job(federation, third["model_id"])
    assert all(not entry["contributors"] for entry in job["rounds"]), job["rounds"]
    spent = epsilon_of(2 * rho_for(1.0, 1e-5), 1e-5)
    for name in SHIPPED_OWNER_NAMES:
        status = federation.owner_status(name)
        ledger = status["privacy"]
        assert [c["job_id"] for c in ledger["charges"]] == [first["model_id"], second["model_id"]]
        assert ledger["spent_epsilon"] == pytest.approx(spent) and ledger["jobs_remaining"] == 0
        assert ledger["remaining_epsilon"] == pytest.approx(1.6 - spent)
        refused = [e for e in status["events"] if e["job_id"] == third["model_id"] and e["outcome"] == "refused"]
        assert refused and refused[0]["code"] == "policy:budget"


def test_owners_without_privacy_flags_are_unchanged(tmp_path: Path):
    """The same job on owners without the flags: exact to 1e-6, no privacy report, no ledger."""
    with running_federation(tmp_path, SHIPPED_OWNERS, SHIPPED / "test.csv", environment=dict(FAST_RETRIES)) as fed:
        model = post_model(fed, DP_JOB)
        assert model["status"] == "finished" and model["stop_reason"] == "exact: all directions explored"
        reference = lstsq_reference(*pooled([path for _, path in SHIPPED_OWNERS], DIABETES_FEATURES, DIABETES_LABEL))
        assert_matches_lstsq(model, DIABETES_FEATURES, reference, rtol=1e-6)
        assert "privacy" not in model
        assert fed.owner_status("owner_a")["privacy"] is None


def test_a_one_shot_job_on_private_owners_is_one_round_solved_as_the_probing_solver_does(tmp_path: Path):
    options = ["--dp-epsilon", "2", "--dp-delta", "1e-5", "--privacy-budget", "4"]
    with running_federation(tmp_path, SHIPPED_OWNERS, SHIPPED / "test.csv", owner_options=options,
                            environment=dict(FAST_RETRIES)) as federation:
        model = post_model(federation, {**DP_JOB, "protocol": "one_shot"})
        assert model["status"] == "finished", model.get("error")
        assert [entry["kind"] for entry in model["history"]] == ["moments"]
        assert model["stop_reason"] == "solved from the summed noisy statistics, regularised"
        assert sorted(model["privacy"]["data_owners"]) == SHIPPED_OWNER_NAMES
        spec = job_spec(federation, model["model_id"])
        releases = {name: ledger_releases(federation, name, model["model_id"]) for name in SHIPPED_OWNER_NAMES}
        encoded = [stored[0].encoded(spec) for stored in releases.values()]
        matrix = sum(np.array(e.matrix, dtype=float) for e in encoded) / 2**spec.data_frac_bits
        vector = sum(np.array(e.offset, dtype=float) for e in encoded) / 2**spec.gradient_frac_bits
        noise = NoiseModel.of(spec, {name: stored[0].declaration for name, stored in releases.items()})
        expected = solve_adassp(matrix, vector, noise)
        unscaled = unscaled_coefficients(spec.feature_scales, spec.label_scale,
                                         list(map(Fraction, expected.coefficients)))
        coefficients = [model["coefficients"][name] for name in ["intercept", *DIABETES_FEATURES]]
        np.testing.assert_allclose(coefficients, [float(c) for c in unscaled], rtol=1e-9)
