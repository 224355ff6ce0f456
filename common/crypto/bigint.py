"""The one module that touches gmpy2: big-integer and exact rational arithmetic.

Everything above this module works with :data:`mpz` integers and :data:`rational` numbers and
never imports gmpy2 itself, so the choice of big-integer backend is made here once.
"""

from __future__ import annotations

import secrets

import gmpy2

mpz = gmpy2.mpz
rational = gmpy2.mpq
gcd = gmpy2.gcd
lcm = gmpy2.lcm
invert = gmpy2.invert
powmod = gmpy2.powmod
divexact = gmpy2.divexact


def random_unit(n: int | gmpy2.mpz) -> gmpy2.mpz:
    """A uniformly random element of Z_n* from the operating system's CSPRNG."""
    while True:
        r = mpz(secrets.randbelow(int(n) - 1) + 1)
        if gcd(r, n) == 1:
            return r


def to_fixed_bytes(value: int | gmpy2.mpz, width: int) -> bytes:
    """Big-endian bytes of a non-negative integer, left-padded to ``width`` bytes."""
    return int(value).to_bytes(width, "big")


def from_bytes(data: bytes) -> gmpy2.mpz:
    """The non-negative integer whose big-endian bytes are ``data``."""
    return mpz(int.from_bytes(data, "big"))
