"""The one-shot solver (model_creator/direct.py): exact, and the gradient protocol's own result."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from common.protocol.errors import TrainingError
from model_creator.direct import DirectSolver, solve_positive_definite
from model_creator.solvers import ConjugateDirections


def integer_system(seed: int, dimension: int, rows: int):
    rng = np.random.default_rng(seed)
    design = np.hstack([np.ones((rows, 1)), rng.integers(-50, 50, (rows, dimension - 1))])
    labels = design @ rng.integers(-9, 9, dimension) + rng.integers(-3, 3, rows)
    matrix = [[Fraction(int(v)) for v in row] for row in design.T @ design]
    return matrix, [Fraction(int(v)) for v in design.T @ labels]


def test_a_small_system_is_solved_exactly():
    matrix = [[Fraction(4), Fraction(1)], [Fraction(1), Fraction(3)]]
    assert solve_positive_definite(matrix, [Fraction(1), Fraction(2)]) == [Fraction(1, 11), Fraction(7, 11)]
    thirds = [[Fraction(1, 3), Fraction(0)], [Fraction(0), Fraction(5, 2)]]
    assert solve_positive_definite(thirds, [Fraction(1, 7), Fraction(1)]) == [Fraction(3, 7), Fraction(2, 5)]


@pytest.mark.parametrize("seed", range(4))
def test_the_solution_satisfies_the_system_exactly(seed):
    matrix, vector = integer_system(seed, 8, 40)
    solution = solve_positive_definite(matrix, vector)
    assert [sum(m * x for m, x in zip(row, solution)) for row in matrix] == vector


@pytest.mark.parametrize("matrix", [
    [[Fraction(1), Fraction(2)], [Fraction(2), Fraction(4)]],  # singular
    [[Fraction(1), Fraction(3)], [Fraction(3), Fraction(1)]],  # indefinite
    [[Fraction(0), Fraction(0)], [Fraction(0), Fraction(1)]],
    [[Fraction(-2), Fraction(0)], [Fraction(0), Fraction(1)]],
])
def test_a_matrix_that_is_not_positive_definite_is_refused(matrix):
    with pytest.raises(TrainingError, match="singular"):
        solve_positive_definite(matrix, [Fraction(1), Fraction(1)])


def test_the_direct_solver_gives_the_conjugate_directions_result_to_the_last_bit():
    matrix, vector = integer_system(7, 6, 30)
    scaled = [[m / 64 for m in row] for row in matrix]
    direct = DirectSolver(6, 32, 32)
    direct.solve(scaled, vector)
    gradient_rounds = ConjugateDirections(6, 32, 32)
    while not gradient_rounds.done:
        point = [Fraction(q, 2**32) for q in gradient_rounds.query]
        gradient_rounds.observe([sum(m * w for m, w in zip(row, point)) - r for row, r in zip(scaled, vector)], 30)
    assert gradient_rounds.stop_reason.startswith("exact")
    assert direct.stop_reason == "exact: solved from the summed statistics" and direct.done
    assert direct.coefficients == gradient_rounds.coefficients


def test_a_solution_beyond_the_declared_weight_bound_is_refused():
    solver = DirectSolver(1, 32, 4)
    with pytest.raises(TrainingError, match="left the declared range"):
        solver.solve([[Fraction(1, 100)]], [Fraction(1)])
    assert not solver.done


def test_the_direct_solver_takes_no_gradient():
    with pytest.raises(TrainingError, match="takes its statistics, not gradients"):
        DirectSolver(2, 32, 32).observe([Fraction(1), Fraction(2)], 3)
