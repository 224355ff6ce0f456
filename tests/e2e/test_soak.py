"""Soak: jobs run back to back while a fault injector kills, stops and restarts random parties and
fills and frees every party's disk: the coordinator's, the model creator's and each owner's (issue 12).

Every job has ``min_data_owners`` = 3, the whole federation: a round is aggregated only over all
three owners, and gradient descent is exact here, so a job that finishes must give bit for bit the
model an undisturbed run gives. At the end every job has finished with that model or failed with
a reason, no model seen finished was lost, and no answer to the test's requests, and no call
between the parties, was a 5xx other than 503.

An owner whose disk is full cannot write its privacy ledger: it answers 503 (with the reason) to
the round or join it cannot record, and the round goes on without it or is tried again, as for a
stopped owner; its ledger never holds a wrong or lost entry: at the end each owner's ledger holds,
for every finished job, a request for each of its rounds (each contribution was recorded before
it left), and no member set but the whole federation's.

Bounded: ``SOAK_SECONDS`` of faults, then at most ``DRAIN_SECONDS`` for the jobs to end.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import threading
import time
from collections import Counter
from contextlib import ExitStack, closing
from pathlib import Path

import pytest
import requests
from e2e_support import fill, small_tmpfs
from support import SHIPPED, SHIPPED_OWNERS_ABC

from local_federation.cluster import LocalFederation, Party

pytestmark = pytest.mark.e2e

SEED = 20261202
SOAK_SECONDS = 100
DRAIN_SECONDS = 150
JOB = {"optimizer": "gd", "learning_rate": 1e-5, "max_rounds": 15, "min_data_owners": 3}
ENVIRONMENT = {
    "FT_MODEL_CREATOR_RECONCILE_INTERVAL": "1", "FT_MODEL_CREATOR_REORDER_AFTER": "3",
    "FT_COORDINATOR_RETRY_DELAY": "0.5", "FT_COORDINATOR_ROUND_RETRIES": "8", "FT_COORDINATOR_ROUND_TIMEOUT": "20",
    "FT_COORDINATOR_HEALTH_INTERVAL": "1", "FT_COORDINATOR_REQUEST_TIMEOUT": "10",
    "FT_DATA_OWNER_REQUEST_TIMEOUT": "10", "FT_MODEL_CREATOR_REQUEST_TIMEOUT": "10",
}


class Observed:
    """Every status the test's own requests got, and the models seen finished."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.finished: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()

    def get(self, session: requests.Session, url: str) -> dict | None:
        try:
            answer = session.get(url, timeout=5)
        except requests.RequestException:
            return None  # a party down or stopped: no status to count
        with self.lock:
            self.statuses[answer.status_code] += 1
        return answer.json() if answer.status_code == 200 else None


def _submit(federation: LocalFederation, observed: Observed, deadline: float) -> str | None:
    """POST a job, trying again while the model creator is down, stopped or out of disk."""
    while time.monotonic() < deadline:
        try:
            answer = federation.session.post(f"{federation.model_creator.url}/model", json=JOB, timeout=5)
        except requests.RequestException:
            time.sleep(0.5)
            continue
        with observed.lock:
            observed.statuses[answer.status_code] += 1
        if answer.status_code == 202:
            return str(answer.json()["model_id"])
        time.sleep(0.5)
    return None


def _run_jobs(federation: LocalFederation, observed: Observed, model_ids: list[str], stop: threading.Event) -> None:
    """Jobs one after another until ``stop``: each posted, then followed until it ends."""
    while not stop.is_set():
        model_id = _submit(federation, observed, time.monotonic() + SOAK_SECONDS)
        if model_id is None:
            return
        model_ids.append(model_id)
        while not stop.is_set():
            model = observed.get(federation.session, f"{federation.model_creator.url}/model/{model_id}")
            if model is not None and model["status"] in ("finished", "failed"):
                if model["status"] == "finished":
                    observed.finished[model_id] = model["coefficients"]
                break
            time.sleep(0.3)


def _inject(federation: LocalFederation, disks: dict[str, Path], rng: random.Random, stop: threading.Event,
            injected: Counter[str]) -> None:
    """A random fault every few seconds until ``stop``: kill and restart, stop and continue, fill and free."""
    # Every kind of fault at every party once, in a random order, then again in another.
    faults = [(kind, name) for kind in ("kill", "sigstop") for name in sorted(federation.parties)]
    faults += [("disk", name) for name in sorted(disks)]
    order: list[tuple[str, str]] = []
    while not stop.wait(rng.uniform(3.0, 6.0)):
        if not order:
            order = rng.sample(faults, len(faults))
        kind, name = order.pop()
        if kind == "disk":
            filler = fill(disks[name])
            stop.wait(rng.uniform(2.0, 6.0))
            filler.unlink()
        else:
            party: Party = federation.parties[name]
            assert party.process is not None
            if kind == "kill":
                party.process.kill()
                party.process.wait(10)
                stop.wait(rng.uniform(0.0, 2.0))
                federation.start_party(party)
            else:
                os.kill(party.process.pid, signal.SIGSTOP)
                stop.wait(rng.uniform(1.0, 8.0))
                os.kill(party.process.pid, signal.SIGCONT)
        injected[f"{kind} {name}"] += 1


