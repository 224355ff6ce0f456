"""Which data owners are offline: those that missed a round's deadline, until they answer health again.

An owner that went silent (stopped, hung, cut off) would otherwise hold up every round: each
attempt would wait for it until its deadline before going on without it. Once marked offline,
it is left out of the member sets of later attempts and rounds while the quorum is met without
it (:meth:`coordinator.policy.RoundPolicy.member_set`), and :meth:`Liveness.watch_forever` asks
its ``GET /health`` every ``interval`` seconds: the first answer brings it back. An owner that
enrols again (it restarted) is back at once.

The set lives in memory: a restarted coordinator starts with every owner online, and learns again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)


class Liveness:
    """The offline data owners, and the probe that tells whether one answers.

    Parameters
    ----------
    probe
        ``probe(url)``: whether the owner serving at ``url`` answers its health check in time.
    interval
        Seconds between two probes of an offline owner, and of a silent member during a round.
    """

    def __init__(self, probe: Callable[[str], bool], interval: float) -> None:
        self.probe = probe
        self.interval = interval
        self._lock = threading.Lock()
        self._offline: dict[str, tuple[str, str]] = {}
        self._seen: dict[str, float] = {}
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="liveness")

    def offline(self) -> dict[str, str]:
        """Offline owners: name → why they were marked offline."""
        with self._lock:
            return {name: reason for name, (_, reason) in self._offline.items()}

    def mark_offline(self, name: str, url: str, reason: str) -> None:
        with self._lock:
            known = name in self._offline
            self._offline[name] = (url, reason)
        if not known:
            logger.warning("data owner %s is offline (%s); left out of rounds until it answers /health", name, reason)

    def mark_online(self, name: str) -> None:
        with self._lock:
            known = self._offline.pop(name, None) is not None
            self._seen[name] = time.time()
        if known:
            logger.info("data owner %s is online again", name)

    def seen(self, name: str) -> None:
        """``name`` spoke to the coordinator (enrolled, replied, refused): it is alive, and online."""
        self.mark_online(name)

    def last_seen(self) -> dict[str, float]:
        """When each owner was last heard from, since this coordinator started."""
        with self._lock:
            return dict(self._seen)

    def unanswered(self, owners: Mapping[str, str]) -> set[str]:
        """Which of ``owners`` (name → URL) do not answer their health check, probed concurrently."""
        futures = {name: self._probes.submit(self.probe, url) for name, url in owners.items()}
        return {name for name, future in futures.items() if not future.result()}

    def watch_forever(self, stop: threading.Event) -> None:
        """Probe the offline owners every ``interval`` seconds until ``stop`` is set; bring back those that answer."""
        while not stop.wait(self.interval):
            with self._lock:
                offline = {name: url for name, (url, _) in self._offline.items()}
            answering = set(offline) - self.unanswered(offline)
            for name in answering:
                self.mark_online(name)


class SilenceWatch:
    """Counts, during one attempt, the health checks each pending member missed in a row.

    A member that missed ``misses`` in a row is silent: it stopped, hung or was cut off after
    (or before) it accepted the round, and the attempt need not wait for it until its deadline.
    """

    def __init__(self, liveness: Liveness, addresses: Mapping[str, str], misses: int) -> None:
        self.liveness = liveness
        self.addresses = addresses
        self.misses = misses
        self._missed: dict[str, int] = {}
        self._started = time.monotonic()

    def __call__(self, pending: Iterable[str]) -> dict[str, str]:
        """The pending members now silent: name → why."""
        asked = {name: self.addresses[name] for name in pending}
        unanswered = self.liveness.unanswered(asked)
        for name in asked:
            self._missed[name] = self._missed.get(name, 0) + 1 if name in unanswered else 0
        return {
            name: f"silent: answered neither the round nor {count} health checks in a row"
            f" ({time.monotonic() - self._started:.0f} s into the attempt)"
            for name in asked
            if (count := self._missed[name]) >= self.misses
        }
