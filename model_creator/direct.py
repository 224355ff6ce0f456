"""The one-shot job's solver: the exact minimiser of the summed statistics, in one step.

A one-shot job gives the model creator ``M = ΣA_i (+ the penalty)`` and ``r = Σb_i`` exactly
(:class:`~common.protocol.moments.Moments`). The minimiser of ½wᵀMw − rᵀw is ``M⁻¹r``, which
:func:`solve_positive_definite` computes exactly by Bareiss' fraction-free elimination on
integers (every intermediate value is a minor of the system, so nothing is rounded and the numbers
stay as short as they can), refusing a matrix that is not positive definite, as the
conjugate-directions solver of the gradient protocol does. Its result is that solver's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from functools import reduce
from math import lcm

from common.crypto.bigint import divexact, mpz, rational
from common.protocol.errors import TrainingError
from model_creator.solvers import Optimizer

NOT_POSITIVE_DEFINITE = (
    "the pooled design matrix is singular: some features are collinear or there are fewer rows than coefficients"
)


def solve_positive_definite(matrix: Sequence[Sequence[Fraction]], vector: Sequence[Fraction]) -> list[Fraction]:
    """``matrix⁻¹ · vector`` exactly, for a symmetric positive definite ``matrix``.

    Without pivoting, Bareiss' k-th pivot is the k-th leading principal minor of the (scaled)
    matrix, so all pivots are positive exactly when the matrix is positive definite (Sylvester).

    Raises
    ------
    TrainingError
        When a pivot is not positive: the matrix is singular or indefinite.
    """
    size = len(vector)
    scale = reduce(lcm, (value.denominator for row in matrix for value in row), 1)
    scale = reduce(lcm, (value.denominator for value in vector), scale)
    rows = [
        [mpz(value.numerator * (scale // value.denominator)) for value in (*row, target)]
        for row, target in zip(matrix, vector, strict=True)
    ]
    previous = mpz(1)
    for k in range(size):
        pivot = rows[k][k]
        if pivot <= 0:
            raise TrainingError(NOT_POSITIVE_DEFINITE)
        pivot_row = rows[k]
        for i in range(k + 1, size):
            row = rows[i]
            factor = row[k]
            for j in range(k + 1, size + 1):
                row[j] = divexact(row[j] * pivot - factor * pivot_row[j], previous)
        previous = pivot
    solution = [rational(0)] * size
    for i in reversed(range(size)):
        row = rows[i]
        remainder = row[size] - sum((row[j] * solution[j] for j in range(i + 1, size)), rational(0))
        solution[i] = remainder / row[i]
    return [Fraction(int(value.numerator), int(value.denominator)) for value in solution]


class DirectSolver(Optimizer):
    """The exact minimiser from the summed statistics (:meth:`solve`), with no gradient round."""

    def __init__(self, dimension: int, weight_frac_bits: int, weight_bits: int) -> None:
        super().__init__(dimension, weight_frac_bits, weight_bits, 1)
        self._estimate = [Fraction(0)] * dimension

    @property
    def coefficients(self) -> list[Fraction]:
        return list(self._estimate)

    def solve(self, matrix: Sequence[Sequence[Fraction]], vector: Sequence[Fraction]) -> None:
        """Minimise ½wᵀ·matrix·w − vectorᵀw exactly and stop.

        Raises
        ------
        TrainingError
            When the matrix is not positive definite, or a coefficient leaves the declared range
            (as it would have made the gradient protocol's weights unencodable).
        """
        estimate = solve_positive_definite(matrix, vector)
        self.query = self._encode_query(estimate)
        self._estimate = estimate
        self.rounds = 1
        self.stop_reason = "exact: solved from the summed statistics"

    def take(self, estimate: Sequence[Fraction], stop_reason: str) -> None:
        """Stop at a solution found otherwise (the regularised one of noisy statistics)."""
        self._estimate = list(estimate)
        self.rounds = 1
        self.stop_reason = stop_reason

    def _step(self, gradient_sum: list[rational], row_count: int) -> None:
        raise TrainingError("a one-shot job takes its statistics, not gradients")
