"""A model's training job as an explicit state machine, and the trainer that drives it.

States and transitions (:func:`transition` is the one table of them)::

    from                          event                        to
    ----------------------------  ---------------------------  -----------------------------
    pending                       Opened(statistics)           statistics round 0
    pending                       Opened(gradient)             gradient round 0
    pending                       Opened(moments)              moments round 0
    statistics round k            Absorbed(k, gradient)        gradient round k+1
    statistics round k            Absorbed(k, moments)         moments round k+1
    gradient round k              Absorbed(k, not done)        gradient round k+1
    gradient round k              Absorbed(k, done)            finished
    moments round k               Absorbed(k, done)            finished
    any but a final state         Failed(reason)               failed
    any but a final state         Cancelled(reason)            cancelled

Every transition is persisted through the :class:`~model_creator.store.ModelStore` before its
entry action runs (:meth:`Trainer._persist`, :meth:`Trainer._enter`): entering a round orders it
from the coordinator, entering a final state closes the job there. A restart therefore finds
each model in the state of its last transition and takes it up from there
(:meth:`Trainer.resume_unfinished`); an aggregate is taken only for the round the state awaits,
and only once, so no round is ever absorbed twice.

Everything that computes or calls a peer runs in the trainer's single worker thread, in the order
it was handed over; request handlers only check a delivery against the state and hand it over.

Transient faults (:func:`~common.protocol.errors.is_transient`: a storage fault here or at the
coordinator, a coordinator not reached once its client's retries are spent) never fail a job: the
job is *interrupted*, its run in memory dropped, and :meth:`Trainer.reconcile` takes it up again
from its last persisted transition once the store can be read, exactly as a restart would. The
same check orders again a round awaited for longer than ``reorder_after`` (the coordinator then
resumes it or delivers its aggregate again) and closes at the coordinator every final model it has
not closed yet, so the two views of a job cannot disagree for good.

While a job is interrupted, :meth:`Trainer.interruption` says why (what failed, since when, how
many faults in a row): ``GET /model/<id>`` shows it, so a fault that never ends is never a
``running`` without explanation. It is cleared once the coordinator takes the job's next order
(or the job ends); the user may cancel an interrupted job like any other in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from common.crypto.bigint import mpz
from common.dataset import load_columns
from common.protocol.errors import Conflict, DataError, FederatedError, NotFound, StorageUnavailable, is_transient
from common.protocol.messages import (
    MAX_REASON,
    FinishJob,
    JobInterruption,
    OpenJob,
    PrivacyDeclaration,
    PublicKeyMessage,
    RoundHistory,
)
from common.protocol.spec import RoundKind
from common.service.app import Worker
from common.service.clients import CoordinatorClient
from model_creator.config import ModelCreatorSettings
from model_creator.keystore import KeyStore
from model_creator.store import ModelStore
from model_creator.training import TrainingRequest, TrainingRun, Validation

logger = logging.getLogger(__name__)


class Phase(str, Enum):
    """Where a job is in its life."""

    PENDING = "pending"
    STATISTICS = "statistics"
    GRADIENT = "gradient"
    MOMENTS = "moments"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def awaiting(cls, kind: RoundKind) -> Phase:
        """The phase in which a round of ``kind`` is awaited."""
        return cls(kind)


ROUND_PHASES = frozenset({Phase.STATISTICS, Phase.GRADIENT, Phase.MOMENTS})
FINAL_PHASES = frozenset({Phase.FINISHED, Phase.FAILED, Phase.CANCELLED})


@dataclass(frozen=True)
class JobState:
    """A job's state: its phase and, in a round phase, the round it awaits."""

    phase: Phase
    round: int = 0

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    def awaits(self, kind: str, round_number: int) -> bool:
        """Whether the aggregate of ``kind`` round ``round_number`` is the one this state waits for."""
        return self.phase in ROUND_PHASES and self.phase.value == kind and self.round == round_number

    def __str__(self) -> str:
        return f"{self.phase.value} round {self.round}" if self.phase in ROUND_PHASES else self.phase.value


# --- Events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """The coordinator has the job; its first round is of ``first_kind``."""

    first_kind: RoundKind


@dataclass(frozen=True)
class Absorbed:
    """The awaited round's aggregate was decrypted and taken; ``done`` when the optimiser stopped."""

    record: RoundHistory
    next_kind: RoundKind
    done: bool


@dataclass(frozen=True)
class Failed:
    """The job cannot go on: a peer failed, a check refused an aggregate, the maths stopped."""

    reason: str


