"""Optimisers driven only by the aggregated gradient of each encrypted round.

Each optimiser proposes the point at which the next round evaluates the gradient (a fixed-point
vector, since that is what gets encrypted) and takes the decrypted gradient sum over all data
owners, exactly, as a vector of rationals.

:class:`ConjugateDirections` is the exact solver for quadratic objectives. The gradient
G(w) = A w − b is affine and every decrypted gradient is exact at the fixed-point scale, so the
difference of two rounds' gradients is exactly A times the difference of their points. Building
A-conjugate directions from those differences in exact rational arithmetic, as conjugate gradient
does, reaches the exact minimiser of the encoded problem after at most d + 1 rounds, with no
float rounding and no dependence on the conditioning of A.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from fractions import Fraction

from common.bigint import rational
from common.encoding import encode
from common.errors import EncodingOverflow, TrainingError


class Optimizer(ABC):
    """A stepwise minimiser over gradient rounds."""

    def __init__(self, dimension: int, weight_frac_bits: int, weight_bits: int, max_rounds: int) -> None:
        self.dimension = dimension
        self.weight_frac_bits = weight_frac_bits
        self.weight_bits = weight_bits
        self.max_rounds = max_rounds
        self.rounds = 0
        self.stop_reason: str | None = None
        self.query: list[int] = [0] * dimension

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    def observe(self, gradient_sum: Sequence[Fraction], row_count: int) -> None:
        """Take the gradient sum at :attr:`query` and choose the next query, or stop."""
        self.rounds += 1
        self._step([rational(g) for g in gradient_sum], row_count)
        if self.stop_reason is None and self.rounds >= self.max_rounds:
            self.stop_reason = "max_rounds"

    def restart(self) -> None:
        """The objective changed (another set of data owners): forget what was learnt of it.

        The next gradient is taken as the first of a new problem, at the current query point.
        """

    @property
    @abstractmethod
    def coefficients(self) -> list[Fraction]:
        """The current estimate of the minimiser."""

    @abstractmethod
    def _step(self, gradient_sum: list, row_count: int) -> None:
        """Update the estimate and :attr:`query`, or set :attr:`stop_reason`."""

    def _encode_query(self, point: Sequence) -> list[int]:
        try:
            return [
                encode(Fraction(int(v.numerator), int(v.denominator)), self.weight_frac_bits,
                       self.weight_bits + self.weight_frac_bits, f"weight[{i}]")
                for i, v in enumerate(point)
            ]
        except EncodingOverflow as exc:
            raise TrainingError(
                f"{exc.message}: a coefficient left the declared range |w| < 2**{self.weight_bits};"
                " raise max_abs_weight or rescale the data"
            ) from exc

    def _as_point(self, query: Sequence[int]) -> list:
        return [rational(q, 1 << self.weight_frac_bits) for q in query]


class ConjugateDirections(Optimizer):
    """Exact minimiser of a quadratic from exact gradients (conjugate gradient in rationals)."""

    def __init__(self, dimension: int, weight_frac_bits: int, weight_bits: int, max_rounds: int | None = None) -> None:
        super().__init__(dimension, weight_frac_bits, weight_bits, max_rounds or dimension + 1)
        self._estimate = [rational(0)] * dimension
        self._gradient: list | None = None
        self._directions: list[tuple[list, list, object]] = []

    @property
    def coefficients(self) -> list[Fraction]:
        return [Fraction(int(v.numerator), int(v.denominator)) for v in self._estimate]

    def restart(self) -> None:
        self._estimate = self._as_point(self.query)
        self._gradient = None
        self._directions = []

    def _step(self, gradient_sum: list, row_count: int) -> None:
        if self._gradient is None:
            self._gradient = gradient_sum
        else:
            self._absorb_direction(self._as_point(self.query), gradient_sum)
        residual = [-g for g in self._gradient]
        if not any(residual):
            self.stop_reason = "exact: gradient is zero"
            return
        if len(self._directions) == self.dimension:
            self.stop_reason = "exact: all directions explored"
            return
        scale = max(abs(r) for r in residual)
        self.query = self._encode_query([x + r / scale for x, r in zip(self._estimate, residual)])

    def _absorb_direction(self, point: list, gradient_at_point: list) -> None:
        """Make the step to ``point`` A-conjugate to the earlier ones and minimise along it."""
        direction = [p - x for p, x in zip(point, self._estimate)]
        image = [g - h for g, h in zip(gradient_at_point, self._gradient)]
        for earlier, earlier_image, curvature in self._directions:
            coefficient = _dot(earlier_image, direction) / curvature
            direction = [d - coefficient * e for d, e in zip(direction, earlier)]
            image = [a - coefficient * e for a, e in zip(image, earlier_image)]
        curvature = _dot(direction, image)
        if curvature <= 0:
            raise TrainingError(
                "the pooled design matrix is singular: some features are collinear or there are"
                " fewer rows than coefficients"
            )
        step = -_dot(direction, self._gradient) / curvature
        self._estimate = [x + step * d for x, d in zip(self._estimate, direction)]
        self._gradient = [g + step * a for g, a in zip(self._gradient, image)]
        self._directions.append((direction, image, curvature))


class GradientDescent(Optimizer):
    """Plain gradient descent on the mean gradient with a fixed learning rate (the seed's)."""

    def __init__(
        self, dimension: int, weight_frac_bits: int, weight_bits: int, max_rounds: int, learning_rate: float
    ) -> None:
        super().__init__(dimension, weight_frac_bits, weight_bits, max_rounds)
        self.learning_rate = rational(Fraction(learning_rate))

    @property
    def coefficients(self) -> list[Fraction]:
        return [Fraction(q, 1 << self.weight_frac_bits) for q in self.query]

    def _step(self, gradient_sum: list, row_count: int) -> None:
        if not any(gradient_sum):
            self.stop_reason = "gradient is zero"
            return
        point = self._as_point(self.query)
        step = self.learning_rate / row_count
        self.query = self._encode_query([w - step * g for w, g in zip(point, gradient_sum)])


def _dot(a: Sequence, b: Sequence):
    total = rational(0)
    for x, y in zip(a, b):
        total += x * y
    return total
