"""The models: what a data owner precomputes from its rows, how a model predicts, how it is scored.

For every model here a data owner's gradient sum is affine in the weights,
``g_i(w) = A_i w − b_i`` (PROTOCOL.md section 4), so a data owner computes ``A_i`` and ``b_i``
once per job from its rows and evaluates the affine map on encrypted weights every round.
The first coefficient is the intercept: ``X`` gets a leading column of ones.

=====================  =============  ==============  ==========================================
model                  A_i            b_i             objective (summed over all rows)
=====================  =============  ==============  ==========================================
linear_regression      XᵀX            Xᵀy             ½‖Xw − y‖²
ridge                  XᵀX            Xᵀy             ½‖Xw − y‖² + ½·alpha·‖w₁..‖² (as sklearn)
logistic_regression    ¼·XᵀX          Xᵀ(y − ½)       second-order Taylor expansion at Xw = 0 of
                                                      the logistic loss (Hardy et al. 2017), plus
                                                      ½·alpha·‖w₁..‖² if alpha is given
=====================  =============  ==============  ==========================================

The penalty never involves the data, so the model creator adds its gradient itself after
decryption; data owners compute the same statistics for linear regression and ridge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.protocol.errors import DataError

FloatArray = npt.NDArray[np.float64]
Statistics = tuple[FloatArray, FloatArray]


def with_intercept(features: FloatArray) -> FloatArray:
    """The design matrix: a column of ones, then the features."""
    return np.hstack([np.ones((features.shape[0], 1)), features])


def symmetric_gram(design: FloatArray) -> FloatArray:
    """XᵀX made exactly symmetric (BLAS may round the two triangles differently)."""
    gram = design.T @ design
    return np.triu(gram) + np.triu(gram, 1).T


def least_squares_statistics(features: FloatArray, labels: FloatArray) -> Statistics:
    """A_i = XᵀX and b_i = Xᵀy: the gradient of ½‖Xw − y‖² is A_i w − b_i."""
    design = with_intercept(features)
    return symmetric_gram(design), design.T @ labels


def logistic_taylor_statistics(features: FloatArray, labels: FloatArray) -> Statistics:
    """A_i = ¼XᵀX and b_i = Xᵀ(y − ½): the gradient of the Taylor-approximated logistic loss.

    log(1 + e^(−s)) ≈ log 2 − s/2 + s²/8 for the signed score s = (2y − 1)·xᵀw, whose
    gradient summed over rows is ¼XᵀX w − Xᵀ(y − ½) for labels y in {0, 1}.
    """
    design = with_intercept(features)
    return symmetric_gram(design) / 4, design.T @ (labels - 0.5)


def check_binary_labels(labels: FloatArray, source: str, label: str) -> None:
    """Raise :class:`DataError` naming the first row whose label is not 0 or 1."""
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise DataError(
            f"{source}: row {bad[0] + 1}, column {label!r}: value is not a binary label (0 or 1)", "not_binary", label
        )


def sigmoid(scores: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-np.clip(scores, -700, 700)))


def linear_scores(coefficients: Sequence[float], features: FloatArray) -> FloatArray:
    """``intercept + X·w`` for coefficients whose first entry is the intercept."""
    weights = np.asarray(coefficients, dtype=np.float64)
    scores: FloatArray = weights[0] + features @ weights[1:]
    return scores


def regression_metrics(scores: FloatArray, labels: FloatArray) -> dict[str, float | None]:
    return {"mse": float(np.mean((scores - labels) ** 2))}


def classification_metrics(scores: FloatArray, labels: FloatArray) -> dict[str, float | None]:
    """Accuracy, log-loss and ROC AUC of probabilities ``sigmoid(scores)`` against 0/1 labels."""
    probabilities = np.clip(sigmoid(scores), 1e-15, 1 - 1e-15)
    accuracy = float(np.mean((probabilities >= 0.5) == (labels == 1)))
    log_loss = float(-np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities)))
    return {"accuracy": accuracy, "log_loss": log_loss, "auc": roc_auc(scores, labels)}


def roc_auc(scores: FloatArray, labels: FloatArray) -> float | None:
    """Area under the ROC curve by the rank-sum statistic (ties count one half); None if one class."""
    positives, negatives = int(np.sum(labels == 1)), int(np.sum(labels == 0))
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = float(np.sum(ranks[labels == 1]))
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass(frozen=True)
class ModelKind:
    """Everything that differs between models.

    Attributes
    ----------
    statistics
        The data owner's (A_i, b_i) from its features and labels.
    binary_labels
        Whether labels must be 0 or 1 (checked by every data owner).
    penalised
        Whether ``alpha`` applies.
    standardize_by_default
        Whether training runs on standardised features unless the request says otherwise.
    metrics
        Scores of predictions against labels.
    """

    name: str
    statistics: Callable[[FloatArray, FloatArray], Statistics]
    binary_labels: bool
    penalised: bool
    standardize_by_default: bool
    metrics: Callable[[FloatArray, FloatArray], dict[str, float | None]]

    def predictions(self, coefficients: Sequence[float], features: FloatArray) -> dict[str, list[float] | list[int]]:
        """What a user gets for rows: values, or probabilities and classes."""
        scores = linear_scores(coefficients, features)
        if not self.binary_labels:
            return {"predictions": [float(v) for v in scores]}
        probabilities = sigmoid(scores)
        return {
            "probabilities": [float(p) for p in probabilities],
            "predictions": [int(p >= 0.5) for p in probabilities],
        }

    def score(self, coefficients: Sequence[float], features: FloatArray, labels: FloatArray) -> dict[str, float | None]:
        return self.metrics(linear_scores(coefficients, features), labels)


MODELS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        ModelKind("linear_regression", least_squares_statistics, False, False, False, regression_metrics),
        ModelKind("ridge", least_squares_statistics, False, True, False, regression_metrics),
        ModelKind("logistic_regression", logistic_taylor_statistics, True, True, True, classification_metrics),
    )
}
