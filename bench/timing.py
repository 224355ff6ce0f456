"""Timing one round phase by phase, and summarising repeated rounds.

A round is timed as the sum of its phases, all parties running one after the other in this
process: the model creator's encryption, the coordinator's relay of the weights, each data
owner's reply, the coordinator's aggregation and the model creator's decryption. Since the data
owners of a real round work at the same time on their own machines, the *critical path* (the
round with only the slowest owner counted) is reported next to the serial total.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The phases of a round, in order, with the labels the table prints.
PHASES = {
    "mc_encrypt": "MC encrypt",
    "tc_relay": "TC relay",
    "owners": "owners",
    "tc_aggregate": "TC aggregate",
    "mc_decrypt": "MC decrypt",
}


@dataclass
class RoundMeasurement:
    """One round of one variant: its answer, where its time went, and what one owner sent."""

    gradient: np.ndarray
    phases: dict[str, float] = field(default_factory=dict)
    owner_seconds: list[float] = field(default_factory=list)
    reply_bytes: int = 0
    query_bytes: int = 0
    reply_ciphertexts: int = 0

    @property
    def seconds(self) -> float:
        """The whole round, owners one after another."""
        return sum(self.phases.values())

    @property
    def critical_path(self) -> float:
        """The round as it would take with every owner working at once."""
        return self.seconds - sum(self.owner_seconds) + max(self.owner_seconds, default=0.0)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to phase ``name``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started

    def owner(self, work: Callable[[], Any]) -> Any:
        """Run one owner's whole reply as part of the ``owners`` phase, recording its own time."""
        started = time.perf_counter()
        result = work()
        elapsed = time.perf_counter() - started
        self.owner_seconds.append(elapsed)
        self.phases["owners"] = self.phases.get("owners", 0.0) + elapsed
        return result


def summarise(rounds: list[RoundMeasurement]) -> dict[str, Any]:
    """Medians over repeated rounds (and every round's total, so the spread stays visible)."""
    totals = [r.seconds for r in rounds]
    last = rounds[-1]
    return {
        "repeats": len(rounds),
        "seconds": statistics.median(totals),
        "seconds_min": min(totals),
        "seconds_all": totals,
        "critical_path": statistics.median(r.critical_path for r in rounds),
        "phases": {name: statistics.median(r.phases.get(name, 0.0) for r in rounds) for name in PHASES},
        "owner_seconds": statistics.median(statistics.mean(r.owner_seconds) for r in rounds),
        "reply_bytes": last.reply_bytes,
        "query_bytes": last.query_bytes,
        "reply_ciphertexts": last.reply_ciphertexts,
    }


def best_of(work: Callable[[], Any], repeats: int) -> float:
    """Return the fastest of ``repeats`` timed calls of ``work`` (for micro-measurements)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best
