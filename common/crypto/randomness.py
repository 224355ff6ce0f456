"""Encryption randomness made ahead of need, off the critical path of a round.

Every Paillier encryption and re-randomisation multiplies in a fresh ``r ** n mod n²``, a full
2048-bit exponentiation that costs more than everything else a round does. An
:class:`ObfuscatorPool` keeps a stock of them, computed by a background thread between rounds
(gmpy2 releases the interpreter lock during the exponentiation, so that thread runs on another
core), and hands each one out exactly once. The stock lives in memory only: randomness is never
written to disk, and a restarted service simply fills a new pool.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import gmpy2

from common.crypto.bigint import mpz
from common.crypto.paillier import PublicKey

logger = logging.getLogger(__name__)


def release_gil_in_this_thread() -> None:
    """Let gmpy2 release the interpreter lock during big-integer work done by this thread."""
    gmpy2.get_context().allow_release_gil = True


class ObfuscatorPool:
    """A thread-safe stock of fresh ``r ** n mod n²`` values for one public key.

    ``make`` computes one value (default: the public key's way; the key holder can pass its
    faster CRT way). :meth:`take` never blocks on the filler: when the stock is empty it computes one value
    inline (and counts the miss), so a pool can be too small but never wrong.
    """

    def __init__(self, public_key: PublicKey, target: int, make: Callable[[], mpz] | None = None) -> None:
        self.public_key = public_key
        self.make = make or public_key.raw_obfuscator
        self.target = target
        self.misses = 0
        self.taken = 0
        self._stock: deque[mpz] = deque()
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ObfuscatorPool:
        """Start filling in the background; returns the pool."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._fill_forever, name="obfuscator-pool", daemon=True)
            self._thread.start()
            self._wanted.set()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._wanted.set()

    def fill(self, count: int | None = None) -> None:
        """Add values until the stock holds ``count`` (default: the target), in this thread."""
        goal = self.target if count is None else count
        while not self._stopped.is_set():
            with self._lock:
                if len(self._stock) >= goal:
                    return
            value = self.make()
            with self._lock:
                self._stock.append(value)

    def take(self) -> mpz:
        """One fresh obfuscator, never handed out before."""
        with self._lock:
            self.taken += 1
            value = self._stock.popleft() if self._stock else None
            if len(self._stock) < self.target:
                self._wanted.set()
        if value is None:
            self.misses += 1
            value = self.make()
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._stock)

    def _fill_forever(self) -> None:
        release_gil_in_this_thread()
        while not self._stopped.is_set():
            self._wanted.wait()
            self._wanted.clear()
            try:
                self.fill()
            except Exception:  # noqa: BLE001 - the pool must not die silently; take() still works
                logger.exception("filling the obfuscator pool failed")
