"""The coordinator's side of a round: the transport and threads around :mod:`coordinator.policy`.

Runs in the coordinator's worker, never inside a request. Requests to data owners go out
concurrently through their typed clients; their replies arrive as requests of their own and are
collected by a :class:`~coordinator.rounds.RoundCollector`. What an attempt's replies and failures
mean (aggregate, try again, fail the job) is the policy's decision; the state of the round is the
store's record.

An attempt has a fixed member set (PROTOCOL.md section 9): the participants are joined first (the
missing ones concurrently), each join answer must carry the owner's job key signed by the identity
key its name is bound to, and every member is sent the same round request, listing every member's
signed job key. The owners mask their replies for exactly that member set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Literal, TypeGuard

from common.crypto.bigint import mpz
from common.protocol.errors import (
    Conflict,
    FederatedError,
    NotFound,
    PeerUnreachable,
    ProtocolViolation,
    Refused,
    StorageUnavailable,
    UpstreamError,
    is_transient,
)
from common.protocol.messages import (
    Aggregate,
    AttemptRecord,
    JobFailure,
    JobJoined,
    JoinJob,
    MemberKey,
    PublicKeyMessage,
    RoundRequest,
)
from common.protocol.spec import RoundKind
from common.protocol.wire import encode_ciphertexts
from common.service.app import Worker
from common.service.clients import DataOwnerClient, ModelCreatorClient, wire_size
from common.service.http import PeerClient
from coordinator.config import CoordinatorSettings
from coordinator.liveness import Liveness, SilenceWatch
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

    The owners that went silent in a round are :attr:`liveness`'s offline ones: later attempts
    and rounds go on without them while the quorum is met (:mod:`coordinator.liveness`).
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
        self.liveness = Liveness(self._answers_health, settings.health_interval, store)
        self.store = store
        self.http = http
        self.registry = registry
        # The transient fault that stopped each round's last run, until an order resumes it.
        self._faults: dict[tuple[str, int], str] = {}
        self._faults_lock = threading.Lock()
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
            # Written again before it is picked up: while this party's store fails, the caller gets
            # the 503 (and its job shows the fault) rather than a 202 for a round that cannot run.
            resumed = self._resume_round(job_id, round_number)
            if resumed != "ended":
                return resumed
            # Its run ended between the read above and the claim: answer from what it left.
            existing = self.store.round(job_id, round_number)
            assert existing is not None, "a round once started is never deleted"
        if existing.status == "aggregated":
            self.worker.submit(self.deliver, job_id, round_number)
            return "delivering again"
        raise Conflict(f"round {round_number} of job {job_id} failed")

    def take_fault(self, job_id: str, round_number: int) -> str | None:
        """The transient fault that stopped the round's last run here, once (the order that resumes it tells it)."""
        with self._faults_lock:
            return self._faults.pop((job_id, round_number), None)

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

    def _submit_round(self, job_id: str, round_number: int) -> None:
        """Run a round just started (or found running at start-up) in the worker, unless it runs already."""
        if self.registry.claim(job_id, round_number):
            self._run_in_worker(job_id, round_number)

    def _resume_round(self, job_id: str, round_number: int) -> Literal["resumed", "in progress", "ended"]:
        """Run a round the model creator asks for again, unless a run of it goes on here or has ended.

        The round's state is read once the round is claimed: a run that ended between the
        caller's read and the claim is never followed by a second run, which would ask the owners
        again and deliver an aggregate the model creator has already absorbed and moved past. The
        state is written again before it is submitted; what fails there releases the claim and
        goes to the caller.
        """
        if not self.registry.claim(job_id, round_number):
            return "in progress"
        try:
            state = self.store.round(job_id, round_number)
            running = state if state is not None and state.status == "running" else None
            if running is not None:
                self.store.save_round(running)
        except BaseException:
            self.registry.release(job_id, round_number)
            raise
        if running is None:
            self.registry.release(job_id, round_number)
            return "ended"
        self._run_in_worker(job_id, round_number)
        return "resumed"

    def _run_in_worker(self, job_id: str, round_number: int) -> None:
        """Hand a claimed round to the worker; a transient fault leaves it to be resumed when asked again."""

        def on_error(exc: Exception) -> None:
            if isinstance(exc, FederatedError) and is_transient(exc):
                # The round stays as stored; the model creator's asking again resumes it, and
                # learns from the answer what stopped it (:meth:`take_fault`).
                with self._faults_lock:
                    self._faults[(job_id, round_number)] = exc.message
                logger.warning(
                    "job %s round %d interrupted (%s); resumed when asked again", job_id, round_number, exc.message
                )
                return
            self.fail_job(job_id, f"round {round_number}: {getattr(exc, 'message', exc)}")

        self.worker.submit(self._run_claimed_round, job_id, round_number, on_error=on_error)

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
        left_out: dict[str, str] = {}
        for attempts_made in range(1, policy.attempts + 1):
            state = state.replace(attempt=state.attempt + 1)
            self.store.save_round(state)
            attempt_started = time.time()
            registered = self.store.data_owners()
            # Every participant joins before the member set is fixed; those that never joined, or
            # forgot the job, concurrently.
            joined = self.store.member_keys(job_id)
            refused_before = self.store.refused(job_id)
            offline = self.liveness.offline()
            missing = {
                name: registered[name]
                for name in policy.participants(registered, refused_before)
                if name not in joined and name not in left_out and name not in offline
            }
            join_failures = self._join_all(job, missing)
            # Only a join changes who refused or holds a key: read them again only after joins.
            refused = self.store.refused(job_id) if missing else refused_before
            member_keys = self.store.member_keys(job_id) if missing else joined
            members = policy.member_set(policy.participants(registered, refused), member_keys, left_out, offline)
            skipped = {
                name: f"offline ({reason})"
                for name, reason in offline.items()
                if name in registered and name not in members
            }
            quorate = policy.quorate(members)
            if quorate:
                asked = {name: (registered[name], member_keys[name]) for name in members}
                replies, failures, sizes = self._gather(job, state, asked)
            else:
                replies, failures, sizes = {}, {}, {}
            record = AttemptRecord(
                attempt=state.attempt,
                members=sorted(members) if quorate else [],
                started_at=attempt_started,
                finished_at=time.time(),
                contribution_bytes=sizes,
            )
            state = state.replace(attempt_log=(*state.attempt_log, record))
            # A member whose job key was dropped while asking it had forgotten the job: joined again next time.
            still_joined = self.store.member_keys(job_id)
            rejoining = [name for name in members if name not in still_joined]
            decision = policy.decide(
                round_number,
                attempts_made,
                registered,
                members,
                replies,
                {**skipped, **refused, **join_failures, **left_out, **failures},
                rejoining,
            )
            if isinstance(decision, Accept):
                self._aggregate(job, state, decision, replies, member_keys, self._clock() - started)
                return
            if isinstance(decision, Fail):
                failed = state.replace(
                    status="failed",
                    failures=decision.failures,
                    seconds=self._clock() - started,
                    finished_at=time.time(),
                )
                self.store.save_round(failed)
                self.fail_job(job_id, decision.reason)
                return
            assert isinstance(decision, Retry)
            self.store.save_round(state)
            logger.warning("job %s round %d: %s", job_id, round_number, decision.reason)
            left_out.update(decision.left_out)
            self._sleep(self.settings.retry_delay)

    def _aggregate(
        self,
        job: Job,
        state: RoundState,
        decision: Accept,
        replies: dict[str, list[mpz]],
        keys: dict[str, MemberKey],
        seconds: float,
    ) -> None:
        """Sum the contributions, store the aggregate and deliver it.

        ``keys`` are the job keys the attempt asked its members under: each contributor's privacy
        declaration travels with the aggregate from the very key its reply was made for.
        """
        summed = aggregate(job.public_key.nsquare, [replies[name] for name in decision.contributors])
        privacy = {
            name: declaration
            for name in decision.contributors
            if name in keys and (declaration := keys[name].privacy) is not None
        }
        message = Aggregate(
            round=state.round,
            kind=state.kind,
            key_fingerprint=job.public_key.fingerprint,
            ciphertexts=encode_ciphertexts(summed, job.public_key),
            contributors=list(decision.contributors),
            failures=decision.failures,
            privacy=privacy,
        )
        aggregated = state.replace(
            status="aggregated",
            contributors=decision.contributors,
            failures=decision.failures,
            seconds=seconds,
            finished_at=time.time(),
            aggregate=message,
            aggregate_bytes=wire_size(message),
        )
        self.store.save_round(aggregated)
        logger.info(
            "job %s round %d: aggregated %d contribution(s)", job.job_id, state.round, len(decision.contributors)
        )
        self.deliver(job.job_id, state.round)

    def deliver(self, job_id: str, round_number: int) -> None:
        """Send a round's stored aggregate to the model creator.

        A model creator that cannot be reached keeps its job: the aggregate stays stored here
        until it asks for the round again (which a restarted model creator does). One that
        answers 409 does not await this aggregate: it took it from a delivery under way at the
        same time (a round asked for again while it was being delivered), or has gone on past
        it. That is no failure of the job.
        """
        job = self.store.job(job_id)
        state = self.store.round(job_id, round_number)
        if state is None or state.aggregate is None:
            raise NotFound(f"round {round_number} of job {job_id} has no aggregate")
        try:
            self._model_creator(job).deliver(job_id, state.aggregate)
        except Conflict as exc:
            logger.info(
                "job %s round %d: the model creator has the aggregate already (%s)", job_id, round_number, exc.message
            )
        except FederatedError as exc:
            if not (isinstance(exc, UpstreamError) or is_transient(exc)):
                raise
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
        logger.warning("job %s failed: %s", job_id, reason)
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

    def _join_all(self, job: Job, owners: dict[str, DataOwnerAddress]) -> dict[str, str]:
        """Join ``owners`` to the job concurrently; returns owner → why it did not join.

        An owner whose answer is a refusal is recorded as having refused the job (and is not
        asked again for it); any other failure, a bad job key included, leaves it free to join
        at a later attempt. An owner that goes silent while joining (it misses its health checks,
        as in a round) is not waited for: it is offline, and the attempt goes on without it.
        """
        futures = {name: self._fan_out.submit(self._join, job, name, address) for name, address in owners.items()}
        watch = SilenceWatch(
            self.liveness, {name: address.url for name, address in owners.items()}, self.settings.health_misses
        )
        failures = {}
        pending = dict(futures)
        next_watch = self._clock() + self.settings.health_interval
        while pending:
            wait(pending.values(), timeout=max(0.0, next_watch - self._clock()), return_when=FIRST_COMPLETED)
            for name in [name for name, future in pending.items() if future.done()]:
                future = pending.pop(name)
                error = future.exception()
                if _own_storage_fault(error):
                    raise error
                reason = f"could not join: {type(error).__name__}: {error}" if error is not None else future.result()
                if reason is not None:
                    failures[name] = reason
            if not pending or self._clock() < next_watch:
                continue
            next_watch = self._clock() + self.settings.health_interval
            for name, reason in watch(pending).items():
                del pending[name]
                failures[name] = f"could not join: {reason}"
                self.liveness.mark_offline(name, owners[name].url, f"silent while joining job {job.job_id}")
        return failures

    def _join(self, job: Job, name: str, address: DataOwnerAddress) -> str | None:
        """Join ``name`` to the job and keep its signed job key; returns why it did not join, else None."""
        message = JoinJob(spec=job.spec, public_key=PublicKeyMessage.of(job.public_key))
        try:
            joined = self._data_owner(address).join(job.job_id, message)
        except StorageUnavailable as exc:
            if exc.peer is None:
                raise
            return f"could not join: {exc.message}"
        except PeerUnreachable as exc:
            self.liveness.mark_offline(name, address.url, f"not reached to join job {job.job_id}")
            return f"could not join: {exc.message}"
        except FederatedError as exc:
            if not refuses_job(exc):
                return f"could not join: {exc.message}"
            reason = f"refused the job: {exc.message}"
            self.store.set_refused(job.job_id, name, reason)
            return reason
        try:
            member = self._member_key(job, name, joined)
        except FederatedError as exc:
            logger.warning("job %s: %s did not join: %s", job.job_id, name, exc.message)
            return f"could not join: {exc.message}"
        self.store.set_joined(job.job_id, member)
        return None

    def _member_key(self, job: Job, name: str, joined: JobJoined) -> MemberKey:
        """The job key in an owner's join answer, if it is the owner's own for this job.

        It must name the owner, carry the identity key the owner's name is bound to at
        enrolment, and be signed by that key for this job under this model creator key: a key
        that is not would let whoever made it compute that member's masks.

        Raises
        ------
        ProtocolViolation
            When the answer is for another job, names another owner or another identity key.
        Forbidden
            When the signature does not verify for this job and key.
        """
        member = joined.member
        if joined.job_id != job.job_id:
            raise ProtocolViolation(f"the join answer is for job {joined.job_id}, not {job.job_id}")
        if member.name != name:
            raise ProtocolViolation(f"the job key offered names data owner {member.name!r}, not {name!r}")
        bound = self.store.identity_key(name)
        if bound is None:
            raise ProtocolViolation(f"data owner {name!r} enrolled without an identity key; it must enrol again")
        if member.identity_key != bound:
            raise ProtocolViolation("the job key offered is not under the identity key the owner enrolled with")
        member.verify(job.job_id, job.public_key.fingerprint)
        return member

    def _gather(
        self, job: Job, state: RoundState, members: dict[str, tuple[DataOwnerAddress, MemberKey]]
    ) -> tuple[dict[str, list[mpz]], dict[str, str], dict[str, int]]:
        """Send the attempt to its ``members``; returns (replies, failures, sizes) once all are in or time is up.

        ``sizes``: the bytes of each reply's body, as received.

        Every member gets the same request, whose member list is every member's signed job key,
        ordered by name: the members' masks cancel in the sum over exactly that set.
        """
        weights = {} if state.weights is None else {"encrypted_weights": list(state.weights)}
        request = RoundRequest(
            round=state.round,
            attempt=state.attempt,
            kind=state.kind,
            key_fingerprint=job.public_key.fingerprint,
            members=[members[name][1] for name in sorted(members)],
            **weights,
        )
        collector = RoundCollector(job.job_id, state.round, state.attempt, state.kind, frozenset(members))
        addresses = {name: address.url for name, (address, _) in members.items()}
        watch = SilenceWatch(self.liveness, addresses, self.settings.health_misses)
        self.registry.open(collector)
        try:
            asked = []
            for name, (address, _) in members.items():
                future = self._fan_out.submit(self._ask, job, name, address, request)
                future.add_done_callback(partial(_record_failure, collector, name))
                asked.append(future)
            outcome = collector.wait(self.settings.round_timeout, watch, self.settings.health_interval)
        finally:
            self.registry.close(collector)
        for future in asked:
            if future.done() and _own_storage_fault(error := future.exception()):
                raise error
        for name in collector.silent:
            self.liveness.mark_offline(name, addresses[name], f"missed round {state.round} of job {job.job_id}")
        replies, failures = outcome
        return replies, failures, {name: size for name, size in collector.sizes.items() if name in replies}

    def _answers_health(self, url: str) -> bool:
        """Whether the owner at ``url`` answers ``GET /health`` within ``health_timeout`` seconds."""
        try:
            self.http.get(f"{url}/health", timeout=self.settings.health_timeout)
        except FederatedError:
            return False
        return True

    def _ask(self, job: Job, name: str, address: DataOwnerAddress, request: RoundRequest) -> str | None:
        """Send one member the attempt; returns ``None`` once it accepted, else why it will not reply.

        A member that does not know the job (it restarted and forgot it, with its job key) fails
        this attempt, whose masks it can no longer make; its stored job key is dropped, so it is
        joined again, with a new key, before the next attempt.
        """
        try:
            self._data_owner(address).request_round(job.job_id, request)
        except StorageUnavailable as exc:
            if exc.peer is None:
                raise
            return exc.message
        except NotFound as exc:
            self.store.forget_member_key(job.job_id, name)
            return f"forgot the job (it is joined again before its next attempt): {exc.message}"
        except Refused as exc:
            return f"refused: {exc.message}"
        except PeerUnreachable as exc:
            self.liveness.mark_offline(name, address.url, f"not reached for round {request.round} of job {job.job_id}")
            return exc.message
        except FederatedError as exc:
            return exc.message
        return None

    def _data_owner(self, address: DataOwnerAddress) -> DataOwnerClient:
        return DataOwnerClient(self.http, address.url, address.token)

    def _model_creator(self, job: Job) -> ModelCreatorClient:
        return ModelCreatorClient(self.http, job.callback_url, self.settings.coordinator_token)


def _own_storage_fault(error: BaseException | None) -> TypeGuard[StorageUnavailable]:
    """Whether asking an owner failed for a fault of this party's own storage (its traffic log, say).

    That is no failure of the owner: the attempt stops as a transient fault, without being counted,
    and the round is resumed when the model creator asks for it again.
    """
    return isinstance(error, StorageUnavailable) and error.peer is None


def _record_failure(collector: RoundCollector, name: str, future: Future[str | None]) -> None:
    """A request to an owner that failed is that owner's failure for the attempt, with its reason."""
    error = future.exception()
    reason = f"{type(error).__name__}: {error}" if error is not None else future.result()
    if reason is not None:
        collector.fail(name, reason)
