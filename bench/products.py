"""The data owners' products alone: the floor of a gradient round on this machine.

A gradient round through the services cannot be faster than its owners' homomorphic work: each
owner's encrypted matrix–vector product and the packing of its reply
(:meth:`~data_owner.affine.EncryptedAffineMap.product`, the code the services run). Here every
owner is a process of its own, as in the services, holding its prepared statistics and the round's
encrypted weights; the owners start together at a barrier, on the same cores the services share,
and the round is the longest owner's time from the barrier to its own end (an owner scheduled late
only shortens its time, so the floor errs low and the ceiling below errs high). Nothing else is
counted: no HTTP, JSON, randomness, masks, storage, coordinator or model creator. Each owner works
in one process (split over worker processes, its product would only add the tables each worker
builds, on cores the other owners need).

phe-gram's round divided by this floor is therefore a ceiling on the speed-up any gradient round
can show on this machine, whatever the rest of a round is made to cost. The aggregate of the last
round is decrypted and checked against numpy like every other variant's.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.federation import Federation, KeyMaterial
from bench.ours import decrypt_gradient, job_spec
from bench.timing import RoundMeasurement
from common.crypto.bigint import mpz
from common.crypto.paillier import PublicKey
from common.protocol.spec import JobSpec
from coordinator.policy import aggregate
from data_owner.affine import EncryptedAffineMap

# Timed rounds per measurement (the median is reported), after one untimed round.
ROUNDS = 3
# How long an owner process may take to start or to answer before the measurement is abandoned.
STARTUP_SECONDS = 120.0


class OwnerProductsRound:
    """K owner processes, each ready to compute its product of one round's encrypted weights."""

    name = "owner-products"

    def __init__(self, keys: KeyMaterial, federation: Federation) -> None:
        self.keys = keys
        self.federation = federation
        public_key = keys.private_key.public_key
        self.spec = job_spec(public_key, federation.dimension)
        weights = [public_key.raw_encrypt(q) for q in federation.query]
        # Spawned, not forked: the benchmark's own process runs threads (HTTP sessions, the
        # services' log readers), which a fork would copy in whatever state they are in.
        context = multiprocessing.get_context("spawn")
        # Kept here: the children open its semaphores when they start, after this returns.
        self._barrier = barrier = context.Barrier(len(federation.owners))
        self._pipes: list[Connection] = []
        self._processes = []
        for index, owner in enumerate(federation.owners):
            affine_map = EncryptedAffineMap.prepare(self.spec, owner.features, owner.labels, f"owner-{index}")
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_owner,
                args=(theirs, barrier, affine_map, public_key, weights, self.spec),
                name=f"bench-owner-{index}",
                daemon=True,
            )
            process.start()
            self._pipes.append(ours)
            self._processes.append(process)

    def run_round(self) -> RoundMeasurement:
        """One untimed and :data:`ROUNDS` timed rounds; the median round's time, the last round's gradient."""
        rounds: list[list[float]] = []
        replies: list[list[mpz]] = []
        for index in range(ROUNDS + 1):
            for pipe in self._pipes:
                pipe.send("round")
            answers = [self._answer(pipe) for pipe in self._pipes]
            if index:
                rounds.append([seconds for seconds, _ in answers])
            replies = [reply for _, reply in answers]
        median = sorted(rounds, key=max)[len(rounds) // 2]
        summed = aggregate(self.keys.private_key.public_key.nsquare, replies)
        measurement = RoundMeasurement(
            gradient=decrypt_gradient(self.name, self.keys, self.spec, summed, self.federation)
        )
        measurement.phases["owners"] = sum(median)
        measurement.owner_seconds = list(median)
        measurement.reply_ciphertexts = len(replies[0])
        return measurement

    def close(self) -> None:
        """Stop the owner processes (any that has already ended is just reaped)."""
        for pipe in self._pipes:
            try:
                pipe.send("stop")
            except OSError:
                pass
        for process in self._processes:
            process.join(STARTUP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()

    def _answer(self, pipe: Connection) -> Any:
        if not pipe.poll(STARTUP_SECONDS):
            raise TimeoutError(f"an owner process of {self.name} did not answer in {STARTUP_SECONDS:.0f} s")
        answer = pipe.recv()
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _owner(
    pipe: Connection,
    barrier: Any,
    affine_map: EncryptedAffineMap,
    public_key: PublicKey,
    weights: list[mpz],
    spec: JobSpec,
) -> None:
    """In an owner process: on each "round", wait for the others, compute, answer (seconds, packed reply)."""
    while pipe.recv() == "round":
        try:
            barrier.wait(STARTUP_SECONDS)
            started = time.perf_counter()
            reply = affine_map.product(public_key, weights, spec)
            pipe.send((time.perf_counter() - started, reply))
        except Exception as exc:  # the parent re-raises it with the measurement that failed
            pipe.send(exc)
            return
