"""Straus multi-exponentiation: the same products as one powmod per term, whatever the split."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto.bigint import invert, mpz, powmod
from data_owner.multiexp import PARALLEL_MIN_MULTIPLICATIONS, MatrixPowerPlan, window_width
from data_owner.processes import ProcessPool


def naive(matrix, bases, modulus):
    """One powmod per term: ``Π_k bases[k] ** matrix[j][k]`` with inverses for negative terms."""
    rows = []
    for row in matrix:
        product = mpz(1)
        for coefficient, base in zip(row, bases, strict=True):
            base = base if coefficient >= 0 else invert(base, modulus)
            product = product * powmod(base, abs(coefficient), modulus) % modulus
        rows.append(product)
    return rows


def bases_for(key, count):
    return [key.public_key.raw_encrypt(7 * i + 1) for i in range(count)]


coefficients = st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 2**64, -(2**64)])


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_products_equal_one_powmod_per_term(small_key, data):
    rows = data.draw(st.integers(1, 6))
    columns = data.draw(st.integers(1, 6))
    matrix = data.draw(st.lists(st.lists(coefficients, min_size=columns, max_size=columns), min_size=rows,
                                max_size=rows))
    bases = bases_for(small_key, columns)
    modulus = small_key.public_key.nsquare
    assert MatrixPowerPlan.for_matrix(matrix).evaluate(bases, modulus) == naive(matrix, bases, modulus)


def test_zero_rows_and_columns(small_key):
    matrix = [[0, 0, 0], [5, 0, -3], [0, 0, 0]]
    bases = bases_for(small_key, 3)
    modulus = small_key.public_key.nsquare
    plan = MatrixPowerPlan.for_matrix(matrix)
    assert plan.positive_columns == {0} and plan.negative_columns == {2}
    assert plan.evaluate(bases, modulus) == naive(matrix, bases, modulus)


def test_wrong_number_of_bases_is_refused(small_key):
    plan = MatrixPowerPlan.for_matrix([[1, 2]])
    with pytest.raises(ValueError, match="expected 2 bases, got 1"):
        plan.evaluate(bases_for(small_key, 1), small_key.public_key.nsquare)


def large_matrix(size):
    """A matrix whose product is large enough to be split over workers."""
    matrix = [[(-1) ** (i + j) * (3**40 + 1000 * i + j) for j in range(size)] for i in range(size)]
    assert MatrixPowerPlan.for_matrix(matrix).multiplications >= PARALLEL_MIN_MULTIPLICATIONS
    return matrix


def test_split_over_threads_gives_the_same_products(small_key):
    matrix = large_matrix(30)
    plan = MatrixPowerPlan.for_matrix(matrix)
    bases = bases_for(small_key, 30)
    modulus = small_key.public_key.nsquare
    with ThreadPoolExecutor(3) as executor:
        assert plan.evaluate(bases, modulus, executor, parts=3) == plan.evaluate(bases, modulus)


def test_split_over_processes_gives_the_same_products(small_key):
    matrix = large_matrix(30)
    plan = MatrixPowerPlan.for_matrix(matrix)
    bases = bases_for(small_key, 30)
    modulus = small_key.public_key.nsquare
    pool = ProcessPool(2)
    try:
        assert plan.evaluate(bases, modulus, pool.executor(), pool.parts) == naive(matrix, bases, modulus)
    finally:
        pool.shutdown()


def test_window_width_grows_with_the_work_and_stays_bounded():
    assert window_width(4, 10) == 2
    widths = [window_width(bits, rows) for bits, rows in [(16, 2), (64, 10), (64, 50), (2048, 50), (10**6, 1000)]]
    assert widths == sorted(widths)
    assert all(3 <= width <= 8 for width in widths)
