"""The coordinator's side of a round: fan out to data owners, collect, aggregate, hand on.

Runs in the coordinator's worker, never inside a request. Calls to data owners go out
concurrently; each owner's failure is recorded with its reason and the round goes on with
whoever answered, as long as the job's quorum is met.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.protocol.errors import Conflict, FederatedError, UpstreamError
from common.service.http import PeerClient
from common.crypto.paillier import PublicKey
from common.protocol.spec import JobSpec
from common.service.app import Worker
from common.protocol.wire import encode_ciphertexts
from coordinator.rounds import RoundCollector, RoundRegistry, aggregate
from coordinator.store import CoordinatorStore, DataOwnerAddress

logger = logging.getLogger(__name__)


class RoundRunner:
    """Drives rounds for all jobs of one coordinator."""

    def __init__(
        self,
        store: CoordinatorStore,
        client: PeerClient,
        registry: RoundRegistry,
        worker: Worker,
        config: dict[str, Any],
    ) -> None:
        self.store = store
        self.worker = worker
        self.client = client
        self.registry = registry
        self.round_timeout = float(config["ROUND_TIMEOUT"])
        self.round_retries = int(config["ROUND_RETRIES"])
        self.retry_delay = float(config["RETRY_DELAY"])
        self._fan_out = ThreadPoolExecutor(max_workers=int(config["FAN_OUT_THREADS"]), thread_name_prefix="fan-out")
        self._lock = threading.Lock()
        self._joined: dict[str, set[str]] = {}
        self._refused: dict[str, dict[str, str]] = {}
        self._active: set[tuple[str, int]] = set()
        self._job_keys: dict[str, tuple[JobSpec, PublicKey]] = {}

    def job_keys(self, job_id: str) -> tuple[JobSpec, PublicKey]:
        """A job's parsed spec and public key, read once: neither changes during a job."""
        with self._lock:
            keys = self._job_keys.get(job_id)
        if keys is None:
            job = self.store.job(job_id)
            keys = JobSpec.from_json(job["spec"]), PublicKey.from_json(job["public_key"])
            with self._lock:
                self._job_keys[job_id] = keys
        return keys

    def request_round(self, job_id: str, round_number: int, kind: str, weights: list[str] | None) -> str:
        """Start a round, or pick up one the model creator asks for again; returns what was done.

        Asking again is how a restarted model creator resumes: a round still running here goes
        on (or is resumed, after a restart of this coordinator), an aggregated one is delivered
        again, a failed one is a conflict. A round is never run twice to completion.
        """
        existing = self.store.round(job_id, round_number)
        if existing is None:
            self.store.start_round(job_id, round_number, kind, weights)
            self._submit_round(job_id, round_number)
            return "started"
        if existing["kind"] != kind:
            raise Conflict(f"round {round_number} of job {job_id} is a {existing['kind']} round")
        if existing["status"] == "running":
            return "in progress" if self._submit_round(job_id, round_number) is None else "resumed"
        if existing["status"] == "aggregated":
            self.worker.submit(self.deliver, job_id, round_number)
            return "delivering again"
        raise Conflict(f"round {round_number} of job {job_id} failed")

    def resume_unfinished(self) -> int:
        """After a restart: pick up every round that was not done; returns how many.

        A round that was running is run again; an aggregate not yet delivered is delivered.
        """
        unfinished = self.store.unfinished_rounds()
        for job_id, round_number, status in unfinished:
            logger.info("resuming job %s round %d (%s)", job_id, round_number, status)
            if status == "running":
                self._submit_round(job_id, round_number)
            else:
                self.worker.submit(self.deliver, job_id, round_number)
        return len(unfinished)

    def _submit_round(self, job_id: str, round_number: int):
        with self._lock:
            if (job_id, round_number) in self._active:
                return None
            self._active.add((job_id, round_number))

        def on_error(exc: Exception) -> None:
            self.fail_job(job_id, f"round {round_number}: {getattr(exc, 'message', exc)}")

        return self.worker.submit(self._run_round, job_id, round_number, on_error=on_error)

    def _run_round(self, job_id: str, round_number: int) -> None:
        try:
            self.run_round(job_id, round_number)
        finally:
            with self._lock:
                self._active.discard((job_id, round_number))

    def run_round(self, job_id: str, round_number: int) -> None:
        """Run one round to its end: the aggregate goes to the model creator, or the job fails."""
        job = self.store.job(job_id)
        record = self.store.round(job_id, round_number)
        spec, public_key = self.job_keys(job_id)
        kind, weights = record["kind"], record["weights"]
        started = time.monotonic()
        first = record["attempts"] + 1
        for attempt in range(first, first + self.round_retries + 1):
            self.store.set_attempts(job_id, round_number, attempt)
            collector = self._attempt(job, spec, round_number, attempt, kind, weights)
            if len(collector.replies) >= spec.min_data_owners:
                break
            logger.warning(
                "job %s round %d attempt %d: %d of %d required replies; failures: %s",
                job_id,
                round_number,
                attempt,
                len(collector.replies),
                spec.min_data_owners,
                collector.failures,
            )
            if attempt < first + self.round_retries:
                time.sleep(self.retry_delay)
        else:
            reason = (
                f"round {round_number}: fewer than {spec.min_data_owners} data owner(s) answered in"
                f" {self.round_retries + 1} attempt(s); " + _describe(collector.failures)
            )
            self.store.finish_round(
                job_id, round_number, "failed", attempt, [], collector.failures, time.monotonic() - started
            )
            self.fail_job(job_id, reason)
            return
        contributors = sorted(collector.replies)
        summed = aggregate(public_key.nsquare, [collector.replies[name] for name in contributors])
        message = {
            "round": round_number,
            "kind": kind,
            "key_fingerprint": public_key.fingerprint,
            "ciphertexts": encode_ciphertexts(summed, public_key),
            "contributors": contributors,
            "failures": collector.failures,
        }
        self.store.finish_round(
            job_id,
            round_number,
            "aggregated",
            attempt,
            contributors,
            collector.failures,
            time.monotonic() - started,
            message,
        )
        logger.info("job %s round %d: aggregated %d contribution(s)", job_id, round_number, len(contributors))
        self.deliver(job_id, round_number)

    def deliver(self, job_id: str, round_number: int) -> None:
        """Send a round's stored aggregate to the model creator.

        A model creator that cannot be reached keeps its job: the aggregate stays stored here
        until it asks for the round again (which a restarted model creator does).
        """
        job = self.store.job(job_id)
        record = self.store.round(job_id, round_number)
        try:
            self.client.post(f"{job['callback_url']}/jobs/{job_id}/aggregates", record["aggregate"])
            self.store.set_delivered(job_id, round_number)
        except UpstreamError as exc:
            logger.warning(
                "job %s round %d: aggregate kept until the model creator asks again: %s",
                job_id,
                round_number,
                exc.message,
            )

    def fail_job(self, job_id: str, reason: str) -> None:
        """Mark a job failed here and tell the model creator why."""
        self.store.set_job_status(job_id, "failed", reason)
        job = self.store.job(job_id)
        logger.error("job %s failed: %s", job_id, reason)
        try:
            self.client.post(f"{job['callback_url']}/jobs/{job_id}/failure", {"error": reason})
        except UpstreamError as exc:
            logger.error("could not tell the model creator that job %s failed: %s", job_id, exc.message)

    def forget_job(self, job_id: str) -> None:
        """Drop a finished job's state here and at every owner that joined it (best effort)."""
        with self._lock:
            joined = self._joined.pop(job_id, set())
            self._refused.pop(job_id, None)
            self._job_keys.pop(job_id, None)
        owners = self.store.data_owners()
        for name in joined & owners.keys():
            try:
                self.client.delete(f"{owners[name].url}/jobs/{job_id}", token=owners[name].token)
            except UpstreamError as exc:
                logger.warning("could not release job %s at %s: %s", job_id, name, exc.message)

    def _attempt(
        self, job: dict, spec: JobSpec, round_number: int, attempt: int, kind: str, weights: list[str] | None
    ) -> RoundCollector:
        owners = self.store.data_owners()
        with self._lock:
            refused = dict(self._refused.get(spec.job_id, {}))
        asked = {name: address for name, address in owners.items() if name not in refused}
        collector = RoundCollector(spec.job_id, round_number, attempt, kind, frozenset(asked))
        for name, reason in refused.items():
            collector.failures[name] = reason
        self.registry.open(collector)
        try:
            for name, address in asked.items():
                future = self._fan_out.submit(self._dispatch, job, name, address, round_number, attempt, kind, weights)
                future.add_done_callback(lambda f, name=name: _record_failure(collector, name, f))
            collector.wait(self.round_timeout)
        finally:
            self.registry.close(collector)
        return collector

    def _dispatch(
        self,
        job: dict,
        name: str,
        address: DataOwnerAddress,
        round_number: int,
        attempt: int,
        kind: str,
        weights: list[str] | None,
    ) -> None:
        job_id = job["job_id"]
        message = {
            "round": round_number,
            "attempt": attempt,
            "kind": kind,
            "key_fingerprint": job["public_key"]["fingerprint"],
        }
        if weights is not None:
            message["encrypted_weights"] = weights
        if not self._is_joined(job_id, name):
            self._join(job, name, address)
        try:
            self.client.post(f"{address.url}/jobs/{job_id}/rounds", message, token=address.token)
        except UpstreamError as exc:
            if exc.peer_status != 404:
                raise
            self._join(job, name, address)
            self.client.post(f"{address.url}/jobs/{job_id}/rounds", message, token=address.token)

    def _is_joined(self, job_id: str, name: str) -> bool:
        with self._lock:
            return name in self._joined.get(job_id, set())

    def _join(self, job: dict, name: str, address: DataOwnerAddress) -> None:
        job_id = job["job_id"]
        try:
            self.client.put(
                f"{address.url}/jobs/{job_id}",
                {"spec": job["spec"], "public_key": job["public_key"]},
                token=address.token,
            )
        except UpstreamError as exc:
            if exc.peer_status is not None and 400 <= exc.peer_status < 500:
                with self._lock:
                    self._refused.setdefault(job_id, {})[name] = f"refused the job: {exc.message}"
                raise UpstreamError(f"refused the job: {exc.message}", exc.peer_status) from exc
            raise
        with self._lock:
            self._joined.setdefault(job_id, set()).add(name)


def _record_failure(collector: RoundCollector, name: str, future) -> None:
    error = future.exception()
    if error is not None:
        reason = error.message if isinstance(error, FederatedError) else f"{type(error).__name__}: {error}"
        collector.fail(name, reason)


def _describe(failures: dict[str, str]) -> str:
    if not failures:
        return "no data owner is registered with the coordinator"
    return "; ".join(f"{name}: {reason}" for name, reason in sorted(failures.items()))
