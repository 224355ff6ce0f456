"""Round policy of the coordinator, free of HTTP: collecting replies and aggregating them.

The coordinator never decrypts. Aggregation multiplies the owners' packed ciphertexts slot-wise
(ciphertext i of every owner together), which adds their plaintexts: the gradient sum, the row
count sum and the contributor count, all still encrypted under the model creator's key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.crypto.bigint import mpz
from common.protocol.errors import Conflict, ProtocolViolation


def aggregate(nsquare: mpz, replies: Sequence[Sequence[mpz]]) -> list[mpz]:
    """Slot-wise product of the replies' ciphertexts modulo n²: E(Σ values)."""
    if not replies:
        raise ProtocolViolation("no reply to aggregate")
    width = len(replies[0])
    if any(len(reply) != width for reply in replies):
        raise ProtocolViolation("replies of one round differ in length")
    result = []
    for index in range(width):
        product = mpz(1)
        for reply in replies:
            product = product * reply[index] % nsquare
        result.append(product)
    return result


@dataclass
class RoundCollector:
    """The replies of one attempt at one round, until it closes.

    Replies are accepted only from the owners the round was sent to, once each, and only while
    the attempt is open; a late reply is a :class:`~common.protocol.errors.Conflict` and is never folded
    into another attempt or round.
    """

    job_id: str
    round: int
    attempt: int
    kind: str
    expected: frozenset[str]
    replies: dict[str, list[mpz]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    closed: bool = False
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, owner: str, ciphertexts: list[mpz]) -> None:
        with self._changed:
            if self.closed:
                raise Conflict(f"job {self.job_id} round {self.round} attempt {self.attempt} is closed")
            if owner not in self.expected:
                raise Conflict(f"data owner {owner!r} was not asked for round {self.round} of job {self.job_id}")
            if owner in self.replies:
                raise Conflict(f"data owner {owner!r} already replied to round {self.round} of job {self.job_id}")
            # A valid reply outweighs an earlier failure (e.g. the request to the owner timed
            # out although the owner had accepted it).
            self.failures.pop(owner, None)
            self.replies[owner] = ciphertexts
            self._changed.notify_all()

    def fail(self, owner: str, reason: str) -> None:
        """Record that ``owner`` will not reply to this attempt."""
        with self._changed:
            if not self.closed and owner in self.expected and owner not in self.replies:
                self.failures[owner] = reason
                self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        """Block until every expected owner replied or failed, or ``timeout`` seconds passed; close."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.expected & (self.replies.keys() | self.failures.keys())) < len(self.expected):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            self.closed = True
            for owner in self.expected - self.replies.keys() - self.failures.keys():
                self.failures[owner] = f"no reply within {timeout:g} s"


class RoundRegistry:
    """The open collectors of a coordinator, keyed by (job, round)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int], RoundCollector] = {}

    def open(self, collector: RoundCollector) -> None:
        with self._lock:
            self._open[(collector.job_id, collector.round)] = collector

    def close(self, collector: RoundCollector) -> None:
        with self._lock:
            if self._open.get((collector.job_id, collector.round)) is collector:
                del self._open[(collector.job_id, collector.round)]

    def get(self, job_id: str, round_number: int, attempt: int) -> RoundCollector:
        with self._lock:
            collector = self._open.get((job_id, round_number))
        if collector is None or collector.attempt != attempt:
            raise Conflict(f"job {job_id} round {round_number} attempt {attempt} is not open")
        return collector
