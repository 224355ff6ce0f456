"""Optimisers driven by exact aggregated gradients (common/solvers.py)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.protocol.errors import TrainingError
from model_creator.solvers import ConjugateDirections

try:  # the seed's class; later trees express it as FirstOrder with rule "gd"
    from model_creator.solvers import GradientDescent

    def gradient_descent(dimension, weight_frac_bits, weight_bits, max_rounds, learning_rate):
        return GradientDescent(dimension, weight_frac_bits, weight_bits, max_rounds, learning_rate)
except ImportError:  # pragma: no cover - depends on the tree under test
    from model_creator.solvers import FirstOrder

    def gradient_descent(dimension, weight_frac_bits, weight_bits, max_rounds, learning_rate):
        return FirstOrder(dimension, weight_frac_bits, weight_bits, max_rounds, "gd", learning_rate)


def _fraction(value) -> Fraction:
    return Fraction(value.item() if isinstance(value, np.generic) else value)


def to_fractions(matrix, vector):
    return [[_fraction(v) for v in row] for row in matrix], [_fraction(v) for v in vector]


def gradient_at_query(optimizer, A, b):
    """The exact affine gradient A q − b at the optimiser's fixed-point query."""
    point = [Fraction(q, 2**optimizer.weight_frac_bits) for q in optimizer.query]
    return [sum(a * p for a, p in zip(row, point)) - bb for row, bb in zip(A, b)]


def drive(optimizer, A, b, row_count=10, limit=1000):
    while not optimizer.done and optimizer.rounds < limit:
        optimizer.observe(gradient_at_query(optimizer, A, b), row_count)
    return optimizer


def exact_solve(A, b):
    """Gauss–Jordan elimination in rationals."""
    size = len(A)
    rows = [[Fraction(x) for x in row] + [Fraction(v)] for row, v in zip(A, b)]
    for column in range(size):
        pivot = next(r for r in range(column, size) if rows[r][column] != 0)
        rows[column], rows[pivot] = rows[pivot], rows[column]
        for r in range(size):
            if r != column and rows[r][column] != 0:
                factor = rows[r][column] / rows[column][column]
                rows[r] = [x - factor * y for x, y in zip(rows[r], rows[column])]
    return [rows[i][size] / rows[i][i] for i in range(size)]


def raw_scale_problem(seed: int):
    """XᵀX, Xᵀy of unstandardised, nearly collinear data: condition number around 1e10."""
    rng = np.random.default_rng(seed)
    rows = 50
    x1 = rng.uniform(1000, 2000, rows)
    x2 = x1 + rng.normal(0, 5.0, rows)
    x3 = rng.uniform(-5e4, 5e4, rows)
    design = np.column_stack([np.ones(rows), x1, x2, x3])
    labels = design @ np.array([3.0, 1.5, -0.5, 2e-4]) + rng.normal(0, 0.1, rows)
    gram = design.T @ design
    gram = np.triu(gram) + np.triu(gram, 1).T
    return gram, design.T @ labels


# --- ConjugateDirections ----------------------------------------------------------------------


