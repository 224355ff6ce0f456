"""Fixed-point encoding of reals as integers, and of signed integers as residues of Z_n.

A real x is carried as the integer ``round(x · 2**frac_bits)``; the scale is a property of the
message (the job spec names it), not of each number. Signed integers live in Z_n as
``v mod n``: values in [0, n/3) are non-negative, values in (2n/3, n) negative, and the middle
third is never a valid result — decoding it means something overflowed, and that is reported,
never turned into a wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np

from common.errors import EncodingOverflow


def encode(value: float | Fraction, frac_bits: int, bound_bits: int, what: str) -> int:
    """``round(value · 2**frac_bits)`` exactly, checked to be below ``2**bound_bits`` in size.

    ``what`` names the quantity in the error raised for a non-finite or too large value.
    """
    if isinstance(value, int):
        scaled = value << frac_bits
    elif isinstance(value, Fraction):
        scaled = round(value * (1 << frac_bits))
    else:
        if not math.isfinite(value):
            raise EncodingOverflow(f"{what}: {value} is not a finite number")
        scaled = round(math.ldexp(float(value), frac_bits))
    if abs(scaled) >= 1 << bound_bits:
        raise EncodingOverflow(
            f"{what}: a value of {max(abs(scaled).bit_length() - frac_bits, 0)} integer bits does not fit in"
            f" {bound_bits - frac_bits} integer bits at {frac_bits} fractional bits"
        )
    return scaled


def encode_array(values: np.ndarray, frac_bits: int, bound_bits: int, what: str) -> list[int]:
    """:func:`encode` applied to every element of a float array (exactly, element by element)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        raise EncodingOverflow(f"{what}: contains a value that is not a finite number")
    with np.errstate(over="ignore"):
        scaled = np.rint(np.ldexp(flat, frac_bits))
    bound = math.ldexp(1.0, bound_bits) if bound_bits < 1024 else math.inf
    if not np.all(np.isfinite(scaled)) or np.any(np.abs(scaled) >= bound):
        raise EncodingOverflow(
            f"{what}: a value of magnitude {float(np.max(np.abs(flat))):.6g} does not fit in"
            f" {bound_bits - frac_bits} integer bits at {frac_bits} fractional bits"
        )
    return [int(v) for v in scaled]


def decode(value: int, frac_bits: int) -> Fraction:
    """The exact rational ``value / 2**frac_bits``."""
    return Fraction(int(value), 1 << frac_bits)


def to_residue(value: int, n: int) -> int:
    """A signed integer as an element of Z_n; it must lie strictly within (−n/3, n/3)."""
    if 3 * abs(value) >= n:
        raise EncodingOverflow(f"integer of {abs(value).bit_length()} bits does not fit in Z_n")
    return value % n


def from_residue(residue: int, n: int, what: str) -> int:
    """The signed integer an element of Z_n stands for; the middle third is an overflow."""
    residue = int(residue)
    if 3 * residue < n:
        return residue
    if 3 * residue > 2 * n:
        return residue - int(n)
    raise EncodingOverflow(f"{what}: decrypted value is in the overflow band of Z_n")


def check_bound(values: Iterable[int], bound_bits: int, what: str) -> None:
    """Raise unless every integer has magnitude below ``2**bound_bits``."""
    limit = 1 << bound_bits
    for index, value in enumerate(values):
        if abs(value) >= limit:
            raise EncodingOverflow(f"{what}[{index}] exceeds {bound_bits} bits")


def as_floats(values: Sequence[Fraction]) -> list[float]:
    """Rationals to the nearest floats, for reporting."""
    return [float(v) for v in values]
