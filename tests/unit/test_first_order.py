"""First-order optimisers (model_creator.solvers.FirstOrder) and standardisation (model_creator.solvers.Scaling).

They are driven by a quadratic oracle: the exact mean gradient ``H w − c`` at the optimiser's
fixed-point query, handed over as a gradient sum over ``ROWS`` rows, as the model creator does
after decryption.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from common.protocol.errors import TrainingError
from model_creator.solvers import FirstOrder, Scaling

FRAC_BITS = 32
OPTIMIZER_WEIGHT_BITS = 24
ROWS = 250


def well_conditioned(seed: int, dimension: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A mean Hessian with eigenvalues in [1, 3] and a right-hand side with a solution of size ~1."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dimension, dimension)))
    hessian = basis @ np.diag(np.linspace(1.0, 3.0, dimension)) @ basis.T
    return hessian, hessian @ rng.normal(0, 1, dimension)


def query_point(optimizer: FirstOrder) -> np.ndarray:
    return np.array([q / 2**optimizer.weight_frac_bits for q in optimizer.query])


def feed(optimizer: FirstOrder, mean_gradient, rows: int = ROWS) -> None:
    """Hand over a gradient *sum* of exact rationals, as decrypted."""
    optimizer.observe([Fraction(float(g)) * rows for g in mean_gradient], rows)


def drive(optimizer: FirstOrder, hessian: np.ndarray, rhs: np.ndarray, limit: int = 20_000) -> list[np.ndarray]:
    """Run to the stopping rule; returns the mean gradient of every round."""
    gradients = []
    while not optimizer.done and optimizer.rounds < limit:
        gradient = hessian @ query_point(optimizer) - rhs
        gradients.append(gradient)
        feed(optimizer, gradient)
    return gradients


def coefficients(optimizer: FirstOrder) -> np.ndarray:
    return np.array([float(c) for c in optimizer.coefficients])


def first_order(rule: str, learning_rate: float, dimension: int = 4, max_rounds: int = 5000, **options) -> FirstOrder:
    return FirstOrder(dimension, FRAC_BITS, OPTIMIZER_WEIGHT_BITS, max_rounds, rule, learning_rate, **options)


# --------------------------------------------------------------------------------------------
# Convergence and stopping rules
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "learning_rate"), [("gd", 0.3), ("momentum", 0.05), ("adam", 0.05)])
@pytest.mark.parametrize("seed", [0, 1])
def test_each_rule_converges_and_stops_on_the_gradient_norm(rule, learning_rate, seed):
    hessian, rhs = well_conditioned(seed)
    optimizer = first_order(rule, learning_rate, tolerance=1e-6)
    gradients = drive(optimizer, hessian, rhs)
    assert optimizer.stop_reason == "gradient_norm <= 1e-06"
    assert optimizer.rounds == len(gradients) < 5000
    # It stopped at the first round whose mean gradient was within the tolerance.
    norms = [float(np.linalg.norm(g)) for g in gradients]
    assert norms[-1] <= 1e-6 and all(n > 1e-6 for n in norms[:-1])
    solution = np.linalg.solve(hessian, rhs)
    np.testing.assert_allclose(coefficients(optimizer), solution, atol=2e-6)


def test_the_round_that_meets_the_tolerance_takes_no_step():
    hessian, rhs = well_conditioned(3)
    optimizer = first_order("gd", 0.3, tolerance=1e-4)
    while True:
        before, query = coefficients(optimizer), list(optimizer.query)
        gradient = hessian @ query_point(optimizer) - rhs
        feed(optimizer, gradient)
        if optimizer.done:
            break
    assert optimizer.stop_reason == "gradient_norm <= 0.0001"
    np.testing.assert_array_equal(coefficients(optimizer), before)
    assert optimizer.query == query


@pytest.mark.parametrize("rule", ["gd", "momentum"])
def test_relative_tolerance_stops_when_a_step_is_small_relative_to_the_coefficients(rule):
    hessian, rhs = well_conditioned(4)
    optimizer = first_order(rule, 0.3 if rule == "gd" else 0.05, relative_tolerance=1e-5)
    ratios = []
    while not optimizer.done:
        before = coefficients(optimizer)
        feed(optimizer, hessian @ query_point(optimizer) - rhs)
        after = coefficients(optimizer)
        ratios.append(np.linalg.norm(after - before) / max(np.linalg.norm(before), 1e-300))
    assert optimizer.stop_reason == "relative_change <= 1e-05"
    assert optimizer.rounds < 5000
    assert ratios[-1] <= 1e-5 * (1 + 1e-6)
    assert all(r > 1e-5 * (1 - 1e-6) for r in ratios[:-1])
    np.testing.assert_allclose(coefficients(optimizer), np.linalg.solve(hessian, rhs), atol=1e-3)


@pytest.mark.parametrize("rule", ["gd", "momentum", "adam"])
def test_max_rounds_is_the_last_resort(rule):
    hessian, rhs = well_conditioned(5)
    optimizer = first_order(rule, 0.01, max_rounds=7, tolerance=1e-12, relative_tolerance=1e-15)
    gradients = drive(optimizer, hessian, rhs)
    assert len(gradients) == optimizer.rounds == 7
    assert optimizer.done and optimizer.stop_reason == "max_rounds"


def test_a_zero_gradient_at_the_start_stops_at_once():
    optimizer = first_order("adam", 0.1, dimension=3)
    feed(optimizer, [0.0, 0.0, 0.0])
    assert optimizer.stop_reason == "gradient_norm <= 0"
    assert optimizer.rounds == 1
    assert coefficients(optimizer).tolist() == [0.0, 0.0, 0.0]


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown update rule 'newton'"):
        first_order("newton", 0.1)


def test_leaving_the_weight_range_is_a_training_error():
    optimizer = FirstOrder(2, FRAC_BITS, 4, 100, "gd", 1.0)
    with pytest.raises(TrainingError, match="max_abs_weight"):
        feed(optimizer, [-20.0, 3.0])


# --------------------------------------------------------------------------------------------
# The update rules, step by step
# --------------------------------------------------------------------------------------------

def test_gradient_descent_steps_along_the_mean_gradient():
    optimizer = first_order("gd", 0.25, dimension=3)
    feed(optimizer, [4.0, -2.0, 0.5], rows=ROWS)
    expected = -0.25 * np.array([4.0, -2.0, 0.5])
    np.testing.assert_allclose(coefficients(optimizer), expected, rtol=1e-15)
    assert optimizer.query == [round(v * 2**FRAC_BITS) for v in expected]
    feed(optimizer, [1.0, 1.0, -1.0], rows=17)
    np.testing.assert_allclose(coefficients(optimizer), expected - 0.25 * np.array([1.0, 1.0, -1.0]), rtol=1e-15)


def test_momentum_accumulates_velocity():
    beta, rate = 0.8, 0.1
    optimizer = first_order("momentum", rate, dimension=2, momentum=beta)
    g1, g2, g3 = np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 0.25])
    w = np.zeros(2)
    velocity = np.zeros(2)
    for gradient in (g1, g2, g3):
        feed(optimizer, gradient)
        velocity = beta * velocity + gradient
        w = w - rate * velocity
        np.testing.assert_allclose(coefficients(optimizer), w, rtol=1e-14)


def test_adam_first_step_is_the_learning_rate_times_the_sign():
    optimizer = first_order("adam", 0.05, dimension=3)
    feed(optimizer, [300.0, -1e-3, 2.0])
    np.testing.assert_allclose(coefficients(optimizer), [-0.05, 0.05, -0.05], rtol=1e-4)


def test_adam_matches_the_bias_corrected_moments():
    beta1, beta2, rate, epsilon = 0.9, 0.999, 0.02, 1e-8
    optimizer = first_order("adam", rate, dimension=2, momentum=beta1, beta2=beta2, epsilon=epsilon)
    w, first, second = np.zeros(2), np.zeros(2), np.zeros(2)
    for step, gradient in enumerate([np.array([2.0, -1.0]), np.array([-0.5, -3.0]), np.array([1.0, 1.0])], 1):
        feed(optimizer, gradient)
        first = beta1 * first + (1 - beta1) * gradient
        second = beta2 * second + (1 - beta2) * gradient**2
        corrected = first / (1 - beta1**step)
        spread = np.sqrt(second / (1 - beta2**step))
        w = w - rate * corrected / (spread + epsilon)
        np.testing.assert_allclose(coefficients(optimizer), w, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Standardisation as a change of coordinates
# --------------------------------------------------------------------------------------------

MEANS = (2150.0, 1985.5, 0.3, 20.0)
STDS = (640.0, 19.7, 0.458, 11.2)


def test_scaling_round_trips():
    scaling = Scaling(MEANS, STDS)
    rng = np.random.default_rng(11)
    for _ in range(5):
        original = rng.normal(0, 10, 5)
        np.testing.assert_allclose(scaling.to_original(scaling.to_standardised(original)), original, rtol=1e-12,
                                   atol=1e-12)
        standardised = rng.normal(0, 10, 5)
        np.testing.assert_allclose(scaling.to_standardised(scaling.to_original(standardised)), standardised,
                                   rtol=1e-12, atol=1e-9)


def test_scaling_preserves_predictions():
    """``[1, x]·w`` equals ``[1, (x − μ)/σ]·v`` for ``v = to_standardised(w)``."""
    scaling = Scaling(MEANS, STDS)
    rng = np.random.default_rng(12)
    rows = rng.normal(MEANS, STDS, (30, 4))
    standardised_rows = (rows - np.array(MEANS)) / np.array(STDS)
    original = rng.normal(0, 1, 5)
    v = scaling.to_standardised(original)
    np.testing.assert_allclose(original[0] + rows @ original[1:], v[0] + standardised_rows @ v[1:], rtol=1e-11)
    w = scaling.to_original(v)
    np.testing.assert_allclose(w[0] + rows @ w[1:], v[0] + standardised_rows @ v[1:], rtol=1e-11)


def test_gradient_to_standardised_is_the_transpose_of_the_jacobian():
    scaling = Scaling(MEANS, STDS)
    jacobian = np.column_stack([scaling.to_original(e) for e in np.eye(5)])  # dw/dv, to_original is linear
    rng = np.random.default_rng(13)
    for _ in range(5):
        gradient = rng.normal(0, 100, 5)
        np.testing.assert_allclose(scaling.gradient_to_standardised(gradient), jacobian.T @ gradient, rtol=1e-12,
                                   atol=1e-12)


def test_gradient_to_standardised_is_the_chain_rule_of_a_numeric_function():
    """For f = logistic loss on raw rows, ∂/∂v f(to_original(v)) by central differences equals the map."""
    means, stds = (120.0, 0.4, 35.0), (15.0, 0.49, 8.0)
    scaling = Scaling(means, stds)
    rng = np.random.default_rng(14)
    rows = np.column_stack([rng.normal(120, 15, 80), (rng.random(80) < 0.4).astype(float), rng.normal(35, 8, 80)])
    labels = (rng.random(80) < 0.5).astype(float)
    design = np.column_stack([np.ones(80), rows])

    def loss(w):
        scores = design @ w
        return float(np.sum(np.logaddexp(0, scores) - labels * scores))

    def loss_gradient(w):
        return design.T @ (1 / (1 + np.exp(-(design @ w))) - labels)

    v = np.array([0.2, 0.5, -0.3, 0.1])
    step = 1e-5
    numeric = np.array([(loss(scaling.to_original(v + h)) - loss(scaling.to_original(v - h))) / (2 * step)
                        for h in np.eye(4) * step])
    mapped = scaling.gradient_to_standardised(loss_gradient(scaling.to_original(v)))
    np.testing.assert_allclose(mapped, numeric, rtol=1e-6, atol=1e-6)


def test_set_scaling_keeps_the_current_model():
    optimizer = first_order("gd", 0.1, dimension=5)
    feed(optimizer, [1.0, -2.0, 3.0, 0.5, -0.25])
    before = coefficients(optimizer)
    optimizer.set_scaling(Scaling(MEANS, STDS))
    np.testing.assert_allclose(coefficients(optimizer), before, rtol=1e-12, atol=1e-12)


def raw_scale_problem(seed: int = 21):
    """Least squares on raw-scale rows (thousands next to a 0/1 flag) and on their standardised copy."""
    rng = np.random.default_rng(seed)
    count = 400
    rows = np.column_stack([
        rng.uniform(600, 4500, count).round(1),
        rng.integers(1950, 2021, count).astype(float),
        (rng.random(count) < 0.3).astype(float),
        rng.uniform(0.5, 40, count).round(3),
    ])
    labels = 3.0 + 0.002 * rows[:, 0] - 0.01 * (rows[:, 1] - 1985) + 1.2 * rows[:, 2] - 0.05 * rows[:, 3]
    labels = labels + rng.normal(0, 0.3, count)
    means, stds = rows.mean(axis=0), rows.std(axis=0)

    def oracle(features):
        design = np.column_stack([np.ones(count), features])
        return design.T @ design / count, design.T @ labels / count

    return Scaling(tuple(means), tuple(stds)), oracle(rows), oracle((rows - means) / stds), rows, labels


@pytest.mark.parametrize(("rule", "learning_rate"), [("gd", 0.5), ("momentum", 0.1), ("adam", 0.1)])
def test_standardised_optimiser_on_raw_rows_follows_the_one_on_prescaled_rows(rule, learning_rate):
    """Round for round, the same model in original units, whatever the features' scales."""
    scaling, (raw_h, raw_c), (scaled_h, scaled_c), rows, labels = raw_scale_problem()
    on_raw = first_order(rule, learning_rate, dimension=5, max_rounds=200)
    on_raw.set_scaling(scaling)
    on_scaled = first_order(rule, learning_rate, dimension=5, max_rounds=200)
    while not on_raw.done:
        feed(on_raw, raw_h @ query_point(on_raw) - raw_c)
        feed(on_scaled, scaled_h @ query_point(on_scaled) - scaled_c)
        mapped = scaling.to_original(coefficients(on_scaled))
        np.testing.assert_allclose(coefficients(on_raw), mapped, rtol=1e-6, atol=1e-9)
    assert on_raw.stop_reason == on_scaled.stop_reason == "max_rounds"
    assert on_raw.rounds == on_scaled.rounds == 200
    # Both reach the least-squares fit's loss; the raw one reports it in original units.
    design = np.column_stack([np.ones(len(rows)), rows])
    best = np.linalg.lstsq(design, labels, rcond=None)[0]
    best_mse = np.mean((design @ best - labels) ** 2)
    assert np.mean((design @ coefficients(on_raw) - labels) ** 2) <= best_mse * 1.05


