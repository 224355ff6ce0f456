"""The models: what a data owner precomputes from its rows, and how a model predicts.

For every model here a data owner's gradient sum is affine in the weights,
``g_i(w) = A_i w − b_i`` (PROTOCOL.md section 4), so a data owner computes ``A_i`` and ``b_i``
once per job from its rows and evaluates the affine map on encrypted weights every round.
The first coefficient is the intercept: ``X`` gets a leading column of ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Statistics = tuple[np.ndarray, np.ndarray]


def with_intercept(features: np.ndarray) -> np.ndarray:
    """The design matrix: a column of ones, then the features."""
    return np.hstack([np.ones((features.shape[0], 1)), features])


def symmetric_gram(design: np.ndarray) -> np.ndarray:
    """XᵀX made exactly symmetric (BLAS may round the two triangles differently)."""
    gram = design.T @ design
    return np.triu(gram) + np.triu(gram, 1).T


def linear_regression_statistics(features: np.ndarray, labels: np.ndarray) -> Statistics:
    """A_i = XᵀX and b_i = Xᵀy: the gradient of ½‖Xw − y‖² is A_i w − b_i."""
    design = with_intercept(features)
    return symmetric_gram(design), design.T @ labels


MODELS: dict[str, Callable[[np.ndarray, np.ndarray], Statistics]] = {
    "linear_regression": linear_regression_statistics,
}


def predict(coefficients: Sequence[float], features: np.ndarray) -> np.ndarray:
    """Predictions of a linear model whose first coefficient is the intercept."""
    weights = np.asarray(coefficients, dtype=np.float64)
    return weights[0] + features @ weights[1:]


def mean_squared_error(predictions: np.ndarray, labels: np.ndarray) -> float:
    """The cost metric of linear regression."""
    return float(np.mean((predictions - labels) ** 2))
