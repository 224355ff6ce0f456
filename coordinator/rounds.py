"""Collecting the replies of a round's attempt as they arrive, between request threads and the runner.

This is the threading half of a round: what the replies mean is :mod:`coordinator.policy`'s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.crypto.bigint import mpz
from common.protocol.errors import Conflict


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
    sizes: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)
    closed: bool = False
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, owner: str, ciphertexts: list[mpz], size: int | None = None) -> None:
        """Take ``owner``'s reply (``size``: the bytes of the body it came in, when measured)."""
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
            if size is not None:
                self.sizes[owner] = size
            self._changed.notify_all()

    def fail(self, owner: str, reason: str) -> None:
        """Record that ``owner`` will not reply to this attempt."""
        with self._changed:
            if not self.closed and owner in self.expected and owner not in self.replies:
                self.failures[owner] = reason
                self._changed.notify_all()

    def wait(
        self, timeout: float, watch: Callable[[frozenset[str]], dict[str, str]] | None = None, interval: float = 2.0
    ) -> tuple[dict[str, list[mpz]], dict[str, str]]:
        """Block until every expected owner replied or failed, or ``timeout`` seconds passed; close.

        With ``watch``, every ``interval`` seconds ``watch(pending)`` names the pending owners
        that went silent (owner → why): each fails the attempt at once rather than at its deadline.
        The owners that missed the deadline, and the silent ones, are :attr:`silent`.

        Returns
        -------
        tuple
            The attempt's replies (owner → ciphertexts) and failures (owner → why), as they were
            when it closed: a failure is data for :mod:`coordinator.policy`, never an exception.
        """
        deadline = time.monotonic() + timeout
        next_watch = time.monotonic() + interval
        while True:
            with self._changed:
                pending = self.expected - self.replies.keys() - self.failures.keys()
                now = time.monotonic()
                if not pending or now >= deadline:
                    break
                if watch is None or now < next_watch:
                    self._changed.wait(min(deadline, next_watch if watch else deadline) - now)
                    continue
            next_watch = time.monotonic() + interval
            for owner, reason in watch(frozenset(pending)).items():
                with self._changed:
                    if owner in self.replies:
                        continue
                    self.silent.add(owner)
                self.fail(owner, reason)
        with self._changed:
            self.closed = True
            for owner in self.expected - self.replies.keys() - self.failures.keys():
                self.silent.add(owner)
                self.failures[owner] = f"no reply within {timeout:g} s"
            return dict(self.replies), dict(self.failures)


class RoundRegistry:
    """The rounds this process runs, keyed by (job, round), and the collector of each open attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int], RoundCollector] = {}
        self._running: set[tuple[str, int]] = set()

    def claim(self, job_id: str, round_number: int) -> bool:
        """Whether this call may run the round: False while another run of it goes on here."""
        with self._lock:
            if (job_id, round_number) in self._running:
                return False
            self._running.add((job_id, round_number))
            return True

    def release(self, job_id: str, round_number: int) -> None:
        """The run of a round claimed by :meth:`claim` is over."""
        with self._lock:
            self._running.discard((job_id, round_number))

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