def test_plain_gradient_descent_on_raw_rows_cannot_use_the_same_learning_rate():
    """Without standardisation the raw-scale problem diverges at the rate that works above."""
    _, (raw_h, raw_c), _, _, _ = raw_scale_problem()
    optimizer = first_order("gd", 0.5, dimension=5, max_rounds=60)
    with pytest.raises(TrainingError, match="left the declared range"):
        drive(optimizer, raw_h, raw_c)


def test_standardised_gradient_norm_drives_the_tolerance():
    """With a scaling, the tolerance applies to the gradient in standardised coordinates."""
    scaling, (raw_h, raw_c), (scaled_h, scaled_c), _, _ = raw_scale_problem()
    on_raw = first_order("gd", 0.5, dimension=5, max_rounds=2000, tolerance=1e-6)
    on_raw.set_scaling(scaling)
    raw_gradients = drive(on_raw, raw_h, raw_c)
    on_scaled = first_order("gd", 0.5, dimension=5, max_rounds=2000, tolerance=1e-6)
    drive(on_scaled, scaled_h, scaled_c)
    assert on_raw.stop_reason == on_scaled.stop_reason == "gradient_norm <= 1e-06"
    assert abs(on_raw.rounds - on_scaled.rounds) <= 1
    assert np.linalg.norm(scaling.gradient_to_standardised(raw_gradients[-1])) <= 1e-6
    assert np.linalg.norm(raw_gradients[-1]) > 1e-6  # in original units it is not yet that small