@dataclass(frozen=True)
class Cancelled:
    """The job was stopped on purpose before it finished."""

    reason: str


Event = Opened | Absorbed | Failed | Cancelled


def transition(state: JobState, event: Event) -> JobState:
    """The state ``event`` moves a job in ``state`` to: the one table of a job's life.

    Raises
    ------
    Conflict
        When ``event`` cannot happen in ``state``: an aggregate of another round than the awaited
        one, a second opening, anything after a final state.
    """
    if state.phase is Phase.PENDING and isinstance(event, Opened):
        return JobState(Phase.awaiting(event.first_kind), 0)
    if state.phase in ROUND_PHASES and isinstance(event, Absorbed) and event.record.round == state.round:
        if event.done:
            return JobState(Phase.FINISHED, state.round + 1)
        return JobState(Phase.awaiting(event.next_kind), state.round + 1)
    if not state.final and isinstance(event, Failed):
        return JobState(Phase.FAILED, state.round)
    if not state.final and isinstance(event, Cancelled):
        return JobState(Phase.CANCELLED, state.round)
    raise Conflict(f"a job in state {state} cannot take {type(event).__name__}")


# --- The driver -----------------------------------------------------------------------------


@dataclass
class Job:
    """A job the trainer is driving: its state, its run once built, the round delivered but not absorbed.

    ``ordered_at`` is when its awaited round was last ordered (monotonic seconds).
    """

    model_id: str
    state: JobState
    run: TrainingRun | None = None
    delivered: int | None = None
    ordered_at: float = 0.0


@dataclass(frozen=True)
class Interruption:
    """A job's run of transient faults: the latest one's message, when the first came, how many."""

    reason: str
    since: float
    attempts: int


