"""The model creator's job state machine: its table of transitions, and the trainer driving it
through the store and a stand-in coordinator, without HTTP."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from common.protocol.errors import Conflict, NotFound, PeerUnreachable, StorageUnavailable
from common.protocol.messages import (
    FinishJob,
    JobFinished,
    JobOpened,
    OpenJob,
    RoundHistory,
    RoundOrder,
    RoundStarted,
    TrainingOptions,
)
from common.service.app import Worker
from model_creator.config import ModelCreatorSettings
from model_creator.job import Absorbed, Cancelled, Failed, JobState, Opened, Phase, Trainer, transition
from model_creator.keystore import KEY_FILE, KeyStore
from model_creator.store import ModelStore
from model_creator.training import TrainingRequest

PENDING = JobState(Phase.PENDING)


def record(round_number: int, kind: str = "gradient") -> RoundHistory:
    return RoundHistory(round=round_number, kind=kind, contributors=2, data_owners=["a", "b"], failures={},
                        gradient_norm=None, validation=None, restarted=False, seconds=0.1)


ALLOWED = [
    pytest.param(PENDING, Opened("statistics"), JobState(Phase.STATISTICS, 0), id="pending-to-statistics"),
    pytest.param(PENDING, Opened("gradient"), JobState(Phase.GRADIENT, 0), id="pending-to-gradient-0"),
    pytest.param(JobState(Phase.STATISTICS, 0), Absorbed(record(0, "statistics"), "gradient", False),
                 JobState(Phase.GRADIENT, 1), id="statistics-to-gradient-1"),
    pytest.param(JobState(Phase.GRADIENT, 3), Absorbed(record(3), "gradient", False), JobState(Phase.GRADIENT, 4),
                 id="gradient-k-to-k+1"),
    pytest.param(PENDING, Opened("moments"), JobState(Phase.MOMENTS, 0), id="pending-to-moments-0"),
    pytest.param(JobState(Phase.STATISTICS, 0), Absorbed(record(0, "statistics"), "moments", False),
                 JobState(Phase.MOMENTS, 1), id="statistics-to-moments-1"),
    pytest.param(JobState(Phase.MOMENTS, 1), Absorbed(record(1, "moments"), "moments", True),
                 JobState(Phase.FINISHED, 2), id="moments-to-finished"),
    pytest.param(JobState(Phase.GRADIENT, 3), Absorbed(record(3), "gradient", True), JobState(Phase.FINISHED, 4),
                 id="gradient-to-finished"),
    *(pytest.param(state, Failed("boom"), JobState(Phase.FAILED, state.round), id=f"{state}-fails")
      for state in (PENDING, JobState(Phase.STATISTICS, 0), JobState(Phase.GRADIENT, 5))),
    *(pytest.param(state, Cancelled("stop"), JobState(Phase.CANCELLED, state.round), id=f"{state}-cancelled")
      for state in (PENDING, JobState(Phase.STATISTICS, 0), JobState(Phase.GRADIENT, 5))),
]


@pytest.mark.parametrize(("state", "event", "expected"), ALLOWED)
def test_allowed_transitions(state, event, expected):
    assert transition(state, event) == expected


REFUSED = [
    pytest.param(PENDING, Absorbed(record(0), "gradient", False), id="aggregate-before-opening"),
    pytest.param(JobState(Phase.GRADIENT, 0), Opened("gradient"), id="opened-twice"),
    pytest.param(JobState(Phase.GRADIENT, 2), Absorbed(record(1), "gradient", False), id="round-already-absorbed"),
    pytest.param(JobState(Phase.GRADIENT, 2), Absorbed(record(3), "gradient", False), id="round-ahead"),
    *(pytest.param(JobState(final, 4), event, id=f"{final.value}-takes-{type(event).__name__}")
      for final in (Phase.FINISHED, Phase.FAILED, Phase.CANCELLED)
      for event in (Opened("gradient"), Absorbed(record(4), "gradient", False), Failed("late"), Cancelled("late"))),
]


@pytest.mark.parametrize(("state", "event"), REFUSED)
def test_refused_transitions_are_conflicts(state, event):
    with pytest.raises(Conflict, match="cannot take"):
        transition(state, event)


def test_a_state_awaits_only_its_own_round():
    state = JobState(Phase.GRADIENT, 2)
    assert state.awaits("gradient", 2)
    assert not state.awaits("gradient", 1) and not state.awaits("gradient", 3) and not state.awaits("statistics", 2)
    assert JobState(Phase.STATISTICS, 0).awaits("statistics", 0)
    assert JobState(Phase.MOMENTS, 0).awaits("moments", 0) and not JobState(Phase.MOMENTS, 0).awaits("gradient", 0)
    assert not PENDING.awaits("gradient", 0) and not JobState(Phase.FINISHED, 2).awaits("gradient", 2)


class StandInCoordinator:
    """Takes the model creator's calls as the coordinator would, and records them."""

    def __init__(self, unreachable: bool = False) -> None:
        self.calls: list[tuple[str, object]] = []
        self.unreachable = unreachable

    def open_job(self, message: OpenJob) -> JobOpened:
        self.calls.append(("open_job", message))
        if self.unreachable:
            raise PeerUnreachable("POST http://coordinator/jobs: connection refused", peer="http://coordinator/jobs")
        return JobOpened(job_id=message.spec.job_id, status="running")

    def order_round(self, job_id: str, message: RoundOrder) -> RoundStarted:
        self.calls.append(("order_round", message))
        return RoundStarted(job_id=job_id, round=message.round, status="started")

    def finish_job(self, job_id: str, message: FinishJob) -> JobFinished:
        self.calls.append(("finish_job", message))
        return JobFinished(job_id=job_id, status=message.status)

    def named(self, name: str) -> list:
        return [message for call, message in self.calls if call == name]


