"""Faults injected into real federations: parties restarted or killed mid-job, or away when a job is posted.

Gradient descent is deterministic here (fixed-point weights, exact sums), so a job interrupted by
a restart must end with exactly the coefficients of the same job run without one: any round lost
or counted twice would show. The exact solver must still match least squares on the owners of
its final rounds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import numpy as np
import pytest
from e2e_support import restart_owner_while_the_job_waits
from support import DIABETES_FEATURES, DIABETES_LABEL, SHIPPED, SHIPPED_OWNERS_ABC

from common.dataset import load_columns
from local_federation.cluster import LocalFederation

pytestmark = pytest.mark.e2e

GD_JOB = {"optimizer": "gd", "learning_rate": 1e-5, "max_rounds": 40}


@pytest.fixture
def federation_factory(tmp_path) -> Iterator:
    started: list[LocalFederation] = []

    def start(**options) -> LocalFederation:
        federation = LocalFederation(tmp_path / f"federation{len(started)}", SHIPPED_OWNERS_ABC,
                                     test_data=SHIPPED / "test.csv", key_bits=1024, **options)
        started.append(federation)
        return federation.start()

    yield start
    for federation in started:
        federation.stop()


def _start(federation: LocalFederation, body: dict) -> str:
    answer = federation.session.post(f"{federation.model_creator.url}/model", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    return answer.json()["model_id"]


def _wait_for_round(federation: LocalFederation, model_id: str, round_number: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        model = federation.session.get(f"{federation.model_creator.url}/model/{model_id}", timeout=10).json()
        assert model["status"] in ("pending", "running"), model.get("error")
        if model["round"] >= round_number:
            return
        time.sleep(0.02)
    raise TimeoutError(f"round {round_number} not reached")


def _assert_rounds_once_each(model: dict, count: int, federation: LocalFederation) -> None:
    logs = "\n".join(f"--- {party.name}\n{party.log_tail(15)}" for party in federation.parties.values())
    assert model["status"] == "finished", f"{model.get('error')}\n{logs}"
    assert [entry["round"] for entry in model["history"]] == list(range(count))
    assert model["round"] == count


@pytest.mark.parametrize("party", ["model_creator", "coordinator"])
def test_restart_mid_job_resumes_without_losing_or_repeating_a_round(federation_factory, party):
    federation = federation_factory()
    reference = federation.train(GD_JOB)
    _assert_rounds_once_each(reference, GD_JOB["max_rounds"], federation)

    model_id = _start(federation, GD_JOB)
    _wait_for_round(federation, model_id, 8)
    federation.restart(federation.parties[party], down_seconds=1.0)
    model = federation.wait_model(model_id, timeout=180)

    _assert_rounds_once_each(model, GD_JOB["max_rounds"], federation)
    assert model["coefficients"] == reference["coefficients"]
    assert model["data_owners"] == ["a", "b", "c"]


def test_exact_job_survives_a_model_creator_restart(federation_factory):
    federation = federation_factory(environment={"FT_DATA_OWNER_WORKER_PROCESSES": "1"})
    model_id = _start(federation, {})
    _wait_for_round(federation, model_id, 3)
    federation.restart(federation.model_creator, down_seconds=0.5)
    model = federation.wait_model(model_id, timeout=180)

    _assert_rounds_once_each(model, len(DIABETES_FEATURES) + 2, federation)
    parts = [load_columns(path, DIABETES_FEATURES, DIABETES_LABEL) for _, path in SHIPPED_OWNERS_ABC]
    design = np.hstack([np.ones((400, 1)), np.vstack([x for x, _ in parts])])
    expected = np.linalg.lstsq(design, np.concatenate([y for _, y in parts]), rcond=None)[0]
    got = [model["coefficients"][name] for name in ["intercept", *DIABETES_FEATURES]]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_owner_killed_and_restarted_mid_job_rejoins(federation_factory):
    federation = federation_factory(environment={"FT_COORDINATOR_ROUND_TIMEOUT": "2",
                                                 "FT_COORDINATOR_RETRY_DELAY": "0.2"})
    # The job waits at round 10 for the owner's restart, so that rounds are left to rejoin in.
    body = {**GD_JOB, "max_rounds": 200, "min_data_owners": 2}
    model_id = _start(federation, body)
    _wait_for_round(federation, model_id, 5)
    owner = federation.data_owner("c")
    owner.stop()
    _wait_for_round(federation, model_id, 10)
    restart_owner_while_the_job_waits(federation, "c")
    model = federation.wait_model(model_id, timeout=180)

    _assert_rounds_once_each(model, 200, federation)
    history = model["history"]
    missing = [entry for entry in history if entry["data_owners"] == ["a", "b"]]
    assert missing, "owner c was never missing"
    assert all("c" in entry["failures"] for entry in missing)
    assert history[-1]["data_owners"] == ["a", "b", "c"], "owner c did not rejoin"
    rejoined = next(i for i, entry in enumerate(history) if i > history.index(missing[-1]))
    assert history[rejoined]["data_owners"] == ["a", "b", "c"]


@pytest.mark.parametrize("fault", ["killed", "stopped"])
def test_post_model_answers_at_once_while_the_coordinator_is_away_and_the_job_runs_when_it_is_back(
        federation_factory, fault):
    """The column check of ``POST /model`` asks the coordinator once, briefly: the job is accepted with a warning.

    It asked through the jobs' own client, with its full retry budget: about a minute while the
    coordinator was down, and its read timeout (30 s) while it was stopped.
    """
    federation = federation_factory(environment={"FT_MODEL_CREATOR_RECONCILE_INTERVAL": "1"})
    coordinator = federation.coordinator
    assert coordinator.process is not None
    if fault == "killed":
        coordinator.process.kill()
        coordinator.process.wait(10)
    else:
        os.kill(coordinator.process.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        answer = federation.session.post(f"{federation.model_creator.url}/model", json=GD_JOB, timeout=30)
        elapsed = time.monotonic() - began
    finally:
        if fault == "stopped":
            os.kill(coordinator.process.pid, signal.SIGCONT)
    assert answer.status_code == 202, answer.text
    assert elapsed < 3 + 2, f"POST /model took {elapsed:.1f} s with the coordinator {fault}"
    assert answer.json()["warnings"] == [
        f"the job's columns were not checked against the federation: the coordinator ({coordinator.url}) not"
        " reached within 3 s; the job opens there once it answers, and each data owner checks its own columns"
        " when it joins"
    ]
    if fault == "killed":
        federation.start_party(coordinator)
    model = federation.wait_model(answer.json()["model_id"], timeout=180)
    assert model["status"] == "finished", model.get("error")
    assert model["round"] == GD_JOB["max_rounds"]
