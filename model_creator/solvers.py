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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import reduce
from typing import Any

import numpy as np
import numpy.typing as npt

from common.crypto.bigint import gcd, lcm, rational
from common.crypto.encoding import encode
from common.protocol.errors import EncodingOverflow, TrainingError


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

    def observe(self, gradient_sum: Sequence[Fraction | rational], row_count: int) -> None:
        """Take the gradient sum at :attr:`query` and choose the next query, or stop."""
        self.rounds += 1
        # gmpy2-stubs 2.2.1.5 omit mpq(Fraction), which gmpy2 accepts.
        self._step([rational(g) for g in gradient_sum], row_count)  # type: ignore[arg-type]
        if self.stop_reason is None and self.rounds >= self.max_rounds:
            self.stop_reason = "max_rounds"

    def restart(self) -> None:  # noqa: B027 - a no-op unless the optimiser learns the objective
        """The objective changed (another set of data owners): forget what was learnt of it.

        The next gradient is taken as the first of a new problem, at the current query point.
        """

    def state(self) -> dict[str, Any]:
        """Everything needed to continue after a restart, as JSON-ready values (exact)."""
        return {"rounds": self.rounds, "stop_reason": self.stop_reason, "query": [str(q) for q in self.query]}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` of an optimiser built with the same arguments."""
        self.rounds = int(state["rounds"])
        self.stop_reason = state["stop_reason"]
        self.query = [int(q) for q in state["query"]]

    @property
    @abstractmethod
    def coefficients(self) -> list[Fraction]:
        """The current estimate of the minimiser."""

    @abstractmethod
    def _step(self, gradient_sum: list[rational], row_count: int) -> None:
        """Update the estimate and :attr:`query`, or set :attr:`stop_reason`."""

    def _encode_query(self, point: Sequence[Fraction | rational]) -> list[int]:
        try:
            return [
                encode(
                    Fraction(int(v.numerator), int(v.denominator)),
                    self.weight_frac_bits,
                    self.weight_bits + self.weight_frac_bits,
                    f"weight[{i}]",
                )
                for i, v in enumerate(point)
            ]
        except EncodingOverflow as exc:
            raise TrainingError(
                f"{exc.message}: a coefficient left the declared range |w| < 2**{self.weight_bits};"
                " raise max_abs_weight or rescale the data"
            ) from exc

    def _as_point(self, query: Sequence[int]) -> list[rational]:
        return [rational(q, 1 << self.weight_frac_bits) for q in query]


class ConjugateDirections(Optimizer):
    """Exact minimiser of a quadratic from exact gradients (conjugate gradient in rationals)."""

    def __init__(self, dimension: int, weight_frac_bits: int, weight_bits: int, max_rounds: int | None = None) -> None:
        super().__init__(dimension, weight_frac_bits, weight_bits, max_rounds or dimension + 1)
        self._estimate = [rational(0)] * dimension
        self._gradient: list[rational] | None = None
        self._directions: list[tuple[list[rational], list[rational], rational]] = []
        self._last_observed: tuple[list[rational], list[rational]] | None = None
        # Every observation, with whether a restart preceded it: the exact state is a function of
        # these, so they are what is saved (a few kB), not the conjugate directions (megabytes).
        self._log: list[tuple[bool, list[rational], int]] = []
        self._restarted = False

    @property
    def coefficients(self) -> list[Fraction]:
        return [Fraction(int(v.numerator), int(v.denominator)) for v in self._estimate]

    @property
    def directions(self) -> list[tuple[list[rational], list[rational], rational]]:
        """The explored A-conjugate directions, each with its image under A and its curvature."""
        return list(self._directions)

    def restart(self) -> None:
        self._estimate = self._as_point(self.query)
        self._gradient = None
        self._directions = []
        self._last_observed = None
        self._restarted = True

    def state(self) -> dict[str, Any]:
        log = [[restarted, _texts(gradient), row_count] for restarted, gradient, row_count in self._log]
        return {**super().state(), "log": log}

    def restore(self, state: dict[str, Any]) -> None:
        """Replay the saved observations; the result must be the saved position exactly."""
        for restarted, gradient, row_count in state["log"]:
            if restarted:
                self.restart()
            self.observe(_rationals(gradient), int(row_count))
        saved = (int(state["rounds"]), state["stop_reason"], [int(q) for q in state["query"]])
        if (self.rounds, self.stop_reason, self.query) != saved:
            raise TrainingError("the saved solver state does not replay to the saved position")

    def _step(self, gradient_sum: list[rational], row_count: int) -> None:
        self._log.append((self._restarted, gradient_sum, row_count))
        self._restarted = False
        point = self._as_point(self.query)
        if self._gradient is None:
            self._gradient = gradient_sum
        else:
            self._absorb_direction(point, gradient_sum)
        self._last_observed = (point, gradient_sum)
        if len(self._directions) == self.dimension:
            self._check_range(self._estimate)
            self.stop_reason = "exact: all directions explored"
            return
        # The residual is orthogonal to every explored direction, so it is the next one; once it
        # vanishes before all directions are explored, the minimiser is unique only if the
        # objective curves along the rest too, so those are probed (a flat one is an error).
        direction = [-g for g in self._gradient]
        if not any(direction):
            direction = self._unexplored_direction()
        bound = 1 << self.weight_bits
        # gmpy2-stubs 2.2.1.5 types int − mpq as mpc (an int matches its complex overload first).
        room: rational = (bound - max(abs(x) for x in self._estimate)) / 2  # type: ignore[assignment]
        if room <= 0:
            self._check_range(self._estimate)
        length = min(rational(1), room) / max(abs(v) for v in direction)
        self.query = self._encode_query([x + length * v for x, v in zip(self._estimate, direction, strict=True)])

    def _unexplored_direction(self) -> list[rational]:
        """The unit vector with the largest part outside the span of the explored directions."""
        basis: list[list[rational]] = []
        for earlier, _, _ in self._directions:
            orthogonal = _reject(earlier, basis)
            if any(orthogonal):
                basis.append(orthogonal)
        best, best_norm = None, rational(-1)
        for axis in range(self.dimension):
            candidate = _reject([rational(1) if i == axis else rational(0) for i in range(self.dimension)], basis)
            norm = _dot(candidate, candidate)
            if norm > best_norm:
                best, best_norm = candidate, norm
        assert best is not None  # the dimension is at least one
        return best

    def _check_range(self, point: Sequence[rational]) -> None:
        """The final estimate, too, must respect the declared weight bound."""
        self._encode_query(point)

    def _absorb_direction(self, point: list[rational], gradient_at_point: list[rational]) -> None:
        """Make the step to ``point`` A-conjugate to the earlier ones and minimise along it.

        The new direction is taken between the last two observed points, whose difference and
        gradient difference are short fixed-point numbers; after conjugation it is rescaled to a
        primitive integer vector. Both keep the rationals (and the saved state) from growing
        round after round, without changing any result: any vector of the new span will do.
        """
        assert self._gradient is not None and self._last_observed is not None  # not the first observation
        last_point, last_gradient = self._last_observed
        direction = [p - q for p, q in zip(point, last_point, strict=True)]
        image = [g - h for g, h in zip(gradient_at_point, last_gradient, strict=True)]
        for earlier, earlier_image, curvature in self._directions:
            coefficient = _dot(earlier_image, direction) / curvature
            direction = [d - coefficient * e for d, e in zip(direction, earlier, strict=True)]
            image = [a - coefficient * e for a, e in zip(image, earlier_image, strict=True)]
        direction, image = _primitive(direction, image)
        curvature = _dot(direction, image)
        if curvature <= 0:
            raise TrainingError(
                "the pooled design matrix is singular: some features are collinear, there are"
                " fewer rows than coefficients, or a column's values are too small for the job's"
                " fixed-point scale (declare its bounds)"
            )
        step = -_dot(direction, self._gradient) / curvature
        self._estimate = [x + step * d for x, d in zip(self._estimate, direction, strict=True)]
        self._gradient = [g + step * a for g, a in zip(self._gradient, image, strict=True)]
        self._directions.append((direction, image, curvature))


class StatisticsProbe(Optimizer):
    """Learns the objective from d + 1 gradients, then solves it once (data owners' noisy statistics).

    The queries are 0, then each unit vector: G(0) = −b and G(e_j) − G(0) = A e_j, exactly, so
    after d + 1 rounds the model creator holds the objective the owners' noisy statistics define,
    which is what the exact solver learns too, and ``solve`` (AdaSSP's regularisation, see
    model_creator/noisy_statistics.py) turns it into coefficients with no further round.
    """

    def __init__(
        self,
        dimension: int,
        weight_frac_bits: int,
        weight_bits: int,
        solve: Callable[[list[list[rational]]], list[Fraction]],
    ) -> None:
        super().__init__(dimension, weight_frac_bits, weight_bits, dimension + 1)
        self._solve = solve
        self._gradients: list[list[rational]] = []
        self._solution: list[Fraction] = [Fraction(0)] * dimension

    @property
    def coefficients(self) -> list[Fraction]:
        return self._solution

    def restart(self) -> None:
        """Another set of data owners: probe their objective from the start."""
        self._gradients = []
        self.rounds = 0
        self.query = [0] * self.dimension

    def state(self) -> dict[str, Any]:
        return {**super().state(), "gradients": [_texts(g) for g in self._gradients]}

    def restore(self, state: dict[str, Any]) -> None:
        for gradient in state["gradients"]:
            self.observe(_rationals(gradient), 1)
        if self.rounds != int(state["rounds"]):
            raise TrainingError("the saved probe state does not replay to the saved position")

    def _step(self, gradient_sum: list[rational], row_count: int) -> None:
        self._gradients.append(gradient_sum)
        probed = len(self._gradients) - 1
        if probed == self.dimension:
            self._solution = self._solve(self._gradients)
            self.stop_reason = "exact on the noisy statistics: all directions probed, then regularised"
            return
        unit = 1 << self.weight_frac_bits
        self.query = [unit if i == probed else 0 for i in range(self.dimension)]


@dataclass(frozen=True)
class Scaling:
    """Standardisation as a change of coordinates, done by the model creator alone.

    The optimiser works on coefficients v of standardised features z_k = (x_k − μ_k) / σ_k;
    the weights sent out are the same model in original units, ``w = T v``, and the gradient
    that comes back is mapped with ``Tᵀ``. Data owners keep computing on their raw rows and never
    learn μ or σ.
    """

    means: tuple[float, ...]
    stds: tuple[float, ...]

    def to_original(self, standardised: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        mu, sigma = np.asarray(self.means), np.asarray(self.stds)
        slopes = standardised[1:] / sigma
        return np.concatenate([[standardised[0] - slopes @ mu], slopes])

    def to_standardised(self, original: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        mu, sigma = np.asarray(self.means), np.asarray(self.stds)
        return np.concatenate([[original[0] + original[1:] @ mu], original[1:] * sigma])

    def gradient_to_standardised(self, gradient: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        mu, sigma = np.asarray(self.means), np.asarray(self.stds)
        return np.concatenate([[gradient[0]], gradient[1:] / sigma - mu / sigma * gradient[0]])


class FirstOrder(Optimizer):
    """Gradient descent (the seed's), momentum or Adam on the mean gradient, optionally standardised.

    Stops when the mean gradient's norm falls below ``tolerance``, when a step changes the
    coefficients by less than ``relative_tolerance`` of their norm, or at ``max_rounds``.
    """

    RULES = ("gd", "momentum", "adam")

    def __init__(
        self,
        dimension: int,
        weight_frac_bits: int,
        weight_bits: int,
        max_rounds: int,
        rule: str,
        learning_rate: float,
        tolerance: float = 0.0,
        relative_tolerance: float = 0.0,
        momentum: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        super().__init__(dimension, weight_frac_bits, weight_bits, max_rounds)
        if rule not in self.RULES:
            raise ValueError(f"unknown update rule {rule!r}")
        self.rule = rule
        self.learning_rate = learning_rate
        self.tolerance = tolerance
        self.relative_tolerance = relative_tolerance
        self.momentum = momentum
        self.beta2 = beta2
        self.epsilon = epsilon
        self.scaling: Scaling | None = None
        self._point = np.zeros(dimension)
        self._velocity = np.zeros(dimension)
        self._second_moment = np.zeros(dimension)
        self._steps = 0

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "point": self._point.tolist(),
            "velocity": self._velocity.tolist(),
            "second_moment": self._second_moment.tolist(),
            "steps": self._steps,
            "scaling": None if self.scaling is None else [list(self.scaling.means), list(self.scaling.stds)],
        }

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self._point = np.array(state["point"], dtype=np.float64)
        self._velocity = np.array(state["velocity"], dtype=np.float64)
        self._second_moment = np.array(state["second_moment"], dtype=np.float64)
        self._steps = int(state["steps"])
        self.scaling = None if state["scaling"] is None else Scaling(*map(tuple, state["scaling"]))

    def set_scaling(self, scaling: Scaling) -> None:
        """Work on standardised coordinates from now on (keeping the current model)."""
        self._point = scaling.to_standardised(self._original())
        self.scaling = scaling

    @property
    def coefficients(self) -> list[Fraction]:
        return [Fraction(float(v)) for v in self._original()]

    def _original(self) -> npt.NDArray[np.float64]:
        return self._point if self.scaling is None else self.scaling.to_original(self._point)

    def _step(self, gradient_sum: list[rational], row_count: int) -> None:
        gradient = np.array([float(g) for g in gradient_sum]) / row_count
        if self.scaling is not None:
            gradient = self.scaling.gradient_to_standardised(gradient)
        if float(np.linalg.norm(gradient)) <= self.tolerance:
            self.stop_reason = f"gradient_norm <= {self.tolerance:g}"
            return
        self._steps += 1
        if self.rule == "gd":
            step = self.learning_rate * gradient
        elif self.rule == "momentum":
            self._velocity = self.momentum * self._velocity + gradient
            step = self.learning_rate * self._velocity
        else:
            self._velocity = self.momentum * self._velocity + (1 - self.momentum) * gradient
            self._second_moment = self.beta2 * self._second_moment + (1 - self.beta2) * gradient**2
            corrected = self._velocity / (1 - self.momentum**self._steps)
            spread = np.sqrt(self._second_moment / (1 - self.beta2**self._steps))
            step = self.learning_rate * corrected / (spread + self.epsilon)
        previous = self._point
        self._point = previous - step
        if float(np.linalg.norm(step)) <= self.relative_tolerance * max(float(np.linalg.norm(previous)), 1e-300):
            self.stop_reason = f"relative_change <= {self.relative_tolerance:g}"
        self.query = self._encode_query([Fraction(float(v)) for v in self._original()])


def _primitive(vector: list[rational], companion: list[rational]) -> tuple[list[rational], list[rational]]:
    """``vector`` scaled to coprime integers, and ``companion`` by the same factor."""
    if not any(vector):
        return vector, companion
    denominators = reduce(lcm, (v.denominator for v in vector))
    numerators = reduce(gcd, (v.numerator for v in vector if v))
    factor = rational(denominators, numerators)
    return [v * factor for v in vector], [c * factor for c in companion]


def _texts(values: Sequence[rational]) -> list[str]:
    """Exact rationals as 'numerator/denominator' strings."""
    return [str(v) for v in values]


def _rationals(texts: Sequence[str]) -> list[rational]:
    return [rational(t) for t in texts]


def _reject(vector: list[rational], orthogonal_basis: list[list[rational]]) -> list[rational]:
    """``vector`` minus its projections on mutually orthogonal basis vectors."""
    for base in orthogonal_basis:
        coefficient = _dot(base, vector) / _dot(base, base)
        vector = [v - coefficient * b for v, b in zip(vector, base, strict=True)]
    return vector


def _dot(a: Sequence[rational], b: Sequence[rational]) -> rational:
    total = rational(0)
    for x, y in zip(a, b, strict=True):
        total += x * y
    return total
