"""The public frame of each column of a private job: the centre and radius of its declared bounds.

A data owner that protects its rows with differential privacy (PROTOCOL.md section 8) clips each
value to its column's bounds ``[low, high]`` and maps it to ``z = (x − centre) / radius`` in
[-1, 1], centre and radius being the midpoint and half-width of the bounds; the label too, unless
it is binary. Every released entry then moves by at most one unit per row whatever the column's
magnitude, and the normalised Gram matrix is centred, so its noise hurts its small directions
least. Both sides use the same frames: the owner to normalise and to map its release back to the
job's units, the model creator to solve in the coordinates in which the noise is isotropic.

With ``x̃ = (1, x)`` and ``z̃ = (1, z)``, ``x̃ = L z̃`` for the lower-triangular ``L`` of
:func:`design_map`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from common.protocol.models import MODELS
from common.protocol.spec import JobSpec


@dataclass(frozen=True)
class Frame:
    """``x = centre + radius · z``: the column's bounds are ``centre ± radius``."""

    centre: Fraction
    radius: Fraction

    @classmethod
    def of(cls, low: float, high: float) -> Frame:
        return cls((Fraction(low) + Fraction(high)) / 2, (Fraction(high) - Fraction(low)) / 2)


def unbounded_column(spec: JobSpec) -> str | None:
    """The first column a private job must declare bounds for and does not (a binary label needs none)."""
    bounds = spec.bounds or {}
    binary = MODELS[spec.model].binary_labels
    for column in (*spec.features, *(() if binary else (spec.label,))):
        if column not in bounds:
            return str(column)
    return None


def column_frames(spec: JobSpec) -> tuple[list[Frame], Frame | None]:
    """The frame of each feature and of the label (``None`` for a binary label, whose t is 2y − 1).

    The caller has checked :func:`unbounded_column`.
    """
    bounds = spec.bounds or {}
    features = [Frame.of(*bounds[name]) for name in spec.features]
    label = None if MODELS[spec.model].binary_labels else Frame.of(*bounds[spec.label])
    return features, label


def design_map(spec: JobSpec) -> npt.NDArray[np.float64]:
    """``L`` with ``x̃ = L z̃``: first column (1, centres), then the radii on the diagonal.

    In the job's scaled units (common/protocol/scales.py), which is where its statistics are:
    row j is multiplied by ``2**e_j``.
    """
    frames, _ = column_frames(spec)
    dimension = spec.dimension
    exponents = spec.feature_scales or (0,) * len(frames)
    matrix = np.eye(dimension)
    for j, (frame, exponent) in enumerate(zip(frames, exponents, strict=True), start=1):
        matrix[j, 0] = float(frame.centre) * 2.0**exponent
        matrix[j, j] = float(frame.radius) * 2.0**exponent
    return matrix
