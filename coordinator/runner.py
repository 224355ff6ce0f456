"""The coordinator's side of a round: the transport and threads around :mod:`coordinator.policy`.

Runs in the coordinator's worker, never inside a request. Requests to data owners go out
concurrently through their typed clients; their replies arrive as requests of their own and are
collected by a :class:`~coordinator.rounds.RoundCollector`. What an attempt's replies and failures
mean (aggregate, try again, fail the job) is the policy's decision; the state of the round is the
store's record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Literal

from common.crypto.bigint import mpz
from common.protocol.errors import Conflict, FederatedError, NotFound, UpstreamError
from common.protocol.messages import Aggregate, JobFailure, JoinJob, PublicKeyMessage, RoundRequest
from common.protocol.spec import RoundKind
from common.protocol.wire import encode_ciphertexts
from common.service.app import Worker
from common.service.clients import DataOwnerClient, ModelCreatorClient
from common.service.http import PeerClient
from coordinator.config import CoordinatorSettings
from coordinator.policy import Accept, Fail, Retry, RoundPolicy, aggregate, refuses_job
from coordinator.rounds import RoundCollector, RoundRegistry
from coordinator.store import CoordinatorStore, DataOwnerAddress, Job, RoundState

logger = logging.getLogger(__name__)

RoundOutcome = Literal["started", "in progress", "resumed", "delivering again"]


class RoundRunner:
    """Drives the rounds of every job of one coordinator.

    Parameters
    ----------
    sleep, clock
        How the runner waits between attempts and measures a round; tests inject their own.
    """

    def __init__(
        self,
        store: CoordinatorStore,
        http: PeerClient,
        registry: RoundRegistry,
        worker: Worker,
        settings: CoordinatorSettings,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.http = http
        self.registry = registry
        self.worker = worker
        self.settings = settings
        self._sleep = sleep
        self._clock = clock
        self._fan_out = ThreadPoolExecutor(max_workers=settings.fan_out_threads, thread_name_prefix="fan-out")

    def request_round(self, job_id: str, round_number: int, kind: RoundKind, weights: list[str] | None) -> RoundOutcome:
        """Start a round, or pick up one the model creator asks for again; returns what was done.

        Asking again is how a restarted model creator resumes: a round still running here goes
        on (or is resumed, after a restart of this coordinator), an aggregated one is delivered
        again, a failed one is a conflict. A round is never run twice to completion.

        Raises
        ------
        Conflict
            When the round exists as a round of another kind, or failed.
        """
        existing = self.store.round(job_id, round_number)
        if existing is None:
            self.store.start_round(job_id, round_number, kind, weights)
            self._submit_round(job_id, round_number)
            return "started"
        if existing.kind != kind:
            raise Conflict(f"round {round_number} of job {job_id} is a {existing.kind} round")
        if existing.status == "running":
            return "resumed" if self._submit_round(job_id, round_number) else "in progress"
        if existing.status == "aggregated":
            self.worker.submit(self.deliver, job_id, round_number)
            return "delivering again"
        raise Conflict(f"round {round_number} of job {job_id} failed")

    def resume_unfinished(self) -> int:
        """After a restart: pick up every round that was not done; returns how many.

        A round that was running is run again; an aggregate not yet delivered is delivered.
        """
        unfinished = self.store.unfinished_rounds()
        for state in unfinished:
            logger.info("resuming job %s round %d (%s)", state.job_id, state.round, state.status)
            if state.status == "running":
                self._submit_round(state.job_id, state.round)
            else:
                self.worker.submit(self.deliver, state.job_id, state.round)
        return len(unfinished)

    def _submit_round(self, job_id: str, round_number: int) -> bool:
        """Run the round in the worker unless it runs already; whether it was submitted."""
        if not self.registry.claim(job_id, round_number):
            return False

        def on_error(exc: Exception) -> None:
            self.fail_job(job_id, f"round {round_number}: {getattr(exc, 'message', exc)}")

        self.worker.submit(self._run_claimed_round, job_id, round_number, on_error=on_error)
        return True

    def _run_claimed_round(self, job_id: str, round_number: int) -> None:
        try:
            self.run_round(job_id, round_number)
        finally:
            self.registry.release(job_id, round_number)

    def run_round(self, job_id: str, round_number: int) -> None:
        """Run one round to its end: the aggregate goes to the model creator, or the job fails."""
        job = self.store.job(job_id)
        state = self.store.round(job_id, round_number)
        if state is None:
            raise NotFound(f"round {round_number} of job {job_id} was never started")
        policy = RoundPolicy.for_job(job.spec, self.settings.round_retries)
        started = self._clock()
        for attempts_made in range(1, policy.attempts + 1):
            state = state.replace(attempt=state.attempt + 1)
            self.store.save_round(state)
            registered = self.store.data_owners()
            refused = self.store.refused(job_id)
            asked = {name: registered[name] for name in policy.participants(registered, refused)}
            replies, failures = self._gather(job, state, asked)
            decision = policy.decide(round_number, attempts_made, registered, replies, {**refused, **failures})
            if isinstance(decision, Accept):
                self._aggregate(job, state, decision, replies, self._clock() - started)
                return
            if isinstance(decision, Fail):
                failed = state.replace(status="failed", failures=decision.failures, seconds=self._clock() - started)
                self.store.save_round(failed)
                self.fail_job(job_id, decision.reason)
                return
            assert isinstance(decision, Retry)
            logger.warning("job %s round %d: %s", job_id, round_number, decision.reason)
            self._sleep(self.settings.retry_delay)

    def _aggregate(
        self, job: Job, state: RoundState, decision: Accept, replies: dict[str, list[mpz]], seconds: float
    ) -> None:
        summed = aggregate(job.public_key.nsquare, [replies[name] for name in decision.contributors])
        message = Aggregate(
            round=state.round,
            kind=state.kind,
            key_fingerprint=job.public_key.fingerprint,
            ciphertexts=encode_ciphertexts(summed, job.public_key),
            contributors=list(decision.contributors),
            failures=decision.failures,
        )
        aggregated = state.replace(
            status="aggregated",
            contributors=decision.contributors,
            failures=decision.failures,
            seconds=seconds,
            aggregate=message,
        )
        self.store.save_round(aggregated)
        logger.info(
            "job %s round %d: aggregated %d contribution(s)", job.job_id, state.round, len(decision.contributors)
        )
        self.deliver(job.job_id, state.round)

    def deliver(self, job_id: str, round_number: int) -> None:
        """Send a round's stored aggregate to the model creator.

        A model creator that cannot be reached keeps its job: the aggregate stays stored here
        until it asks for the round again (which a restarted model creator does).
        """
        job = self.store.job(job_id)
        state = self.store.round(job_id, round_number)
        if state is None or state.aggregate is None:
            raise NotFound(f"round {round_number} of job {job_id} has no aggregate")
        try:
            self._model_creator(job).deliver(job_id, state.aggregate)
        except UpstreamError as exc:
            logger.warning(
                "job %s round %d: aggregate kept until the model creator asks again: %s",
                job_id,
                round_number,
                exc.message,
            )
            return
        self.store.save_round(state.replace(delivered=True))

    def fail_job(self, job_id: str, reason: str) -> None:
        """Mark a job failed here and tell the model creator why."""
        self.store.set_job_status(job_id, "failed", reason)
        job = self.store.job(job_id)
        logger.error("job %s failed: %s", job_id, reason)
        try:
            self._model_creator(job).report_failure(job_id, JobFailure(error=reason))
        except FederatedError as exc:
            logger.error("could not tell the model creator that job %s failed: %s", job_id, exc.message)

    def forget_job(self, job_id: str) -> None:
        """Drop a finished job's state here and at every owner that joined it (best effort)."""
        owners = self.store.data_owners()
        for name in sorted(self.store.joined(job_id) & owners.keys()):
            try:
                self._data_owner(owners[name]).leave(job_id)
            except FederatedError as exc:
                logger.warning("could not release job %s at %s: %s", job_id, name, exc.message)
        self.store.forget_members(job_id)

    def _gather(
        self, job: Job, state: RoundState, asked: dict[str, DataOwnerAddress]
    ) -> tuple[dict[str, list[mpz]], dict[str, str]]:
        """Ask ``asked`` for the attempt's replies; returns (replies, failures) once all are in or time is up."""
        weights = {} if state.weights is None else {"encrypted_weights": list(state.weights)}
        request = RoundRequest(
            round=state.round,
            attempt=state.attempt,
            kind=state.kind,
            key_fingerprint=job.public_key.fingerprint,
            **weights,
        )
        collector = RoundCollector(job.job_id, state.round, state.attempt, state.kind, frozenset(asked))
        self.registry.open(collector)
        try:
            for name, address in asked.items():
                future = self._fan_out.submit(self._ask, job, name, address, request)
                future.add_done_callback(partial(_record_failure, collector, name))
            return collector.wait(self.settings.round_timeout)
        finally:
            self.registry.close(collector)

    def _ask(self, job: Job, name: str, address: DataOwnerAddress, request: RoundRequest) -> str | None:
        """Send one owner the round, joining it to the job first when it has not joined (or forgot).

        Returns ``None`` once the owner accepted the round, else why it will not reply.
        """
        owner = self._data_owner(address)
        try:
            refusal = None if name in self.store.joined(job.job_id) else self._join(owner, job, name)
            if refusal is not None:
                return refusal
            try:
                owner.request_round(job.job_id, request)
            except NotFound:
                refusal = self._join(owner, job, name)
                if refusal is not None:
                    return refusal
                owner.request_round(job.job_id, request)
        except FederatedError as exc:
            return exc.message
        return None

    def _join(self, owner: DataOwnerClient, job: Job, name: str) -> str | None:
        """Join ``name`` to the job; returns why it refused, and it is not asked again for the job.

        Raises
        ------
        FederatedError
            When the owner could not be reached or failed without refusing: it may join later.
        """
        message = JoinJob(spec=job.spec, public_key=PublicKeyMessage.of(job.public_key))
        try:
            owner.join(job.job_id, message)
        except FederatedError as exc:
            if not refuses_job(exc):
                raise
            reason = f"refused the job: {exc.message}"
            self.store.set_refused(job.job_id, name, reason)
            return reason
        self.store.set_joined(job.job_id, name)
        return None

    def _data_owner(self, address: DataOwnerAddress) -> DataOwnerClient:
        return DataOwnerClient(self.http, address.url, address.token)

    def _model_creator(self, job: Job) -> ModelCreatorClient:
        return ModelCreatorClient(self.http, job.callback_url, self.settings.coordinator_token)


def _record_failure(collector: RoundCollector, name: str, future: Future[str | None]) -> None:
    """A request to an owner that failed is that owner's failure for the attempt, with its reason."""
    error = future.exception()
    reason = f"{type(error).__name__}: {error}" if error is not None else future.result()
    if reason is not None:
        collector.fail(name, reason)
