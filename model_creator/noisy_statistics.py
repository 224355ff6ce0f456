"""Solving from data owners' noisy statistics: AdaSSP's regularisation, as post-processing.

When data owners protect their rows with differential privacy (PROTOCOL.md section 8), the
aggregate the model creator decrypts is the gradient of the objective of the *noisy* statistics
ΣÃ_i, Σb̃_i. Their sum may be indefinite, and even when it is not, solving it as it is amplifies
the noise along its weak directions. The rule here is that of AdaSSP (Wang 2018, "Revisiting
differentially private linear regression", Algorithm 2), in the normalised coordinates in which
the owners' noise is isotropic (each column divided by the scale M of its declared bounds):

* τ = σ·√(d·log(2d²/β)) bounds the spectral norm of the summed noise matrix with probability at
  least 1 − β, where σ² is the sum of the owners' declared noise variances on the Gram block;
* λ = max(0, τ − λ_min(G̃)), where G̃ is the noisy normalised Gram matrix: AdaSSP estimates λ_min
  of the true matrix privately, at a third of its budget; here the smallest eigenvalue of the
  noisy matrix the owners released is used, which is post-processing and costs nothing;
* θ solves (G̃ + λI)·(Dθ) = D⁻¹b̃ / a, so every eigenvalue of the regularised matrix is at least
  τ and the solution exists whatever the noise drew.

Every step is a function of what the owners released, so it spends no privacy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.protocol.errors import TrainingError
from common.protocol.messages import PrivacyDeclaration
from common.protocol.models import MODELS
from common.protocol.spec import JobSpec

#: β: the probability that the noise's spectral norm exceeds τ.
FAILURE_PROBABILITY = 0.05
RULE = "AdaSSP (Wang 2018): λ = max(0, τ − λ_min of the noisy normalised Gram matrix)"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class NoiseModel:
    """The summed noise of a round's contributors and the normalisation it is isotropic in."""

    gram_std: float
    scales: tuple[float, ...]
    factor: float

    @classmethod
    def of(cls, spec: JobSpec, declarations: Mapping[str, PrivacyDeclaration]) -> NoiseModel:
        """From the contributors' declarations and the job's bounds (which DP owners require).

        Raises
        ------
        TrainingError
            When private contributions come for a job that declares no bounds for a column.
        """
        bounds = spec.bounds or {}
        missing = [f for f in spec.features if f not in bounds]
        if missing:
            raise TrainingError(f"private contributions for a job without bounds for {', '.join(missing)}")
        scales = (1.0, *(max(abs(bounds[f][0]), abs(bounds[f][1])) for f in spec.features))
        gram_std = math.sqrt(sum(d.noise_std["gram"] ** 2 for d in declarations.values()))
        factor = 0.25 if MODELS[spec.model].binary_labels else 1.0
        return cls(gram_std, scales, factor)

    @property
    def tau(self) -> float:
        """AdaSSP's high-probability bound on the noise's spectral norm (normalised units)."""
        d = len(self.scales)
        return self.gram_std * math.sqrt(d * math.log(2 * d * d / FAILURE_PROBABILITY))

    def penalty(self, strength: float) -> FloatArray:
        """The diagonal that adds ``strength``·I in normalised coordinates to A (original units)."""
        scales = np.asarray(self.scales)
        penalty: FloatArray = strength * self.factor * scales * scales
        return penalty


@dataclass(frozen=True)
class Regularised:
    """A solution of the noisy statistics and what was done to get it."""

    coefficients: tuple[float, ...]
    strength: float
    tau: float
    min_eigenvalue: float | None

    def report(self, noise: NoiseModel) -> dict[str, object]:
        return {
            "rule": RULE,
            "lambda": self.strength,
            "tau": self.tau,
            "min_eigenvalue": self.min_eigenvalue,
            "failure_probability": FAILURE_PROBABILITY,
            "gram_noise_std": noise.gram_std,
            "normalisation": "each column divided by max(|low|, |high|) of its declared bounds",
        }


def solve_adassp(matrix: FloatArray, vector: FloatArray, noise: NoiseModel) -> Regularised:
    """θ minimising ½θᵀAθ − bᵀθ + ½λ‖Dθ‖² for the noisy A = ``matrix`` and b = ``vector``.

    Raises
    ------
    TrainingError
        When the regularised system still cannot be solved (non-finite statistics).
    """
    scales = np.asarray(noise.scales)
    normaliser = noise.factor * np.outer(scales, scales)
    gram = matrix / normaliser
    gram = (gram + gram.T) / 2
    if not np.all(np.isfinite(gram)) or not np.all(np.isfinite(vector)):
        raise TrainingError("the noisy statistics are not finite")
    min_eigenvalue = float(np.linalg.eigvalsh(gram)[0])
    tau = noise.tau
    strength = max(0.0, tau - min_eigenvalue)
    regularised = gram + strength * np.eye(len(scales))
    try:
        normalised = np.linalg.solve(regularised, vector / (noise.factor * scales))
    except np.linalg.LinAlgError as exc:
        raise TrainingError(f"the regularised noisy statistics cannot be solved: {exc}") from exc
    return Regularised(tuple(float(v) for v in normalised / scales), strength, tau, min_eigenvalue)


def probe_statistics(gradients: Sequence[Sequence[float]]) -> tuple[FloatArray, FloatArray]:
    """A and b of an affine gradient from its values at 0 and at each unit vector.

    G(0) = −b and G(e_j) − G(0) = A e_j: d + 1 gradients give the whole objective.
    """
    at_zero = np.asarray(gradients[0], dtype=np.float64)
    columns = [np.asarray(g, dtype=np.float64) - at_zero for g in gradients[1:]]
    return np.stack(columns, axis=1), -at_zero
