"""Fixed-point encoding (common/encoding.py): exactness, overflow, residues of Z_n."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto.encoding import decode, encode, encode_array
from common.protocol.errors import EncodingOverflow

finite_floats = st.floats(min_value=-1e200, max_value=1e200, allow_nan=False, allow_infinity=False)
fractions = st.fractions(max_denominator=10**30).filter(lambda f: abs(f) < 10**60)


def exact(value, frac_bits: int) -> int:
    return round(Fraction(value) * 2**frac_bits)


# --- encode -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(value=finite_floats, frac_bits=st.integers(0, 80), headroom=st.integers(0, 120))
def test_encode_float_is_exact_or_raises(value, frac_bits, headroom):
    """A float encodes to round(Fraction(x)·2**F) exactly, or raises when that is ≥ 2**B."""
    bound_bits = frac_bits + headroom
    expected = exact(value, frac_bits)
    if abs(expected) >= 2**bound_bits:
        with pytest.raises(EncodingOverflow, match="the_quantity"):
            encode(value, frac_bits, bound_bits, "the_quantity")
    else:
        assert encode(value, frac_bits, bound_bits, "the_quantity") == expected


@settings(max_examples=300, deadline=None)
@given(value=fractions, frac_bits=st.integers(0, 120), headroom=st.integers(0, 200))
def test_encode_fraction_is_exact_or_raises(value, frac_bits, headroom):
    """A Fraction encodes exactly, with no detour through floats."""
    bound_bits = frac_bits + headroom
    expected = exact(value, frac_bits)
    if abs(expected) >= 2**bound_bits:
        with pytest.raises(EncodingOverflow):
            encode(value, frac_bits, bound_bits, "q")
    else:
        result = encode(value, frac_bits, bound_bits, "q")
        assert result == expected
        assert type(result) is int


def test_encode_fraction_beyond_float_precision():
    """Rationals needing more than 53 bits of mantissa are not rounded through a float."""
    value = Fraction(2**80 + 1, 3)
    assert encode(value, 10, 200, "w") == round(value * 2**10)
    assert encode(Fraction(1, 3), 100, 200, "w") == round(Fraction(2**100, 3))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-2.5, -2), (Fraction(5, 2), 2), (Fraction(7, 2), 4)],
)
def test_encode_rounds_half_to_even_like_round(value, expected):
    assert encode(value, 0, 8, "x") == expected == round(Fraction(value))


def test_encode_at_the_bound():
    """2**B − 1 fits, 2**B does not (either sign), measured after scaling."""
    assert encode(255, 0, 8, "x") == 255
    assert encode(-255, 0, 8, "x") == -255
    assert encode(Fraction(255, 4), 2, 8, "x") == 255
    for value in (256, -256, Fraction(256, 4), 63.9):
        with pytest.raises(EncodingOverflow, match="x"):
            encode(value, 2 if not isinstance(value, int) else 0, 8, "x")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_encode_rejects_non_finite(value):
    with pytest.raises(EncodingOverflow, match=r"weight\[3\].*not a finite number"):
        encode(value, 10, 40, "weight[3]")


def test_encode_overflow_message_names_quantity_and_bits():
    message = r"^gradient\[2\]: .*does not fit in 4 integer bits at 8 fractional bits"
    with pytest.raises(EncodingOverflow, match=message):
        encode(16.0, 8, 12, "gradient[2]")


# --- encode_array -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=-1e30, max_value=1e30, allow_nan=False), min_size=1, max_size=20),
    frac_bits=st.integers(0, 60),
    headroom=st.integers(1, 140),
)
def test_encode_array_matches_encode_elementwise(values, frac_bits, headroom):
    """The vectorised encoder gives exactly what the scalar one does, or raises when any does."""
    bound_bits = frac_bits + headroom
    expected = [exact(v, frac_bits) for v in values]
    if any(abs(e) >= 2**bound_bits for e in expected):
        with pytest.raises(EncodingOverflow, match="stats"):
            encode_array(np.array(values), frac_bits, bound_bits, "stats")
    else:
        result = encode_array(np.array(values), frac_bits, bound_bits, "stats")
        assert result == expected
        assert all(type(v) is int for v in result)


def test_encode_array_flattens_row_major():
    matrix = np.array([[1.25, -2.5], [3.0, 0.125]])
    assert encode_array(matrix, 3, 20, "A") == [10, -20, 24, 1]


def test_encode_array_values_beyond_2_to_53_are_exact():
    """Large scaled values stay exact integers (no float rounding of the result)."""
    value = float(2**60 + 2**8)
    assert encode_array(np.array([value, -value]), 20, 100, "A") == [(2**60 + 2**8) << 20, -((2**60 + 2**8) << 20)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_encode_array_rejects_non_finite(bad):
    with pytest.raises(EncodingOverflow, match="XᵀX: contains a value that is not a finite number"):
        encode_array(np.array([1.0, bad, 2.0]), 4, 40, "XᵀX")


def test_encode_array_bound_is_strict():
    assert encode_array(np.array([255.0, -255.0]), 0, 8, "A") == [255, -255]
    with pytest.raises(EncodingOverflow, match="A: a value of magnitude 256 does not fit"):
        encode_array(np.array([1.0, -256.0]), 0, 8, "A")


def test_encode_array_huge_finite_value_is_an_overflow_not_a_warning():
    """A finite value whose scaled form exceeds the float range is an EncodingOverflow.

    (pytest turns warnings into errors, so a numpy overflow RuntimeWarning fails this test.)
    """
    with pytest.raises(EncodingOverflow, match="XᵀX"):
        encode_array(np.array([1e300]), 40, 200, "XᵀX")


# --- decode ---------------------------------------------------------


@given(value=st.integers(-(2**300), 2**300), frac_bits=st.integers(0, 200))
def test_decode_is_exact_inverse_of_scaling(value, frac_bits):
    assert decode(value, frac_bits) == Fraction(value, 2**frac_bits)
    assert encode(decode(value, frac_bits), frac_bits, 400, "v") == value