def trainer_over(tmp_path: Path, key, coordinator: StandInCoordinator, **options) -> Trainer:
    tmp_path.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(tmp_path / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(key.to_json(), handle)
    settings = ModelCreatorSettings(state_dir=tmp_path, key_bits=1024, test_only_small_keys=True, test_data=None,
                                    **options)
    return Trainer(ModelStore(tmp_path / "models.sqlite3"), KeyStore(tmp_path, 1024, test_only_small_keys=True), coordinator,  # type: ignore[arg-type]
                   Worker("test-trainer"), settings)


def settle(trainer: Trainer) -> None:
    """Wait until the worker has run everything handed to it so far (it runs tasks in order)."""
    trainer.worker.submit(lambda: None).result(timeout=60)


def request(trainer: Trainer, **options) -> TrainingRequest:
    return TrainingRequest.of(TrainingOptions(**options), trainer.settings)


def test_opening_persists_running_and_orders_the_first_round(tmp_path, small_key):
    coordinator = StandInCoordinator()
    trainer = trainer_over(tmp_path, small_key, coordinator)
    model_id = trainer.start(request(trainer))
    settle(trainer)
    assert trainer.store.get(model_id).status == "running"
    (order,) = coordinator.named("order_round")
    assert (order.round, order.kind) == (0, "gradient") and order.encrypted_weights is not None
    with pytest.raises(Conflict, match="awaits gradient round 0, not gradient round 1"):
        trainer.accept_aggregate(model_id, 1, "gradient", [], ["a"], {})


def test_a_standardised_job_awaits_its_statistics_round_first(tmp_path, small_key):
    coordinator = StandInCoordinator()
    trainer = trainer_over(tmp_path, small_key, coordinator)
    model_id = trainer.start(request(trainer, standardize=True))
    settle(trainer)
    (order,) = coordinator.named("order_round")
    assert (order.round, order.kind, order.encrypted_weights) == (0, "statistics", None)
    with pytest.raises(Conflict, match="awaits statistics round 0, not gradient round 0"):
        trainer.accept_aggregate(model_id, 0, "gradient", [], ["a"], {})


@pytest.mark.parametrize(("stop", "status", "reported"), [
    pytest.param(lambda t, m: t.accept_failure(m, "coordinator: no quorum"), "failed", "coordinator: no quorum",
                 id="failed"),
    pytest.param(lambda t, m: t.cancel(m, "no longer wanted"), "cancelled", "cancelled: no longer wanted",
                 id="cancelled"),
])
def test_a_stopped_job_is_persisted_closed_at_the_coordinator_and_no_longer_in_flight(tmp_path, small_key, stop,
                                                                                    status, reported):
    coordinator = StandInCoordinator()
    trainer = trainer_over(tmp_path, small_key, coordinator)
    model_id = trainer.start(request(trainer))
    settle(trainer)
    stop(trainer, model_id)
    settle(trainer)
    assert trainer.store.get(model_id).status == status
    assert [(m.status, m.error) for m in coordinator.named("finish_job")] == [("failed", reported)]
    with pytest.raises(NotFound, match="no job in flight"):
        trainer.run(model_id)
    assert trainer.resume_unfinished() == 0


def test_an_unreachable_coordinator_interrupts_the_job_and_it_resumes_once_the_coordinator_answers(tmp_path,
                                                                                                      small_key):
    coordinator = StandInCoordinator(unreachable=True)
    trainer = trainer_over(tmp_path, small_key, coordinator)
    model_id = trainer.start(request(trainer))
    settle(trainer)
    # A transient fault is no failure: the model waits, and a delivery meanwhile is a 503 to try later.
    assert trainer.store.get(model_id).status == "pending"
    with pytest.raises(StorageUnavailable, match="resuming after a transient fault"):
        trainer.accept_aggregate(model_id, 0, "gradient", [], ["a"], {})
    trainer.reconcile()
    settle(trainer)
    assert trainer.store.get(model_id).status == "pending" and not coordinator.named("order_round")

    coordinator.unreachable = False
    trainer.reconcile()
    settle(trainer)
    assert trainer.store.get(model_id).status == "running"
    (order,) = coordinator.named("order_round")
    assert (order.round, order.kind) == (0, "gradient")
    assert len(coordinator.named("open_job")) == 3


def test_an_interrupted_job_says_why_since_when_and_how_often_until_it_moves_on(tmp_path, small_key):
    coordinator = StandInCoordinator(unreachable=True)
    trainer = trainer_over(tmp_path, small_key, coordinator, reconcile_interval=5)
    before = time.time()
    model_id = trainer.start(request(trainer))
    settle(trainer)
    first = trainer.interruption(model_id)
    assert first is not None and first.attempts == 1
    assert first.reason == "POST http://coordinator/jobs: connection refused"
    assert before <= first.since <= time.time() and first.retry_every == 5
    assert first.note == (f"the job waits and is resumed from its last saved round every 5 s until this fault ends;"
                          f" POST /model/{model_id}/cancel stops it")
    trainer.reconcile()
    settle(trainer)
    again = trainer.interruption(model_id)
    assert again is not None and (again.attempts, again.since) == (2, first.since)

    coordinator.unreachable = False
    trainer.reconcile()
    settle(trainer)
    assert trainer.interruption(model_id) is None
    assert coordinator.named("order_round")


def test_an_interrupted_job_can_be_cancelled_and_is_not_resumed(tmp_path, small_key):
    coordinator = StandInCoordinator(unreachable=True)
    trainer = trainer_over(tmp_path, small_key, coordinator)
    model_id = trainer.start(request(trainer))
    settle(trainer)
    assert trainer.interruption(model_id) is not None
    trainer.cancel(model_id, "no longer wanted")
    settle(trainer)
    assert trainer.store.get(model_id).status == "cancelled"
    assert trainer.interruption(model_id) is None
    coordinator.unreachable = False
    trainer.reconcile()
    settle(trainer)
    assert len(coordinator.named("open_job")) == 1 and not coordinator.named("order_round")
    assert [(m.status, m.error) for m in coordinator.named("finish_job")] == [("failed", "cancelled: no longer wanted")]


def test_a_round_awaited_too_long_is_ordered_again_and_only_once_per_wait(tmp_path, small_key):
    coordinator = StandInCoordinator()
    trainer = trainer_over(tmp_path, small_key, coordinator, reorder_after=0.01)
    trainer.start(request(trainer))
    settle(trainer)
    time.sleep(0.02)
    trainer.reconcile()
    settle(trainer)
    first, again = coordinator.named("order_round")
    assert (again.round, again.kind, again.key_fingerprint) == (first.round, first.kind, first.key_fingerprint)


def test_a_final_model_is_closed_at_the_coordinator_until_it_has_it(tmp_path, small_key):
    class FinishFails(StandInCoordinator):
        fails = True

        def finish_job(self, job_id: str, message: FinishJob) -> JobFinished:
            self.calls.append(("finish_job", message))
            if self.fails:
                raise StorageUnavailable("POST /finish: HTTP 503: disk full", peer="http://coordinator/finish")
            return JobFinished(job_id=job_id, status=message.status)

    coordinator = FinishFails()
    trainer = trainer_over(tmp_path, small_key, coordinator)
    model_id = trainer.start(request(trainer))
    settle(trainer)
    trainer.accept_failure(model_id, "coordinator: no quorum")
    settle(trainer)
    assert trainer.store.unclosed() == [(model_id, "failed", "coordinator: no quorum")]
    coordinator.fails = False
    trainer.reconcile()
    settle(trainer)
    assert [(m.status, m.error) for m in coordinator.named("finish_job")] == [("failed", "coordinator: no quorum")] * 2
    assert trainer.store.unclosed() == []


def test_a_resumed_job_is_opened_again_and_asked_for_the_awaited_round_without_a_transition(tmp_path, small_key):
    first = StandInCoordinator()
    trainer = trainer_over(tmp_path, small_key, first)
    model_id = trainer.start(request(trainer))
    settle(trainer)

    class AlreadyOpen(StandInCoordinator):
        def open_job(self, message: OpenJob) -> JobOpened:
            self.calls.append(("open_job", message))
            raise Conflict("POST /jobs: HTTP 409: job exists", peer="http://coordinator/jobs")

    again = AlreadyOpen()
    resumed = Trainer(trainer.store, trainer.keys, again, Worker("test-resumed"), trainer.settings)  # type: ignore[arg-type]
    assert resumed.resume_unfinished() == 1
    settle(resumed)
    (order,) = again.named("order_round")
    assert (order.round, order.kind) == (0, "gradient")
    assert resumed.store.get(model_id).status == "running" and not again.named("finish_job")
