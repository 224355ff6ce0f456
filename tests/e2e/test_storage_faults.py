"""A full disk at the coordinator or the model creator mid-job: the job waits and resumes, bit-identical.

Issue 12, defect 4: with the coordinator's disk full the job failed at round 43 (``sqlite3.
OperationalError: disk I/O error`` answered as a bare 500, which the model creator did not retry),
and the coordinator still listed the job as running after space was freed; it never resumed.

Now a write that fails is a 503 with ``Retry-After`` (retried by the caller within its budget);
a job it interrupts waits, and resumes from its last saved round once the store works again.
Gradient descent is deterministic here, so the resumed job must end with exactly the coefficients
of the same job run undisturbed: a round lost or counted twice would show.
"""

from __future__ import annotations

import re
import sqlite3
import time
from contextlib import closing

import pytest
from e2e_support import fill, small_tmpfs, wait_coordinator_job
from support import SHIPPED, SHIPPED_OWNERS_ABC

from local_federation.cluster import LocalFederation

pytestmark = pytest.mark.e2e

GD_JOB = {"optimizer": "gd", "learning_rate": 1e-5, "max_rounds": 30, "min_data_owners": 3}
# The model creator looks for interrupted jobs every second and orders a round again after 2 s.
QUICK_RECONCILE = {"FT_MODEL_CREATOR_RECONCILE_INTERVAL": "1", "FT_MODEL_CREATOR_REORDER_AFTER": "2",
                   "FT_COORDINATOR_RETRY_DELAY": "0.1"}
FAULT_SECONDS = 6


def _model(federation: LocalFederation, model_id: str) -> dict:
    answer = federation.session.get(f"{federation.model_creator.url}/model/{model_id}", timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _assert_unavailable(answer) -> None:
    """A storage fault's answer: 503, ``Retry-After``, and what to do."""
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "2"
    assert answer.json() == {"error": answer.json()["error"], "type": "StorageUnavailable"}
    assert "cannot use its state storage right now" in answer.json()["error"]
    assert "try again later" in answer.json()["error"]


def _wait_for_round(federation: LocalFederation, model_id: str, round_number: int) -> None:
    deadline = time.monotonic() + 120
    while _model(federation, model_id)["round"] < round_number:
        assert time.monotonic() < deadline, f"round {round_number} not reached"
        time.sleep(0.05)


@pytest.mark.parametrize("party", ["coordinator", "model_creator"])
def test_a_full_disk_mid_job_interrupts_it_and_it_resumes_to_the_undisturbed_model(tmp_path, party):
    workdir = tmp_path / "federation"
    with small_tmpfs(workdir / party, "3m") as state:
        federation = LocalFederation(workdir, SHIPPED_OWNERS_ABC, test_data=SHIPPED / "test.csv", key_bits=1024,
                                     environment=QUICK_RECONCILE)
        try:
            federation.start()
            reference = federation.train(GD_JOB)
            assert reference["status"] == "finished", reference.get("error")

            started = federation.session.post(f"{federation.model_creator.url}/model", json=GD_JOB, timeout=30)
            model_id = started.json()["model_id"]
            _wait_for_round(federation, model_id, 5)
            # The disk fills up while the write-ahead log is empty: the next commit needs new space.
            database = state / f"{party}.sqlite3"
            with closing(sqlite3.connect(database, timeout=30)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(state)
            time.sleep(FAULT_SECONDS)
            if party == "model_creator":
                # A new job cannot be stored: 503. What is stored can still be read (its connections
                # stay open, so a read needs no new space): the job as last saved, still running.
                _assert_unavailable(federation.session.post(f"{federation.model_creator.url}/model", json=GD_JOB,
                                                            timeout=60))
            during = _model(federation, model_id)
            assert during["status"] == "running" and 5 <= during["round"] < GD_JOB["max_rounds"], during
            assert [entry["round"] for entry in during["history"]] == list(range(during["round"])), during
            filler.unlink()

            model = federation.wait_model(model_id, timeout=180)
            logs = {name: party_.log_path.read_text(errors="replace") for name, party_ in federation.parties.items()}
            assert model["status"] == "finished", f"{model.get('error')}\n{logs[party][-3000:]}"
            assert model["coefficients"] == reference["coefficients"]
            assert [entry["round"] for entry in model["history"]] == list(range(GD_JOB["max_rounds"]))
            assert re.search(r"state database \S+: (database or disk is full|disk I/O error)", logs[party]), logs[party]
            assert wait_coordinator_job(federation, model_id)["status"] == "finished"
            for name, text in logs.items():
                assert "HTTP 500" not in text and "unhandled error" not in text, f"{name}:\n{text[-3000:]}"
        finally:
            federation.stop()
