"""Per-feature power-of-two scales: exact at any magnitude (PROTOCOL.md section 3).

One fixed-point scale for every feature loses a feature around 1e-6 (its XᵀX entries round away
at 2**-32) and overflows one around 1e9. A job may therefore give each feature ``j`` an exponent
``e_j`` and the label one ``e_y``: every data owner computes on ``x'_j = x_j·2**e_j`` and
``y' = y·2**e_y`` — multiplications by powers of two, exact in floating point — so the encoded
statistics are those of columns of magnitude about one. The model creator solves for ``w'`` in
those units and reads the model back exactly: ``w_j = w'_j·2**(e_j − e_y)``, intercept
``w'_0·2**(−e_y)``.

The model creator chooses the exponents from the job's declared bounds (``scales_from_bounds``):
``e = −round(log2(max(|low|, |high|)))``. A job without bounds keeps every exponent 0: one fixed
scale, 2**-32 for the statistics, as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
#: The largest exponent a job may give a column (both ways).
MAX_EXPONENT = 200


def exponent_for(low: float, high: float) -> int:
    """The power of two that brings a column bounded by ``[low, high]`` to magnitude about one."""
    magnitude = max(abs(low), abs(high))
    if magnitude == 0:
        return 0
    return max(-MAX_EXPONENT, min(MAX_EXPONENT, -round(math.log2(magnitude))))


def scales_from_bounds(
    features: Sequence[str], label: str, bounds: Mapping[str, Sequence[float]] | None, binary_label: bool
) -> tuple[tuple[int, ...] | None, int]:
    """The exponents of a job whose bounds cover every feature (and the label, unless binary)."""
    if not bounds or any(name not in bounds for name in features):
        return None, 0
    feature_scales = tuple(exponent_for(*bounds[name]) for name in features)
    label_scale = 0 if binary_label or label not in bounds else exponent_for(*bounds[label])
    return feature_scales, label_scale


def scaled_columns(
    feature_scales: Sequence[int] | None, label_scale: int, features: FloatArray, labels: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``x·2**e`` per feature and ``y·2**e_y``: what a data owner computes its statistics on."""
    if feature_scales is not None:
        features = features * np.exp2(np.asarray(feature_scales, dtype=np.float64))
    if label_scale:
        labels = labels * 2.0**label_scale
    return features, labels


def unscaled_coefficients(
    feature_scales: Sequence[int] | None, label_scale: int, coefficients: Sequence[Fraction]
) -> list[Fraction]:
    """The model in the data's units from the one in scaled units (exact)."""
    exponents = [0, *(feature_scales or [0] * (len(coefficients) - 1))]
    return [c * Fraction(2) ** (e - label_scale) for c, e in zip(coefficients, exponents, strict=True)]
