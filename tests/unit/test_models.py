"""The model maths of common/models.py against formulas written out with numpy.

Each model's per-owner statistics (A_i, b_i), the gradient they stand for, predictions, and the
metrics (MSE, accuracy, log-loss, ROC AUC by brute force over all positive/negative pairs).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import brute_force_auc, design

from common.service.app import status_of
from common.protocol.errors import DataError
from common.protocol.models import (
    MODELS,
    check_binary_labels,
    classification_metrics,
    least_squares_statistics,
    linear_scores,
    logistic_taylor_statistics,
    regression_metrics,
    roc_auc,
    sigmoid,
    symmetric_gram,
    with_intercept,
)


def raw_scale_rows(seed: int, count: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features in the thousands next to a 0/1 flag, a real label and a 0/1 label."""
    rng = np.random.default_rng(seed)
    features = np.column_stack([
        rng.uniform(500, 4500, count).round(1),
        rng.integers(1950, 2021, count).astype(float),
        (rng.random(count) < 0.3).astype(float),
        rng.normal(0, 1, count),
    ])
    real = features @ np.array([120.0, 900.0, 25_000.0, -300.0]) + rng.normal(0, 1000, count)
    binary = (rng.random(count) < 0.4).astype(float)
    return features, real, binary


def reference_log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean −log p(label) with p = sigmoid(score), computed stably (no clipping needed for |s| < 30)."""
    return float(np.mean(labels * np.logaddexp(0, -scores) + (1 - labels) * np.logaddexp(0, scores)))


# --------------------------------------------------------------------------------------------
# Statistics of each model
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_least_squares_statistics_are_gram_and_moment(seed):
    features, labels, _ = raw_scale_rows(seed)
    A, b = least_squares_statistics(features, labels)
    X = design(features)
    np.testing.assert_allclose(A, X.T @ X, rtol=1e-12)
    np.testing.assert_allclose(b, X.T @ labels, rtol=1e-12)
    assert A.shape == (5, 5) and b.shape == (5,)
    assert np.array_equal(A, A.T), "A_i must be exactly symmetric"
    assert A[0, 0] == len(labels)
    np.testing.assert_allclose(A[0, 1:], features.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(b[0], labels.sum(), rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logistic_taylor_statistics_are_quarter_gram_and_centred_moment(seed):
    features, _, labels = raw_scale_rows(seed)
    A, b = logistic_taylor_statistics(features, labels)
    X = design(features)
    np.testing.assert_allclose(A, X.T @ X / 4, rtol=1e-12)
    np.testing.assert_allclose(b, X.T @ (labels - 0.5), rtol=1e-12)
    assert np.array_equal(A, A.T)
    assert A[0, 0] == len(labels) / 4
    assert b[0] == pytest.approx(labels.sum() - len(labels) / 2)


def test_least_squares_gradient_is_that_of_half_squared_error():
    """A w − b is the gradient of ½‖Xw − y‖², checked by central differences."""
    rng = np.random.default_rng(5)
    features = rng.normal(0, 1, (40, 3))
    labels = rng.normal(0, 1, 40)
    A, b = least_squares_statistics(features, labels)
    X = design(features)

    def objective(w):
        return 0.5 * np.sum((X @ w - labels) ** 2)

    w = rng.normal(0, 1, 4)
    numeric = np.array([(objective(w + h) - objective(w - h)) / 2e-6 for h in np.eye(4) * 1e-6])
    np.testing.assert_allclose(A @ w - b, numeric, rtol=1e-6, atol=1e-6)


def test_logistic_taylor_gradient_is_that_of_the_second_order_expansion():
    """A w − b is the gradient of Σ log 2 − s/2 + s²/8 with s = (2y − 1)·xᵀw (Hardy et al.)."""
    rng = np.random.default_rng(6)
    features = rng.normal(0, 1, (50, 3))
    labels = (rng.random(50) < 0.5).astype(float)
    A, b = logistic_taylor_statistics(features, labels)
    X = design(features)
    signs = 2 * labels - 1

    def taylor_loss(w):
        s = signs * (X @ w)
        return np.sum(math.log(2) - s / 2 + s**2 / 8)

    w = rng.normal(0, 0.5, 4)
    numeric = np.array([(taylor_loss(w + h) - taylor_loss(w - h)) / 2e-6 for h in np.eye(4) * 1e-6])
    np.testing.assert_allclose(A @ w - b, numeric, rtol=1e-6, atol=1e-6)

    # Near w = 0 the expansion agrees with the exact logistic loss to fourth order.
    small = w * 1e-2
    exact = np.sum(np.logaddexp(0, -signs * (X @ small)))
    assert abs(exact - taylor_loss(small)) < 1e-6


def test_symmetric_gram_is_exactly_symmetric_and_equals_the_product():
    rng = np.random.default_rng(7)
    X = with_intercept(rng.normal(1000, 300, (300, 6)))
    gram = symmetric_gram(X)
    assert np.array_equal(gram, gram.T)
    np.testing.assert_allclose(gram, X.T @ X, rtol=1e-13)
    np.testing.assert_array_equal(with_intercept(np.zeros((2, 1))), [[1.0, 0.0], [1.0, 0.0]])


def test_model_registry_describes_each_model():
    assert set(MODELS) == {"linear_regression", "ridge", "logistic_regression"}
    linear, ridge, logistic = MODELS["linear_regression"], MODELS["ridge"], MODELS["logistic_regression"]
    assert (linear.binary_labels, linear.penalised, linear.standardize_by_default) == (False, False, False)
    assert (ridge.binary_labels, ridge.penalised, ridge.standardize_by_default) == (False, True, False)
    assert (logistic.binary_labels, logistic.penalised, logistic.standardize_by_default) == (True, True, True)
    # Ridge's penalty is added by the model creator: owners compute the least-squares statistics.
    features, labels, binary = raw_scale_rows(3)
    pairs = [(ridge.statistics(features, labels), least_squares_statistics(features, labels)),
             (logistic.statistics(features, binary), logistic_taylor_statistics(features, binary))]
    for got, expected in pairs:
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------

def test_linear_scores_put_the_intercept_first():
    features = np.array([[1.0, 2.0], [3.0, -4.0], [0.0, 0.0]])
    np.testing.assert_allclose(linear_scores([0.5, 2.0, -1.0], features), [0.5, 10.5, 0.5])


def test_regression_prediction_and_score():
    features, labels, _ = raw_scale_rows(8)
    coefficients = [10.0, 120.0, 900.0, 25_000.0, -300.0]
    expected = design(features) @ np.array(coefficients)
    for name in ("linear_regression", "ridge"):
        answer = MODELS[name].predictions(coefficients, features)
        assert set(answer) == {"predictions"}
        np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-12)
        assert all(isinstance(v, float) for v in answer["predictions"])
        score = MODELS[name].score(coefficients, features, labels)
        assert score == {"mse": pytest.approx(float(np.mean((expected - labels) ** 2)), rel=1e-12)}


def test_logistic_prediction_gives_probabilities_and_classes():
    features = np.array([[-2.0], [0.0], [0.5], [40.0], [-800.0], [800.0]])
    answer = MODELS["logistic_regression"].predictions([0.0, 1.0], features)
    assert set(answer) == {"probabilities", "predictions"}
    scores = features[:, 0]
    expected = 1 / (1 + np.exp(-np.clip(scores, -700, 700)))
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-12)
    # A score of exactly 0 (probability ½) is class 1.
    assert answer["predictions"] == [0, 1, 1, 1, 0, 1]
    assert all(type(c) is int for c in answer["predictions"])
    assert all(0.0 <= p <= 1.0 for p in answer["probabilities"])


def test_sigmoid_of_extreme_scores_does_not_overflow():
    values = sigmoid(np.array([-1e6, -745.0, 0.0, 745.0, 1e6]))
    assert np.all(np.isfinite(values))
    assert values[0] < 1e-300 and values[2] == 0.5 and values[-1] == 1.0


def test_regression_metrics_is_mean_squared_error():
    assert regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 6.0])) == {"mse": pytest.approx(13 / 3)}


# --------------------------------------------------------------------------------------------
# ROC AUC and classification metrics
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_equals_brute_force_pairs_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(5, 80))
    labels = (rng.random(count) < rng.uniform(0.2, 0.8)).astype(float)
    labels[0], labels[1] = 0.0, 1.0
    # Rounded scores: many ties, also across classes.
    scores = np.round(rng.normal(0, 1, count) + labels * rng.uniform(0, 2), 1)
    assert roc_auc(scores, labels) == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.booleans()), min_size=2, max_size=30))
def test_roc_auc_property_against_brute_force(pairs):
    scores = np.array([float(s) for s, _ in pairs])
    labels = np.array([1.0 if positive else 0.0 for _, positive in pairs])
    got = roc_auc(scores, labels)
    if labels.min() == labels.max():
        assert got is None
    else:
        assert got == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


def test_roc_auc_extremes():
    labels = np.array([0.0, 0.0, 1.0, 1.0])
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    assert roc_auc(np.array([0.1, 0.2]), np.array([1.0, 1.0])) is None
    assert roc_auc(np.array([0.1, 0.2]), np.array([0.0, 0.0])) is None


@pytest.mark.parametrize("seed", range(4))
def test_classification_metrics_against_numpy(seed):
    rng = np.random.default_rng(100 + seed)
    count = 150
    labels = (rng.random(count) < 0.45).astype(float)
    scores = rng.normal(0, 2, count) + 1.5 * (2 * labels - 1)
    scores[:5] = 0.0  # probability exactly ½ predicts class 1
    metrics = classification_metrics(scores, labels)
    assert set(metrics) == {"accuracy", "log_loss", "auc"}
    assert metrics["accuracy"] == pytest.approx(float(np.mean((scores >= 0).astype(float) == labels)), abs=1e-15)
    assert metrics["log_loss"] == pytest.approx(reference_log_loss(scores, labels), rel=1e-9)
    assert metrics["auc"] == pytest.approx(brute_force_auc(scores, labels), abs=1e-12)


def test_classification_metrics_clip_confidently_wrong_predictions():
    scores = np.array([-1000.0, 1000.0, 3.0])
    labels = np.array([1.0, 0.0, 1.0])
    metrics = classification_metrics(scores, labels)
    assert math.isfinite(metrics["log_loss"])
    # Probabilities are clipped to [1e-15, 1 − 1e-15] (the upper bound as rounded in float64).
    expected = (-math.log(1e-15) - math.log(1 - (1 - 1e-15)) + math.log1p(math.exp(-3.0))) / 3
    assert metrics["log_loss"] == pytest.approx(expected, rel=1e-9)
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["auc"] == 0.0  # both positives score below the one negative


def test_classification_metrics_with_one_class_has_no_auc():
    metrics = classification_metrics(np.array([1.0, -1.0]), np.array([1.0, 1.0]))
    assert metrics["auc"] is None
    assert metrics["accuracy"] == 0.5


def test_model_kind_score_for_logistic_uses_the_intercept():
    features = np.array([[0.0], [1.0], [2.0], [3.0]])
    labels = np.array([0.0, 0.0, 1.0, 1.0])
    metrics = MODELS["logistic_regression"].score([-1.5, 1.0], features, labels)
    assert metrics["accuracy"] == 1.0 and metrics["auc"] == 1.0
    assert metrics["log_loss"] == pytest.approx(reference_log_loss(np.array([-1.5, -0.5, 0.5, 1.5]), labels))


# --------------------------------------------------------------------------------------------
# Binary labels
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [[0, 1, 1, 0], [1.0], [0.0, -0.0, 1.0], [0, 0, 0]])
def test_binary_labels_pass(labels):
    check_binary_labels(np.array(labels, dtype=float), "owner.csv", "sold")


@pytest.mark.parametrize(("labels", "row", "shown"), [
    ([0, 1, 2, 1], 3, "2"),
    ([0.5, 1, 1], 1, "0.5"),
    ([0, 1, 0, 1, 0, -1], 6, "-1"),
    ([1, 1, 1, 1, 0, 1, 1, 0.999, 3], 8, "0.999"),
    ([0, float("nan")], 2, "nan"),
])
def test_non_binary_label_names_file_column_and_row_but_not_the_value(labels, row, shown):
    with pytest.raises(DataError) as caught:
        check_binary_labels(np.array(labels, dtype=float), "/data/owner_b.csv", "sold")
    message = caught.value.message
    assert message.startswith("/data/owner_b.csv: ")
    assert f"row {row}," in message
    assert "column 'sold'" in message
    assert "value is not a binary label (0 or 1)" in message
    assert shown not in message.split(": ", 1)[1].replace(f"row {row}", "")
    assert status_of(caught.value) == 422
