"""How exact an exact solution is, given that each owner rounded its statistics to the job's scale.

The exact solver returns the exact minimiser of the *encoded* problem: each data owner rounded
every entry of its A_i to a multiple of 2**-data_frac_bits (at most half a unit off), so the
summed A is off by at most K/2 units per entry for K owners. To first order the solution then
moves by δθ = −A⁻¹ δA θ, whence the componentwise bound

    |δθ_j| ≤ (K / 2)·2**-f · Σ_l |θ_l| · Σ_k |A⁻¹|_jk

(the rounding of b, at 2**-(f + weight_frac_bits), is far below it and left out). A job whose
bound exceeds :data:`RELATIVE_PRECISION` for some coefficient cannot honour "exact" and fails
naming it: a column too small (or too large) for one fixed-point scale, which declared bounds
cure by giving each column its own (common/protocol/scales.py).

A is recovered from the solver's conjugate directions P and their images Q = A P; the
computation is in float64 on the matrix equilibrated by its diagonal, which is accurate enough
for a bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from common.crypto.bigint import rational

#: The relative precision every coefficient of an exact job must have.
RELATIVE_PRECISION = 1e-6


def relative_error_bounds(
    directions: Sequence[tuple[Sequence[rational], Sequence[rational], rational]],
    coefficients: Sequence[float],
    contributors: int,
    data_frac_bits: int,
) -> list[float] | None:
    """The bound on each coefficient's relative error (``None`` when it cannot be computed)."""
    try:
        directions_matrix = np.array([[float(x) for x in d] for d, _, _ in directions]).T
        images = np.array([[float(x) for x in image] for _, image, _ in directions]).T
        matrix = np.linalg.solve(directions_matrix.T, images.T).T
    except (np.linalg.LinAlgError, OverflowError, ValueError):
        return None
    return relative_error_bounds_of_matrix(matrix, coefficients, contributors, data_frac_bits)


def relative_error_bounds_of_matrix(
    matrix: npt.NDArray[np.float64], coefficients: Sequence[float], contributors: int, data_frac_bits: int
) -> list[float] | None:
    """As :func:`relative_error_bounds`, from the summed matrix itself (a one-shot job has it)."""
    try:
        matrix = (matrix + matrix.T) / 2
        diagonal = np.abs(np.diag(matrix))
        if not np.all(np.isfinite(matrix)) or np.any(diagonal == 0):
            return None
        scale = 1 / np.sqrt(diagonal)
        inverse = scale[:, None] * np.linalg.inv(scale[:, None] * matrix * scale[None, :]) * scale[None, :]
    except (np.linalg.LinAlgError, OverflowError, ValueError):
        return None
    theta = np.abs(np.asarray(coefficients, dtype=np.float64))
    absolute = contributors / 2 * 2.0**-data_frac_bits * theta.sum() * np.abs(inverse).sum(axis=1)
    return [float(a / t) if t > 0 else 0.0 for a, t in zip(absolute, theta, strict=True)]
