"""A full disk at the coordinator or the model creator mid-job: the job waits and resumes, bit-identical.

Issue 12, defect 4: with the coordinator's disk full the job failed at round 43 (``sqlite3.
OperationalError: disk I/O error`` answered as a bare 500, which the model creator did not retry),
and the coordinator still listed the job as running after space was freed; it never resumed.

Now a write that fails is a 503 with ``Retry-After`` (retried by the caller within its budget);
a job it interrupts waits, and resumes from its last saved round once the store works again.
Gradient descent is deterministic here, so the resumed job must end with exactly the coefficients
of the same job run undisturbed: a round lost or counted twice would show.

The same holds for an owner's disk (its privacy ledger), and for the disk of a traffic log
(``--traffic-log``), whose failed write answered a bare 500; and a job held up by a fault that
does not end says so in ``GET /model/<id>`` (``interrupted``) rather than showing ``running`` alone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest
import requests
from e2e_support import fill, small_tmpfs, traffic_records, wait_coordinator_job
from support import SHIPPED, SHIPPED_OWNERS_ABC

from local_federation.cluster import LocalFederation, Party

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


#: Each party's state directory under the federation's, and its database there.
STATE = {"coordinator": ("coordinator", "coordinator.sqlite3"),
         "model_creator": ("model_creator", "model_creator.sqlite3"),
         "data_owner:a": ("data_owner_a", "ledger.sqlite3")}


def _reference_then_job_at_round_5(federation: LocalFederation) -> tuple[dict, str]:
    """Start the federation, train the undisturbed model, then start the same job and wait for its round 5."""
    federation.start()
    reference = federation.train(GD_JOB)
    assert reference["status"] == "finished", reference.get("error")
    started = federation.session.post(f"{federation.model_creator.url}/model", json=GD_JOB, timeout=30)
    model_id = started.json()["model_id"]
    _wait_for_round(federation, model_id, 5)
    return reference, model_id


def _until_the_coordinator_refuses(federation: LocalFederation) -> requests.Response:
    """Use up the room a full disk still leaves the traffic log, until the coordinator answers 503 (returned).

    A file system filled to its last byte still has the unused end of the log file's last page
    (tmpfs allocates whole pages): the next few records fit there, every contribution of a
    round included (seen in CI). Each request to ``/health`` is recorded too; once one is refused, no
    record of a contribution, longer than it, can fit either.
    """
    for _ in range(200):
        answer = federation.session.get(f"{federation.coordinator.url}/health", timeout=10)
        if answer.status_code == 503:
            return answer
        assert answer.status_code == 200, answer.text
    raise AssertionError("the coordinator still records requests on a full disk")


@pytest.mark.parametrize("party", ["coordinator", "model_creator", "data_owner:a"])
def test_a_full_disk_mid_job_interrupts_it_and_it_resumes_to_the_undisturbed_model(tmp_path, party):
    workdir = tmp_path / "federation"
    directory, database_name = STATE[party]
    with small_tmpfs(workdir / directory, "3m") as state:
        # Every owner is needed (min_data_owners 3): one whose ledger cannot be written keeps its
        # reply and tries recording and sending it again until the disk has room.
        federation = LocalFederation(workdir, SHIPPED_OWNERS_ABC, test_data=SHIPPED / "test.csv", key_bits=1024,
                                     environment=QUICK_RECONCILE)
        try:
            reference, model_id = _reference_then_job_at_round_5(federation)
            # The disk fills up while the write-ahead log is empty: the next commit needs new space.
            database = state / database_name
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

            # Not the round deadline (300 s): an owner that cannot record its round refuses it at once.
            model = federation.wait_model(model_id, timeout=120)
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


def test_a_coordinator_disk_kept_full_shows_the_job_interrupted_and_it_can_be_cancelled(tmp_path):
    """A fault that does not end: the model says what holds it up and since when, until the job moves on."""
    workdir = tmp_path / "federation"
    # The owners' contributions refused (503) through the fault are not sent again: the round
    # under way is asked again after its deadline.
    environment = {**QUICK_RECONCILE, "FT_COORDINATOR_ROUND_TIMEOUT": "15"}
    with small_tmpfs(workdir / "coordinator", "3m") as state:
        federation = LocalFederation(workdir, SHIPPED_OWNERS_ABC, test_data=SHIPPED / "test.csv", key_bits=1024,
                                     environment=environment)
        try:
            federation.start()
            started = federation.session.post(f"{federation.model_creator.url}/model", json=GD_JOB, timeout=30)
            model_id = started.json()["model_id"]
            _wait_for_round(federation, model_id, 3)
            assert "interrupted" not in _model(federation, model_id)
            with closing(sqlite3.connect(state / "coordinator.sqlite3", timeout=30)) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filled_at = time.time()
            filler = fill(state)

            deadline = time.monotonic() + 60
            while (interrupted := _model(federation, model_id).get("interrupted", {})).get("attempts", 0) < 2:
                assert time.monotonic() < deadline, f"no interruption shown: {_model(federation, model_id)}"
                time.sleep(0.2)
            during = _model(federation, model_id)
            assert during["status"] == "running" and during["round"] < GD_JOB["max_rounds"]
            assert "cannot use its state storage right now" in interrupted["reason"], interrupted
            assert filled_at - 1 <= interrupted["since"] <= time.time()
            assert interrupted["retry_every"] == 1
            assert f"POST /model/{model_id}/cancel stops it" in interrupted["note"]
            listed = federation.session.get(f"{federation.model_creator.url}/models", timeout=30).json()["models"]
            assert [m["interrupted"]["since"] for m in listed if m["model_id"] == model_id] == [interrupted["since"]]

            # A job started while the fault lasts: accepted, then held up the same way. The coordinator
            # still reads its store (its connections stay open), so the columns were checked.
            second = federation.session.post(f"{federation.model_creator.url}/model", json=GD_JOB, timeout=30)
            assert second.status_code == 202, second.text
            assert not second.json().get("warnings"), second.json()
            second_id = second.json()["model_id"]
            deadline = time.monotonic() + 60
            while "interrupted" not in _model(federation, second_id):
                assert time.monotonic() < deadline, f"no interruption shown: {_model(federation, second_id)}"
                time.sleep(0.2)
            cancelled = federation.session.post(f"{federation.model_creator.url}/model/{second_id}/cancel", timeout=30)
            assert cancelled.status_code == 202, cancelled.text
            deadline = time.monotonic() + 30
            while (ended := _model(federation, second_id))["status"] != "cancelled":
                assert time.monotonic() < deadline, f"not cancelled: {ended}"
                time.sleep(0.2)
            assert "interrupted" not in ended and ended["error"] == "cancelled by the user", ended

            filler.unlink()
            model = federation.wait_model(model_id, timeout=120)
            assert model["status"] == "finished", model.get("error")
            assert "interrupted" not in model
            assert [entry["round"] for entry in model["history"]] == list(range(GD_JOB["max_rounds"]))
            log = federation.model_creator.log_path.read_text(errors="replace")
            assert re.search(rf"model {model_id}: going on after \d+ transient fault\(s\) in \d+ s", log), log[-3000:]
            assert f"job {second_id} was never opened at the coordinator: nothing to close there" in log
        finally:
            federation.stop()


def test_a_full_disk_under_the_traffic_log_answers_503_and_loses_no_record(tmp_path):
    """Issue 12's storage faults at the disk of ``--traffic-log``: once a bare 500, now a 503 and nothing lost.

    A request that cannot be recorded is refused before the coordinator acts on it; the answers
    and replies of exchanges under way are kept until the disk takes them; the job ends with the
    undisturbed model, and the log holds every exchange, each as one whole line.
    """
    workdir = tmp_path / "federation"
    with small_tmpfs(tmp_path / "traffic", "16m") as traffic:
        log = traffic / "coordinator.jsonl"
        environment = {**QUICK_RECONCILE, "FT_COORDINATOR_ROUND_TIMEOUT": "15"}
        federation = LocalFederation(workdir, SHIPPED_OWNERS_ABC, test_data=SHIPPED / "test.csv", key_bits=1024,
                                     environment=environment, coordinator_traffic_log=log)
        try:
            reference, model_id = _reference_then_job_at_round_5(federation)
            filler = fill(traffic)
            answer = _until_the_coordinator_refuses(federation)
            assert answer.headers["Retry-After"] == "2"
            assert answer.json() == {"error": "this party cannot write its traffic log right now (its disk is full or"
                                              " failing); try again later", "type": "StorageUnavailable"}
            time.sleep(FAULT_SECONDS)
            filler.unlink()

            model = federation.wait_model(model_id, timeout=120)
            assert model["status"] == "finished", model.get("error")
            assert model["coefficients"] == reference["coefficients"]
            assert wait_coordinator_job(federation, model_id)["status"] == "finished"
            time.sleep(1)  # the last answers of the closing calls
            text = federation.coordinator.log_path.read_text(errors="replace")
            # Each outage logged once as it begins and once as it ends (a page's slack may let a short
            # record through between two).
            outages = re.findall(rf"traffic log {log}: writable again; ([1-9]\d*) exchange\(s\) were refused", text)
            assert outages and text.count(f"traffic log {log}: cannot write (") == len(outages), text[-3000:]
            # Its own fault is no owner's failure: it spends no attempt of the round.
            assert not re.search(r"\b[abc]: this party cannot write its traffic log", text), text[-3000:]
            assert "Traceback" not in text and "unhandled error" not in text, text[-3000:]
            # Every exchange recorded is whole, with its outcome (one may be under way as the file is read);
            # an outbound call without a body (a GET) has its reply recorded only.
            deadline = time.monotonic() + 10
            while True:
                directions = Counter(record["direction"] for record in traffic_records(log))
                balanced = directions["received"] == directions["answered"] and directions["reply"] >= directions["sent"]
                if balanced or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert balanced and directions["answered"] > 0 and directions["reply"] > 0, directions
            for name, party in federation.parties.items():
                assert "HTTP 500" not in party.log_path.read_text(errors="replace"), name
        finally:
            federation.stop()


def _rounds_awaiting_replies(records: list[dict], job_id: str, owners: int) -> set[int]:
    """The rounds of ``job_id`` the traffic log shows asked of ``owners`` owners, with fewer contributions received."""
    asked: Counter[int] = Counter()
    replied: Counter[int] = Counter()
    for record in records:
        if record["direction"] == "sent" and record["peer"].endswith(f"/jobs/{job_id}/rounds"):
            asked[json.loads(record["body"])["round"]] += 1
        found = re.fullmatch(rf"/jobs/{job_id}/rounds/(\d+)/contributions", record["peer"])
        if record["direction"] == "received" and found:
            replied[int(found.group(1))] += 1
    return {number for number, count in asked.items() if count >= owners and replied[number] < owners}


def _stop_owners_with_replies_to_come(owners: list[Party], log: Path, job_id: str) -> None:
    """Stop (SIGSTOP) every owner at a moment when a round of ``job_id`` still awaits some of their replies.

    A round the coordinator asked every owner for (the requests may wait in the stopped owners'
    sockets) and that not every owner has answered yet. Replies already on their way when the
    owners stopped reach the coordinator all the same, so the round is looked at again once they
    had a second to land; if they completed it, the owners go on and are stopped again.
    """
    def awaiting() -> bool:
        return bool(_rounds_awaiting_replies(traffic_records(log), job_id, len(owners)))

    deadline = time.monotonic() + 60
    while True:
        for owner in owners:
            os.kill(owner.process.pid, signal.SIGSTOP)
        asked_by = time.monotonic() + 10
        while not awaiting() and time.monotonic() < asked_by:
            time.sleep(0.05)
        if awaiting():
            time.sleep(1)
            if awaiting():
                return
        for owner in owners:
            os.kill(owner.process.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the owners were never stopped with a round's replies to come"
        time.sleep(0.3)


def test_replies_held_up_by_a_long_fault_are_delivered_once_it_ends_and_no_round_waits_its_deadline(tmp_path):
    """A coordinator that cannot take replies for longer than an owner's HTTP retries (about 6 s).

    An owner used to drop such a reply after its client's retries, and the round then waited for
    it until the round's deadline (and failed). Now the owner tries again, with back-off, until
    the coordinator takes the reply (or closes the attempt): the round ends soon after the fault.

    To have replies in flight when the disk fills, the owners are stopped (SIGSTOP) while the
    coordinator asks them for a round, the disk is filled, and they go on: their contributions
    then meet a coordinator that cannot record them.
    """
    long_fault = 15
    round_timeout = 120
    workdir = tmp_path / "federation"
    with small_tmpfs(tmp_path / "traffic", "16m") as traffic:
        log = traffic / "coordinator.jsonl"
        # Owners stopped for a moment are not to be taken for hung ones (health checks 30 s apart).
        environment = {**QUICK_RECONCILE, "FT_COORDINATOR_ROUND_TIMEOUT": str(round_timeout),
                       "FT_COORDINATOR_HEALTH_INTERVAL": "30"}
        federation = LocalFederation(workdir, SHIPPED_OWNERS_ABC, test_data=SHIPPED / "test.csv", key_bits=1024,
                                     environment=environment, coordinator_traffic_log=log)
        try:
            reference, model_id = _reference_then_job_at_round_5(federation)
            owners = [federation.data_owner(name) for name in ("a", "b", "c")]
            _stop_owners_with_replies_to_come(owners, log, model_id)
            filler = fill(traffic)
            _until_the_coordinator_refuses(federation)
            for owner in owners:
                os.kill(owner.process.pid, signal.SIGCONT)
            time.sleep(long_fault)
            filler.unlink()
            freed = time.monotonic()

            model = federation.wait_model(model_id, timeout=round_timeout + 60)
            assert model["status"] == "finished", model.get("error")
            assert model["coefficients"] == reference["coefficients"]
            assert time.monotonic() - freed < round_timeout / 2, "a round waited for its deadline"
            retried = [owner.name for owner in owners
                       if re.search(r"the contribution was not delivered: .*; trying again in \d",
                                    owner.log_path.read_text(errors="replace"))]
            assert retried, "no owner had to try a contribution again: the fault did not hold one up"
            for name, party in federation.parties.items():
                text = party.log_path.read_text(errors="replace")
                assert "is given up" not in text and "Traceback" not in text, f"{name}:\n{text[-3000:]}"
        finally:
            for owner in federation.parties.values():
                if owner.process is not None and owner.process.poll() is None:
                    os.kill(owner.process.pid, signal.SIGCONT)
            federation.stop()
