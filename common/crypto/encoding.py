"""Fixed-point encoding of reals as integers.

A real x is carried as the integer ``round(x · 2**frac_bits)``; the scale is a property of the
message (the job spec names it), not of each number. Every encoding is checked against the bound
its slot or message allows (:class:`~common.protocol.errors.EncodingOverflow` otherwise), and sums are
decoded from packed slots (:mod:`common.crypto.packing`), whose unpacking rejects anything that
overflowed: an overflow is an error, never a wrong number.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from common.protocol.errors import EncodingOverflow


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


def encode_array(values: npt.NDArray[np.float64], frac_bits: int, bound_bits: int, what: str) -> list[int]:
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