def test_jobs_survive_random_kills_stops_and_full_disks(tmp_path):
    workdir = tmp_path / "federation"
    # Room for what a soak's jobs store (the coordinator keeps every round's aggregate, and SQLite's
    # write-ahead log alone reaches 4 MB before a checkpoint): the faults fill what is left.
    state_dirs = {"coordinator": "coordinator", "model_creator": "model_creator",
                  **{f"data_owner:{name}": f"data_owner_{name}" for name, _ in SHIPPED_OWNERS_ABC}}
    with ExitStack() as mounts:
        disks = {party: mounts.enter_context(small_tmpfs(workdir / directory, "64m" if "data_owner" not in party
                                                         else "16m"))
                 for party, directory in state_dirs.items()}
        federation = LocalFederation(workdir, SHIPPED_OWNERS_ABC, test_data=SHIPPED / "test.csv", key_bits=1024,
                                     environment=ENVIRONMENT)
        observed, model_ids, injected = Observed(), [], Counter()
        try:
            federation.start()
            reference = federation.train(JOB)
            assert reference["status"] == "finished", reference.get("error")

            stop = threading.Event()
            runner = threading.Thread(target=_run_jobs, args=(federation, observed, model_ids, stop))
            injector = threading.Thread(target=_inject, args=(federation, disks, random.Random(SEED), stop, injected))
            runner.start()
            injector.start()
            time.sleep(SOAK_SECONDS)
            stop.set()
            injector.join(60)
            runner.join(60)

            deadline = time.monotonic() + DRAIN_SECONDS
            ended: dict[str, dict] = {}
            while len(ended) < len(model_ids) and time.monotonic() < deadline:
                for model_id in set(model_ids) - set(ended):
                    model = observed.get(federation.session, f"{federation.model_creator.url}/model/{model_id}")
                    if model is not None and model["status"] in ("finished", "failed"):
                        ended[model_id] = model
                time.sleep(0.5)
            logs = {name: party.log_path.read_text(errors="replace") for name, party in federation.parties.items()}
            summary = f"faults injected: {dict(injected)}; jobs: {len(model_ids)}"
            died = [name for name, party in federation.parties.items()
                    if party.process is not None and party.process.poll() is not None]
            assert not died, f"parties that died on their own: {died}; {summary}"
            assert set(ended) == set(model_ids), f"jobs still running: {set(model_ids) - set(ended)}; {summary}"
            finished = [model for model in ended.values() if model["status"] == "finished"]
            for model in ended.values():
                if model["status"] == "finished":
                    assert model["coefficients"] == reference["coefficients"], model["model_id"]
                    assert [entry["round"] for entry in model["history"]] == list(range(JOB["max_rounds"]))
                else:
                    assert model["error"], f"{model['model_id']} failed without a reason"
            assert finished, f"no job finished under faults; {summary}"
            assert sum(injected.values()) >= SOAK_SECONDS // 8, summary

            # No finished model lost: every one seen finished is still there, unchanged.
            listed = {model["model_id"]: model for model in
                      federation.session.get(f"{federation.model_creator.url}/models", timeout=30).json()["models"]}
            for model_id, coefficients in observed.finished.items():
                assert listed[model_id]["status"] == "finished" and listed[model_id]["coefficients"] == coefficients
            assert listed[reference["model_id"]]["coefficients"] == reference["coefficients"]

            # No lost or wrong ledger entry at an owner, whatever its disk went through.
            for name, _ in SHIPPED_OWNERS_ABC:
                ledger = f"file:{disks[f'data_owner:{name}'] / 'ledger.sqlite3'}?mode=ro"
                with closing(sqlite3.connect(ledger, uri=True, timeout=30)) as db:
                    member_sets = {row[0] for row in db.execute("SELECT members FROM member_sets")}
                    answered = dict(db.execute("SELECT job_id, COUNT(*) FROM answered GROUP BY job_id").fetchall())
                assert member_sets == {'["a", "b", "c"]'}, (name, member_sets)
                for model in [*finished, reference]:
                    assert answered.get(model["model_id"], 0) >= JOB["max_rounds"], (name, model["model_id"], answered)

            # No 5xx but 503, to the test or between the parties.
            assert all(status < 500 or status == 503 for status in observed.statuses), observed.statuses
            for name, text in logs.items():
                assert not re.search(r"HTTP 5(?!03)\d\d", text), f"{name}: {re.findall(r'.*HTTP 5(?!03).*', text)[:3]}"
                assert "unhandled error" not in text, f"{name}:\n{text[-3000:]}"
            reasons = Counter(model["error"][:80] for model in ended.values() if model["status"] == "failed")
            print(f"soak: {summary}; finished {len(finished)}, failed {len(ended) - len(finished)} {dict(reasons)};"
                  f" statuses {dict(observed.statuses)}")
        finally:
            for party in federation.parties.values():
                if party.process is not None and party.process.poll() is None:
                    os.kill(party.process.pid, signal.SIGCONT)
            for disk in disks.values():
                (disk / "filler").unlink(missing_ok=True)
            federation.stop()
