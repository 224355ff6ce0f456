"""The coordinator's answer to a model creator asking for a round, and its delivery of the aggregate.

A model creator asks again for a round it awaits (after a restart, or when a delivery seems late).
The answer must come from the round as it is once this call holds it: a run that ended between
the call's first read and its claim must never be followed by a second run of the same round,
which would ask the owners again and later deliver an aggregate the model creator absorbed long
before (it then answers 409, and the job failed; seen in CI after a long storage fault).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.protocol.errors import Conflict, PeerUnreachable, ProtocolViolation
from common.protocol.messages import Aggregate
from coordinator.config import CoordinatorSettings
from coordinator.rounds import RoundRegistry
from coordinator.runner import RoundRunner
from coordinator.store import CoordinatorStore, RoundState

JOB = "0123456789abcdef"


class StaleFirstRead(CoordinatorStore):
    """A store whose next read of a round gives what it was before its run ended.

    That is what the request's thread saw when the worker's run aggregated the round (and
    released its claim) right after the thread's read.
    """

    stale: RoundState | None = None

    def round(self, job_id: str, round_number: int) -> RoundState | None:
        if self.stale is not None:
            stale, self.stale = self.stale, None
            return stale
        return super().round(job_id, round_number)


class RecordingWorker:
    """Keeps what is submitted, unrun, so a test sees exactly which tasks a request started."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, tuple[Any, ...]]] = []

    def submit(self, task: Callable[..., None], *args: Any, on_error: object = None) -> None:
        self.tasks.append((task.__name__, args))


@pytest.fixture
def runner(tmp_path: Path) -> RoundRunner:
    store = StaleFirstRead(str(tmp_path / "coordinator.db"))
    settings = CoordinatorSettings(state_dir=tmp_path, secrets_file=None)
    return RoundRunner(store, None, RoundRegistry(), RecordingWorker(), settings)  # type: ignore[arg-type]


def _ended(runner: RoundRunner, status: str) -> RoundState:
    """Start round 6 and end it with ``status``; returns the state it had while running."""
    running = runner.store.start_round(JOB, 6, "gradient", None)
    runner.store.save_round(running.replace(attempt=1, status=status, delivered=status == "aggregated"))
    return running.replace(attempt=1)


def test_a_round_aggregated_after_the_request_read_it_is_delivered_again_never_run_again(runner):
    runner.store.stale = _ended(runner, "aggregated")

    assert runner.request_round(JOB, 6, "gradient", None) == "delivering again"

    assert runner.worker.tasks == [("deliver", (JOB, 6))]
    stored = runner.store.round(JOB, 6)
    assert (stored.status, stored.delivered) == ("aggregated", True), "the stale state was written back"
    assert runner.registry.claim(JOB, 6), "the claim taken to look was not released"


def test_a_round_failed_after_the_request_read_it_is_a_conflict(runner):
    runner.store.stale = _ended(runner, "failed")

    with pytest.raises(Conflict, match="round 6 of job 0123456789abcdef failed"):
        runner.request_round(JOB, 6, "gradient", None)

    assert runner.worker.tasks == []
    assert runner.store.round(JOB, 6).status == "failed"
    assert runner.registry.claim(JOB, 6)


def test_a_running_round_nobody_runs_is_resumed_once(runner):
    runner.store.start_round(JOB, 6, "gradient", None)

    assert runner.request_round(JOB, 6, "gradient", None) == "resumed"
    assert runner.request_round(JOB, 6, "gradient", None) == "in progress"

    assert [name for name, _ in runner.worker.tasks] == ["_run_claimed_round"]


class ModelCreatorAnswering:
    """The model creator's client, answering each delivery with ``error`` (None: taken)."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.delivered: list[str] = []

    def deliver(self, job_id: str, aggregate: object) -> None:
        self.delivered.append(job_id)
        if self.error is not None:
            raise self.error


def _aggregated(runner: RoundRunner, monkeypatch: pytest.MonkeyPatch, error: Exception | None) -> ModelCreatorAnswering:
    """Round 6 aggregated and not yet delivered, with a model creator that answers ``error``."""
    running = runner.store.start_round(JOB, 6, "gradient", None)
    aggregate = Aggregate(round=6, kind="gradient", key_fingerprint="0" * 64, ciphertexts=["AAAB"], contributors=["a"])
    runner.store.save_round(running.replace(attempt=1, status="aggregated", aggregate=aggregate))
    model_creator = ModelCreatorAnswering(error)
    monkeypatch.setattr(runner.store, "job", lambda job_id: None)
    monkeypatch.setattr(runner, "_model_creator", lambda job: model_creator)
    return model_creator


def test_a_delivery_the_model_creator_has_already_taken_is_done_not_a_failure(runner, monkeypatch):
    """A 409 (it took the aggregate from a concurrent delivery, or went on past it) never fails the job."""
    model_creator = _aggregated(runner, monkeypatch, Conflict("model 0123 already has the aggregate of round 6"))

    runner.deliver(JOB, 6)

    assert model_creator.delivered == [JOB]
    assert runner.store.round(JOB, 6).delivered


def test_a_delivery_to_an_unreachable_model_creator_is_kept_for_its_next_order(runner, monkeypatch):
    _aggregated(runner, monkeypatch, PeerUnreachable("the model creator at http://127.0.0.1:9 did not answer"))

    runner.deliver(JOB, 6)

    stored = runner.store.round(JOB, 6)
    assert (stored.status, stored.delivered) == ("aggregated", False)


def test_a_delivery_refused_for_its_content_is_raised(runner, monkeypatch):
    _aggregated(runner, monkeypatch, ProtocolViolation("body.key_fingerprint: not the job's key"))

    with pytest.raises(ProtocolViolation, match="not the job's key"):
        runner.deliver(JOB, 6)

    assert not runner.store.round(JOB, 6).delivered
