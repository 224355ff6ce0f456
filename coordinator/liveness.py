"""Which data owners are offline: those that missed a round's deadline, until they answer health again.

An owner that went silent (stopped, hung, cut off) would otherwise hold up every round: each
attempt would wait for it until its deadline before going on without it. Once marked offline,
it is left out of the member sets of later attempts and rounds while the quorum is met without
it (:meth:`coordinator.policy.RoundPolicy.member_set`), and :meth:`Liveness.watch_forever` asks
its ``GET /health`` every ``interval`` seconds: the first answer brings it back. An owner that
enrols again (it restarted) is back at once.

The set is kept with the registry (:class:`OfflineBook`, the coordinator's store): a restarted
coordinator still leaves out the owners it had marked offline, and probes them until they answer.
It is read once at start and then kept in memory too, so the rounds' checks cost no query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from common.protocol.errors import StorageUnavailable

logger = logging.getLogger(__name__)


class OfflineBook(Protocol):
    """Where the offline marking is kept across restarts (:class:`coordinator.store.CoordinatorStore`)."""

    def offline_owners(self) -> dict[str, tuple[str, str, float]]: ...

    def set_offline(self, name: str, url: str, reason: str, since: float) -> None: ...

    def set_online(self, name: str) -> None: ...


class Liveness:
    """The offline data owners, and the probe that tells whether one answers.

    Parameters
    ----------
    probe
        ``probe(url)``: whether the owner serving at ``url`` answers its health check in time.
    interval
        Seconds between two probes of an offline owner, and of a silent member during a round.
    book
        Where the marking is kept; the owners it holds as offline are offline from the start.
    clock
        The wall clock an owner's ``since`` is read from.
    """

    def __init__(
        self,
        probe: Callable[[str], bool],
        interval: float,
        book: OfflineBook,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.probe = probe
        self.interval = interval
        self.book = book
        self._clock = clock
        self._lock = threading.Lock()
        self._offline: dict[str, tuple[str, str, float]] = book.offline_owners()
        self._seen: dict[str, float] = {}
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="liveness")

    def offline(self) -> dict[str, str]:
        """Offline owners: name → why they were marked offline."""
        with self._lock:
            return {name: reason for name, (_, reason, _) in self._offline.items()}

    def offline_since(self) -> dict[str, float]:
        """Offline owners: name → when they were marked offline (seconds since 1970)."""
        with self._lock:
            return {name: since for name, (_, _, since) in self._offline.items()}

    def mark_offline(self, name: str, url: str, reason: str) -> None:
        """``name`` is offline, kept so across a restart (in memory only, logged, if the store fails)."""
        with self._lock:
            previous = self._offline.get(name)
            since = previous[2] if previous else self._clock()
            self._offline[name] = (url, reason, since)
        if previous is None:
            logger.warning("data owner %s is offline (%s); left out of rounds until it answers /health", name, reason)
        try:
            self.book.set_offline(name, url, reason, since)
        except StorageUnavailable as exc:
            logger.error("data owner %s: its offline marking is not stored (%s)", name, exc.message)

    def mark_online(self, name: str) -> None:
        with self._lock:
            known = self._offline.pop(name, None) is not None
            self._seen[name] = self._clock()
        if known:
            logger.info("data owner %s is online again", name)
            try:
                self.book.set_online(name)
            except StorageUnavailable as exc:
                logger.error("data owner %s: its return online is not stored (%s)", name, exc.message)

    def forget(self, name: str) -> None:
        """``name`` left the federation: it is neither offline nor seen any more (the store forgets it too)."""
        with self._lock:
            self._offline.pop(name, None)
            self._seen.pop(name, None)

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
                offline = {name: url for name, (url, _, _) in self._offline.items()}
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