class Trainer:
    """Starts jobs and moves each through its states, in its worker thread."""

    def __init__(
        self,
        store: ModelStore,
        keys: KeyStore,
        coordinator: CoordinatorClient,
        worker: Worker,
        settings: ModelCreatorSettings,
    ) -> None:
        self.store = store
        self.keys = keys
        self.coordinator = coordinator
        self.worker = worker
        self.settings = settings
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._interrupted: set[str] = set()
        self._interruptions: dict[str, Interruption] = {}
        self._queued: set[tuple[str, str]] = set()

    # -- what request handlers call ----------------------------------------------------------

    def start(self, request: TrainingRequest) -> str:
        """Record a new model as pending and hand the opening of its job to the worker; returns its id."""
        model_id = self.store.create(request.to_json())
        self._hand_over(model_id, JobState(Phase.PENDING), self._open, request, None)
        return model_id

    def resume_unfinished(self) -> int:
        """After a restart: take up every pending or running model in the state it was left in."""
        unfinished = self.store.unfinished()
        for model in unfinished:
            logger.info("resuming model %s", model.model_id)
            request = TrainingRequest.from_json(model.request)
            self._hand_over(model.model_id, JobState(Phase.PENDING), self._open, request, model.state)
        return len(unfinished)

    def interruption(self, model_id: str) -> JobInterruption | None:
        """Why the job of ``model_id`` waits, while a transient fault interrupts it; else ``None``."""
        with self._lock:
            interruption = self._interruptions.get(model_id)
        if interruption is None:
            return None
        every = self.settings.reconcile_interval
        return JobInterruption(
            reason=interruption.reason,
            since=interruption.since,
            attempts=interruption.attempts,
            retry_every=every,
            note=f"the job waits and is resumed from its last saved round every {every:g} s until this fault ends;"
            f" POST /model/{model_id}/cancel stops it",
        )

    def run(self, model_id: str) -> TrainingRun:
        """The run of a job in flight.

        Raises
        ------
        StorageUnavailable
            While the job is interrupted or being resumed (its run not built yet): the caller
            (the coordinator delivering an aggregate) tries again later.
        NotFound
            When no job of ``model_id`` is in flight here.
        """
        with self._lock:
            job = self._jobs.get(model_id)
            if model_id in self._interrupted or (job is not None and job.run is None):
                raise StorageUnavailable(f"model {model_id} is resuming after a transient fault; deliver again later")
        if job is None or job.run is None:
            raise NotFound(f"model {model_id} has no job in flight")
        return job.run

    def accept_aggregate(
        self,
        model_id: str,
        round_number: int,
        kind: str,
        ciphertexts: Sequence[mpz],
        data_owners: list[str],
        failures: dict[str, str],
        privacy: Mapping[str, PrivacyDeclaration] | None = None,
    ) -> None:
        """Hand a checked aggregate to the worker.

        Raises
        ------
        NotFound
            When no job of ``model_id`` is in flight.
        Conflict
            For an aggregate of another round than the awaited one, or a second one for it (a
            delivery repeated by the coordinator): no round is ever absorbed twice.
        """
        with self._lock:
            job = self._jobs.get(model_id)
            if model_id in self._interrupted or (job is not None and job.run is None):
                raise StorageUnavailable(f"model {model_id} is resuming after a transient fault; deliver again later")
            if job is None:
                raise NotFound(f"model {model_id} has no job in flight")
            if not job.state.awaits(kind, round_number):
                raise Conflict(f"model {model_id} awaits {job.state}, not {kind} round {round_number}")
            if job.delivered == round_number:
                raise Conflict(f"model {model_id} already has the aggregate of round {round_number}")
            job.delivered = round_number
        self.worker.submit(
            self._absorb, model_id, ciphertexts, data_owners, failures, privacy, on_error=self._failure_of(model_id)
        )

    def accept_failure(self, model_id: str, reason: str) -> None:
        """Hand the coordinator's report that the job cannot go on to the worker.

        Raises
        ------
        NotFound
            When no job of ``model_id`` is in flight.
        """
        self.run(model_id)
        self.worker.submit(self._apply, model_id, Failed(reason))

    def cancel(self, model_id: str, reason: str) -> None:
        """Stop a job in flight; it ends ``cancelled`` and the coordinator is told to close it.

        An interrupted job (waiting out a transient fault) is cancelled from its stored state,
        without being resumed first.

        Raises
        ------
        NotFound
            When no job of ``model_id`` is in flight.
        """
        with self._lock:
            if model_id in self._interrupted:
                self._interrupted.discard(model_id)
                self._jobs[model_id] = Job(model_id, JobState(Phase.PENDING))
            elif model_id not in self._jobs:
                raise NotFound(f"model {model_id} has no job in flight")
        self.worker.submit(self._apply, model_id, Cancelled(reason), on_error=self._failure_of(model_id))

    # -- what runs in the worker -------------------------------------------------------------

    def _hand_over(self, model_id: str, state: JobState, task: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._jobs[model_id] = Job(model_id, state)
        self.worker.submit(task, model_id, *args, on_error=self._failure_of(model_id))

    def _failure_of(self, model_id: str) -> Callable[[Exception], None]:
        """What a job's failed step means: a transient fault interrupts it, any other error fails it."""

        def record(error: Exception) -> None:
            if isinstance(error, FederatedError) and is_transient(error):
                self._interrupt(model_id, error)
            else:
                self._apply(model_id, Failed(_reason(error)))

        return record

    def _interrupt(self, model_id: str, error: FederatedError) -> None:
        """Drop a job's run after a transient fault; :meth:`reconcile` takes it up from the store."""
        with self._lock:
            job = self._jobs.pop(model_id, None)
            self._interrupted.add(model_id)
        self._note_fault(model_id, error.message)
        if job is not None and job.run is not None:
            job.run.close()
        logger.warning(
            "model %s interrupted by a transient fault (%s); it resumes from its last saved round",
            model_id,
            error.message,
        )

    def _note_fault(self, model_id: str, reason: str) -> None:
        """Count one more transient fault in the job's current interruption (starting one if none)."""
        with self._lock:
            previous = self._interruptions.get(model_id)
            self._interruptions[model_id] = Interruption(
                reason,
                time.time() if previous is None else previous.since,
                1 if previous is None else previous.attempts + 1,
            )

    # -- what the reconciler thread calls ----------------------------------------------------

    def reconcile_forever(self, stop: threading.Event) -> None:
        """Call :meth:`reconcile` every ``reconcile_interval`` seconds until ``stop`` is set."""
        while not stop.wait(self.settings.reconcile_interval):
            try:
                self.reconcile()
            except FederatedError as exc:
                logger.warning("reconciling jobs: %s; trying again later", exc.message)

    def reconcile(self) -> None:
        """Take up interrupted jobs, order stalled rounds again, close final models at the coordinator.

        The work is handed to the worker, after what it was handed before.

        Raises
        ------
        StorageUnavailable
            When the store cannot be read yet; nothing changed, and the next call tries again.
        """
        now = time.monotonic()
        with self._lock:
            interrupted = set(self._interrupted)
            stalled = [
                job.model_id
                for job in self._jobs.values()
                if job.state.phase in ROUND_PHASES
                and job.run is not None
                and job.delivered is None
                and now - job.ordered_at >= self.settings.reorder_after
            ]
        if interrupted:
            for model in self.store.unfinished():
                with self._lock:
                    # Taken up only if still interrupted: a cancel may have come in meanwhile. The
                    # job is in flight again (without its run until it is rebuilt) before it stops
                    # counting as interrupted, so a delivery meanwhile hears "later", never "unknown".
                    resume = model.model_id in interrupted and model.model_id in self._interrupted
                    if resume:
                        self._jobs[model.model_id] = Job(model.model_id, JobState(Phase.PENDING))
                        self._interrupted.discard(model.model_id)
                if resume:
                    logger.info("model %s: resuming after a transient fault", model.model_id)
                    request = TrainingRequest.from_json(model.request)
                    self._hand_over(model.model_id, JobState(Phase.PENDING), self._open, request, model.state)
        for model_id in stalled:
            self._submit_once(("reorder", model_id), self._reorder, model_id, on_error=self._failure_of(model_id))
        for model_id, status, error in self.store.unclosed():
            self._submit_once(("close", model_id), self._close, model_id, status, error)

    def _submit_once(
        self,
        key: tuple[str, str],
        task: Callable[..., None],
        *args: Any,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Hand ``task`` to the worker unless the same one waits there still (a peer may be slow for long)."""
        with self._lock:
            if key in self._queued:
                return
            self._queued.add(key)

        def once(*task_args: Any) -> None:
            with self._lock:
                self._queued.discard(key)
            task(*task_args)

        self.worker.submit(once, *args, on_error=on_error)

    def _open(self, model_id: str, request: TrainingRequest, saved: dict[str, Any] | None) -> None:
        """Build the run (restoring a saved one), open the job at the coordinator, await its round."""
        private_key = self.keys.private_key()
        validation, metrics_note = self._validation_data(request)
        run = TrainingRun(model_id, request, private_key, self.settings, validation, metrics_note)
        if saved is not None:
            run.restore(saved)
        job = self._job(model_id)
        with self._lock:
            job.run = run
            if saved is not None:
                # The persisted state of a running model: the round its last transition awaits.
                job.state = JobState(Phase.awaiting(run.next_kind), run.round)
        message = OpenJob(
            spec=run.spec, public_key=PublicKeyMessage.of(private_key.public_key), callback_url=self.settings.public_url
        )
        try:
            self.coordinator.open_job(message)
        except Conflict:
            logger.info("model %s: the coordinator already has its job", model_id)
        logger.info(
            "model %s: job open at the coordinator (%d coefficients, %d slots per ciphertext)",
            model_id,
            run.spec.dimension,
            run.spec.layout.slots_per_ciphertext,
        )
        if job.state.phase is Phase.PENDING:
            self._apply(model_id, Opened(run.next_kind))
        else:
            self._enter(job)

    def _absorb(
        self,
        model_id: str,
        ciphertexts: Sequence[mpz],
        data_owners: list[str],
        failures: dict[str, str],
        privacy: Mapping[str, PrivacyDeclaration] | None,
    ) -> None:
        """Decrypt and take the awaited round's aggregate, then move the job on."""
        run = self.run(model_id)
        record = run.absorb(ciphertexts, data_owners, failures, privacy)
        logger.info(
            "model %s round %d (%s): %d contributor(s)", model_id, record.round, record.kind, record.contributors
        )
        self._apply(model_id, Absorbed(record, run.next_kind, run.done))

    def _apply(self, model_id: str, event: Event) -> None:
        """Take ``event``: the transition, persisted, then the new state's entry action."""
        with self._lock:
            job = self._jobs.get(model_id)
        if job is None:
            logger.warning("model %s: %s ignored, the job is no longer in flight", model_id, type(event).__name__)
            return
        state = transition(job.state, event)
        self._persist(job, state, event)
        with self._lock:
            job.state, job.delivered = state, None
        self._enter(job, event.reason if isinstance(event, Failed | Cancelled) else None)

    def _persist(self, job: Job, state: JobState, event: Event) -> None:
        """Record a transition in the store, atomically with what it produced."""
        if isinstance(event, Failed):
            self.store.fail(job.model_id, event.reason)
            logger.warning("model %s failed: %s", job.model_id, event.reason)
            return
        if isinstance(event, Cancelled):
            self.store.cancel(job.model_id, event.reason)
            logger.info("model %s cancelled: %s", job.model_id, event.reason)
            return
        run = job.run
        assert run is not None, "a job is opened and absorbs aggregates only once its run is built"
        if isinstance(event, Opened):
            self.store.set_running(job.model_id, run.private_key.public_key.fingerprint, run.state())
        elif state.phase is Phase.FINISHED:
            self.store.finish(job.model_id, run.result(), event.record)
            logger.info("model %s finished after %d round(s): %s", job.model_id, state.round, run.optimizer.stop_reason)
        else:
            self.store.record_round(job.model_id, event.record, run.state())

    def _enter(self, job: Job, reason: str | None = None) -> None:
        """The entry action of the job's state: order the awaited round, or close the job."""
        state = job.state
        if state.phase in ROUND_PHASES:
            assert job.run is not None
            job.ordered_at = time.monotonic()
            started = self.coordinator.order_round(job.model_id, job.run.round_order())
            if started.interrupted_by is not None:
                # Resumed there after a fault of the coordinator's own: the job still waits on it.
                self._note_fault(job.model_id, f"the coordinator stopped {state}: {started.interrupted_by}")
                logger.warning(
                    "model %s: the coordinator resumed %s, stopped by a fault of its own (%s)",
                    job.model_id,
                    state,
                    started.interrupted_by,
                )
            else:
                self._moved_on(job.model_id)
            return
        if not state.final:
            return
        with self._lock:
            self._jobs.pop(job.model_id, None)
        self._moved_on(job.model_id)
        if job.run is not None:
            job.run.close()
        self._close(job.model_id, state.phase.value, reason)

    def _moved_on(self, model_id: str) -> None:
        """The job got past its interruption, if it had one: the coordinator took its order, or it ended."""
        with self._lock:
            interruption = self._interruptions.pop(model_id, None)
        if interruption is not None:
            logger.info(
                "model %s: going on after %d transient fault(s) in %.0f s",
                model_id,
                interruption.attempts,
                time.time() - interruption.since,
            )

    def _reorder(self, model_id: str) -> None:
        """Order a round awaited for too long again (its first order or its aggregate may have been lost)."""
        with self._lock:
            job = self._jobs.get(model_id)
        if job is None or job.run is None or job.state.phase not in ROUND_PHASES or job.delivered is not None:
            return
        logger.info(
            "model %s: %s awaited for %.0f s; ordering it again", model_id, job.state, self.settings.reorder_after
        )
        started = job.run.round_started
        self._enter(job)
        job.run.round_started = started

    def _close(self, model_id: str, status: str, reason: str | None) -> None:
        """Close a final model's job at the coordinator and record that it is closed.

        A failure is logged; :meth:`reconcile` tries again until the coordinator has it. A job the
        coordinator does not know (one cancelled while a fault kept it from being opened there)
        has nothing to close: it is recorded closed.
        """
        if status == Phase.FINISHED.value:
            message = FinishJob(status="finished")
        else:
            prefix = "cancelled: " if status == Phase.CANCELLED.value else ""
            message = FinishJob(status="failed", error=(prefix + (reason or status))[:MAX_REASON])
        try:
            try:
                self.coordinator.finish_job(model_id, message)
            except NotFound:
                logger.info("job %s was never opened at the coordinator: nothing to close there", model_id)
            self.store.set_closed(model_id)
        except FederatedError as exc:
            logger.warning("could not close job %s at the coordinator yet: %s", model_id, exc.message)

    def _job(self, model_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(model_id)
        if job is None:
            raise NotFound(f"model {model_id} has no job in flight")
        return job

    def _validation_data(self, request: TrainingRequest) -> tuple[Validation | None, str | None]:
        """The test data's columns for the job, or why there are none (the model says so)."""
        if self.settings.test_data is None:
            return None, "no metrics: the model creator has no test data"
        try:
            features, labels = load_columns(self.settings.test_data, request.features, request.label)
        except DataError as exc:
            column = f" column {exc.column!r}" if exc.column else ""
            reason = "has no" if exc.code == "missing_column" else f"cannot score the model ({exc.code}) in"
            return None, f"no metrics: the model creator's test data {reason}{column}"
        return (features, labels), None


def _reason(error: Exception) -> str:
    """What a job's failure record says of ``error``: its message, never a traceback."""
    if isinstance(error, FederatedError):
        return error.message
    return f"internal error: {type(error).__name__}: {error}"
