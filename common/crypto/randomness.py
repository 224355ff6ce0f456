"""Encryption randomness made ahead of need, off the critical path of a round.

Every Paillier encryption and re-randomisation multiplies in a fresh encryption of zero, an
*obfuscator*. A job chooses how they are made (``JobSpec.randomness``):

``standard``
    ``r ** n mod n²`` for a uniformly random unit r: a full exponentiation (2048 bits of
    exponent modulo a 4096-bit n²) that costs more than everything else a round does. Its
    security rests on the decisional composite residuosity (DCR) assumption alone.
``djn``
    The short-exponent variant of Damgård, Jurik and Nielsen ("A generalization of Paillier's
    public-key system with applications to electronic voting", Int. J. Inf. Secur. 9(6), 2010,
    section 4.2): each party draws x at random once per job, takes ``h = −x² mod n`` and the fixed
    base ``h_s = h ** n mod n²``, and makes every obfuscator as ``h_s ** s`` for a fresh uniform
    s of only L bits, from a precomputed table of the base's powers
    (:class:`FixedBasePowers`), about L / 6 multiplications instead of a full exponentiation.
    ``h_s ** s = (h ** s) ** n`` is an encryption of zero like any other, so nothing changes for
    the decrypting party. Security needs DCR **and** the assumption that ``h_s ** s`` for a
    short s cannot be told from a uniformly random n-th residue (the short-exponent assumption
    in the group of n-th residues, whose order is unknown to all but the key holder). DJN take
    L = ⌈k/2⌉ for a k-bit n; the exponent lengths used here, :data:`DJN_EXPONENT_BITS`, are
    those of Ma, Han and Lei ("Optimized Paillier's cryptosystem with fast encryption and
    decryption", ACSAC 2021): 448 bits for a 2048-bit n (112-bit security) and 512 bits for a
    3072-bit n (128-bit), four times the security level, beyond the 2κ bits below which
    Pollard's kangaroo method on the exponent would cost less than κ bits of work.

An :class:`ObfuscatorPool` keeps a stock of obfuscators, computed by a background thread between
rounds (gmpy2 releases the interpreter lock during the exponentiation, so that thread runs on
another core), and hands each one out exactly once. The stock lives in memory only: randomness
is never written to disk, and a restarted service simply fills a new pool.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable

import gmpy2

from common.crypto.bigint import mpz, powmod, random_unit
from common.crypto.paillier import PublicKey

logger = logging.getLogger(__name__)


RANDOMNESS_SCHEMES = ("standard", "djn")

#: Bits of the short exponent s of DJN randomness for each key size: four times the key's
#: security level (Ma, Han and Lei, ACSAC 2021): 1024 bits ≈ 80-bit (test keys only), 2048 ≈ 112,
#: 3072 ≈ 128, 4096 ≈ 152 (NIST SP 800-56B rev. 2, appendix D).
DJN_EXPONENT_BITS = {1024: 320, 2048: 448, 3072: 512, 4096: 608}

#: Exponent bits per table row of :class:`FixedBasePowers`: 2**6 entries a row, L / 6 products.
FIXED_BASE_WINDOW = 6


class FixedBasePowers:
    """``base ** e mod modulus`` for any ``e < 2**exponent_bits``, from a table made once.

    Row i of the table holds ``base ** (j · 2**(window·i))`` for every digit j < 2**window, so a
    power is the product of one entry per base-``2**window`` digit of the exponent: about
    ``exponent_bits / window`` multiplications and no squaring. The table costs about
    ``2**window · exponent_bits / window`` multiplications to build (a few full exponentiations)
    and as many residues of memory (2.4 MB for a 2048-bit key).
    """

    def __init__(self, base: mpz, modulus: mpz, exponent_bits: int, window: int = FIXED_BASE_WINDOW) -> None:
        self.modulus = mpz(modulus)
        self.exponent_bits = exponent_bits
        self.window = window
        rows = -(-exponent_bits // window)
        self._table: list[list[mpz]] = []
        row_base = mpz(base) % self.modulus
        for _ in range(rows):
            row = [mpz(1), row_base]
            for _ in range((1 << window) - 2):
                row.append(row[-1] * row_base % self.modulus)
            self._table.append(row)
            row_base = row[-1] * row_base % self.modulus
        self._digit_mask = (1 << window) - 1

    def power(self, exponent: int) -> mpz:
        """``base ** exponent mod modulus``.

        Raises
        ------
        ValueError
            When ``exponent`` is negative or has more bits than the table covers.
        """
        if exponent < 0 or exponent.bit_length() > self.exponent_bits:
            raise ValueError(f"the exponent must be in [0, 2**{self.exponent_bits})")
        result = mpz(1)
        for row in self._table:
            if not exponent:
                break
            digit = exponent & self._digit_mask
            if digit:
                result = result * row[digit] % self.modulus
            exponent >>= self.window
        return result


class ShortExponentRandomness:
    """DJN obfuscators ``h_s ** s mod n²`` for one public key, with this party's own base.

    Every party makes its own base from its own random x, so no party has to trust another's
    choice of it (a base of small order would make the randomness guessable). The base and its
    table live in memory only, for one job.
    """

    def __init__(self, public_key: PublicKey, exponent_bits: int | None = None) -> None:
        n, nsquare = public_key.n, public_key.nsquare
        self.exponent_bits = exponent_bits or DJN_EXPONENT_BITS[public_key.bits]
        x = random_unit(n)
        h = (-(x * x)) % n
        self._powers = FixedBasePowers(powmod(h, n, nsquare), nsquare, self.exponent_bits)

    def __call__(self) -> mpz:
        """A fresh obfuscator: the base to a uniformly random exponent of ``exponent_bits`` bits."""
        return self._powers.power(secrets.randbits(self.exponent_bits))


def obfuscator_maker(
    public_key: PublicKey, scheme: str, standard: Callable[[], mpz] | None = None
) -> Callable[[], mpz]:
    """What makes one fresh obfuscator under ``scheme`` (``standard`` or ``djn``, see above).

    ``standard`` is the caller's way of making ``r ** n`` (the key holder's CRT way, say); by
    default the public key's.

    Raises
    ------
    ValueError
        For an unknown scheme.
    """
    if scheme == "standard":
        return standard or public_key.raw_obfuscator
    if scheme == "djn":
        return ShortExponentRandomness(public_key)
    raise ValueError(f"unknown randomness scheme {scheme!r}; known: {', '.join(RANDOMNESS_SCHEMES)}")


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