def test_exact_on_small_problem():
    A = [[4, 1, 0], [1, 3, 1], [0, 1, 2]]
    b = [1, -2, 3]
    optimizer = drive(ConjugateDirections(3, 32, 16), *to_fractions(A, b))
    assert optimizer.stop_reason.startswith("exact")
    assert optimizer.rounds <= 4
    assert optimizer.coefficients == exact_solve(A, b)
    assert all(isinstance(c, Fraction) for c in optimizer.coefficients)
    np.testing.assert_allclose([float(c) for c in optimizer.coefficients],
                               np.linalg.solve(np.array(A, float), np.array(b, float)), rtol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_on_ill_conditioned_raw_scale_problem(seed):
    gram, moment = raw_scale_problem(seed)
    condition = np.linalg.cond(gram)
    assert 1e9 < condition < 1e12
    A, b = to_fractions(gram, moment)
    optimizer = drive(ConjugateDirections(4, 32, 32), A, b, row_count=50)
    assert optimizer.stop_reason.startswith("exact")
    assert optimizer.rounds <= 5
    assert optimizer.coefficients == exact_solve(A, b)
    np.testing.assert_allclose([float(c) for c in optimizer.coefficients], np.linalg.solve(gram, moment), rtol=1e-9)


@st.composite
def spd_problems(draw):
    size = draw(st.integers(1, 6))
    entries = st.integers(-20, 20)
    factor = np.array(draw(st.lists(st.lists(entries, min_size=size, max_size=size), min_size=size, max_size=size)))
    A = factor @ factor.T + np.eye(size, dtype=int) * draw(st.integers(1, 5))
    b = draw(st.lists(st.integers(-1000, 1000), min_size=size, max_size=size))
    return [[int(v) for v in row] for row in A], b


@settings(max_examples=30, deadline=None)
@given(problem=spd_problems())
def test_exact_on_any_spd_problem(problem):
    """For any symmetric positive definite A: the exact minimiser within dimension + 1 rounds."""
    A, b = problem
    size = len(b)
    optimizer = drive(ConjugateDirections(size, 24, 16, max_rounds=4 * (size + 1)), *to_fractions(A, b))
    assert optimizer.stop_reason.startswith("exact")
    assert optimizer.rounds <= size + 1
    assert optimizer.coefficients == exact_solve(A, b)


def test_queries_are_fixed_point_integers():
    optimizer = ConjugateDirections(3, 20, 8)
    A, b = to_fractions([[4, 1, 0], [1, 3, 1], [0, 1, 2]], [1, -2, 3])
    seen = []
    while not optimizer.done:
        seen.append(list(optimizer.query))
        optimizer.observe(gradient_at_query(optimizer, A, b), 5)
    assert seen[0] == [0, 0, 0]
    assert all(type(q) is int and abs(q) < 2 ** (8 + 20) for query in seen for q in query)


def test_stops_at_max_rounds():
    A, b = to_fractions(np.diag([1, 2, 3, 4]), [1, 1, 1, 1])
    optimizer = drive(ConjugateDirections(4, 32, 16, max_rounds=2), A, b)
    assert optimizer.rounds == 2
    assert optimizer.stop_reason == "max_rounds"


def test_singular_inconsistent_raises():
    A, b = to_fractions([[1, 1], [1, 1]], [1, 0])
    with pytest.raises(TrainingError, match="singular"):
        drive(ConjugateDirections(2, 16, 8), A, b)


def test_singular_design_raises():
    """A duplicated feature column: XᵀX is singular (and Xᵀy in its range, as for any data).

    The minimiser is not unique, so the solver must refuse rather than report one arbitrary
    point as an 'exact' solution.
    """
    xs = [1, 2, 3, 5]
    design = np.array([[1, x, x] for x in xs])
    labels = np.array([2, 3, 5, 4])
    A, b = to_fractions(design.T @ design, design.T @ labels)
    with pytest.raises(TrainingError, match="singular"):
        drive(ConjugateDirections(3, 32, 16), A, b)


def test_fewer_rows_than_coefficients_raises():
    design = np.array([[1, 2, 7], [1, -1, 4]])
    labels = np.array([3, 1])
    A, b = to_fractions(design.T @ design, design.T @ labels)
    with pytest.raises(TrainingError, match="singular"):
        drive(ConjugateDirections(3, 32, 16), A, b)


def test_restart_solves_the_new_objective_exactly():
    first_A, first_b = to_fractions([[4, 1, 0], [1, 3, 1], [0, 1, 2]], [1, -2, 3])
    second_A, second_b = to_fractions([[5, 2, 1], [2, 6, 0], [1, 0, 3]], [4, 0, -7])
    optimizer = ConjugateDirections(3, 32, 16, max_rounds=16)
    for _ in range(2):
        optimizer.observe(gradient_at_query(optimizer, first_A, first_b), 10)
    assert not optimizer.done
    optimizer.restart()
    before = optimizer.rounds
    drive(optimizer, second_A, second_b)
    assert optimizer.stop_reason.startswith("exact")
    assert optimizer.rounds - before <= 4
    assert optimizer.coefficients == exact_solve(second_A, second_b)


def test_restart_right_at_the_start_is_harmless():
    A, b = to_fractions([[2, 1], [1, 2]], [3, -1])
    optimizer = ConjugateDirections(2, 32, 16)
    optimizer.restart()
    drive(optimizer, A, b)
    assert optimizer.coefficients == exact_solve(A, b)


def test_intermediate_query_beyond_weight_bound_raises():
    A, b = to_fractions([[2, 1], [1, 3]], [100, 10])
    with pytest.raises(TrainingError, match=r"left the declared range \|w\| < 2\*\*4"):
        drive(ConjugateDirections(2, 8, 4), A, b)


@pytest.mark.parametrize(
    ("A", "b"),
    [([[1]], [40]), ([[1, 0], [0, 1]], [40, 40]), ([[2, 0], [0, 2]], [-100, 4])],
    ids=["1d", "identity", "diagonal"],
)
def test_solution_beyond_weight_bound_raises(A, b):
    """A minimiser with |w| ≥ 2**weight_bits is refused, even when reached in the last step."""
    with pytest.raises(TrainingError, match="declared range"):
        drive(ConjugateDirections(len(b), 8, 4), *to_fractions(A, b))


def test_solution_just_inside_weight_bound():
    """A minimiser within 1 of the bound (|w| = 15.75 < 2**4) is found, not refused because a probe point overshoots."""
    A, b = to_fractions([[1, 0], [0, 1]], [Fraction(-31, 2), Fraction(63, 4)])
    optimizer = drive(ConjugateDirections(2, 8, 4), A, b)
    assert optimizer.coefficients == [Fraction(-31, 2), Fraction(63, 4)]


# --- gradient descent -------------------------------------------------------------------------


def test_gradient_descent_converges_and_stops_at_max_rounds():
    rows = 20
    mean_A = [[Fraction(2), Fraction(1, 2), 0], [Fraction(1, 2), Fraction(3, 2), Fraction(1, 4)],
              [0, Fraction(1, 4), Fraction(1)]]  # eigenvalues in [0.8, 2.3]
    target = [Fraction(1, 3), Fraction(-2, 7), Fraction(1, 10)]  # not representable at 2**-32: never a zero gradient
    A = [[a * rows for a in row] for row in mean_A]
    b = [sum(a * t for a, t in zip(row, target)) for row in A]
    assert exact_solve(A, b) == target
    optimizer = drive(gradient_descent(3, 32, 8, 120, 0.4), A, b, row_count=rows)
    assert optimizer.rounds == 120
    assert optimizer.stop_reason == "max_rounds"
    np.testing.assert_allclose([float(c) for c in optimizer.coefficients], [float(t) for t in target], atol=1e-8)


def test_gradient_descent_follows_the_mean_gradient():
    """One step from 0 is −learning_rate · (gradient sum / row count), encoded at the query scale."""
    A, b = to_fractions([[4, 0], [0, 4]], [8, -2])
    optimizer = gradient_descent(2, 16, 8, 5, 0.5)
    optimizer.observe(gradient_at_query(optimizer, A, b), 4)
    assert optimizer.query == [1 * 2**16, -(2**14)]
    assert [float(c) for c in optimizer.coefficients] == [1.0, -0.25]
    assert not optimizer.done


def test_gradient_descent_stops_on_a_zero_gradient():
    A, b = to_fractions([[1]], [1])
    optimizer = gradient_descent(1, 16, 8, 50, 1.0)
    drive(optimizer, A, b, row_count=1)
    assert optimizer.rounds == 2
    assert optimizer.stop_reason is not None and optimizer.stop_reason != "max_rounds"
    assert optimizer.coefficients == [1]


def test_gradient_descent_divergence_is_a_training_error():
    A, b = to_fractions([[10]], [1])
    with pytest.raises(TrainingError, match="declared range"):
        drive(gradient_descent(1, 16, 8, 200, 1.0), A, b, row_count=1)


def test_saved_state_replays_to_the_same_solver_and_stays_small():
    rng = np.random.default_rng(11)
    design = rng.normal(size=(80, 12))
    A, b = to_fractions(design.T @ design, design.T @ rng.normal(size=80))
    reference = drive(ConjugateDirections(12, 32, 16), A, b)

    optimizer = ConjugateDirections(12, 32, 16, max_rounds=50)
    for _ in range(5):
        optimizer.observe(gradient_at_query(optimizer, A, b), 80)
    optimizer.restart()
    for _ in range(3):
        optimizer.observe(gradient_at_query(optimizer, A, b), 80)
    saved = json.loads(json.dumps(optimizer.state()))
    assert len(json.dumps(saved)) < 8 * 12 * 8 * 60  # observations only, no growing rationals

    resumed = ConjugateDirections(12, 32, 16, max_rounds=50)
    resumed.restore(saved)
    assert resumed.query == optimizer.query and resumed.rounds == 8
    drive(resumed, A, b)
    drive(optimizer, A, b)
    assert optimizer.stop_reason == resumed.stop_reason == "exact: all directions explored"
    assert resumed.coefficients == optimizer.coefficients == exact_solve(A, b) == reference.coefficients


def test_a_state_that_does_not_replay_is_refused():
    A, b = [[Fraction(2), Fraction(0)], [Fraction(0), Fraction(3)]], [Fraction(1), Fraction(1)]
    optimizer = drive(ConjugateDirections(2, 32, 8, max_rounds=2), A, b)
    saved = optimizer.state()
    saved["query"] = [str(int(q) + 1) for q in saved["query"]]
    with pytest.raises(TrainingError, match="does not replay"):
        ConjugateDirections(2, 32, 8, max_rounds=2).restore(saved)
