"""Per-feature power-of-two scales (common/protocol/scales.py): exact at any magnitude.

Property test: features of magnitudes from 1e-8 to 1e12 in one job, over three owners, trained
with the exact solver on real encrypted replies; with the job's declared bounds (hence its scales)
every coefficient is within 1e-6 relative of pooled least squares, while without them the tiny
and the huge columns are lost or overflow.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import SLOW

from common.protocol.errors import EncodingOverflow, TrainingError
from common.protocol.messages import TrainingOptions, ciphertexts_under
from common.protocol.scales import exponent_for, scaled_columns, scales_from_bounds, unscaled_coefficients
from coordinator.policy import aggregate
from data_owner.affine import EncryptedAffineMap
from model_creator.config import ModelCreatorSettings
from model_creator.training import TrainingRequest, TrainingRun

FEATURES = ["f0", "f1", "f2"]
SETTINGS = ModelCreatorSettings(default_features=FEATURES, default_label="y", test_data=None)


def test_exponents_bring_bounds_to_magnitude_one():
    assert exponent_for(-1e-6, 1e-6) == 20 and exponent_for(0, 1e9) == -30 and exponent_for(0, 1) == 0
    assert scales_from_bounds(["a"], "y", {"a": [0, 1e-6], "y": [0, 1e12]}, False) == ((20,), -40)
    assert scales_from_bounds(["a", "b"], "y", {"a": [0, 1]}, False) == (None, 0)  # 'b' has no bounds
    assert scales_from_bounds(["a"], "y", {"a": [0, 1e3], "y": [0, 5]}, True) == ((-10,), 0)  # binary label
    features, labels = scaled_columns((20, -3), -1, np.array([[3.0, 8.0]]), np.array([4.0]))
    assert features.tolist() == [[3.0 * 2**20, 1.0]] and labels.tolist() == [2.0]
    assert unscaled_coefficients((20, -3), -1, [Fraction(1), Fraction(1), Fraction(1)]) == [2, 2**21, Fraction(1, 4)]


def owners(magnitudes: list[float], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    truth = np.array([3.0, *(rng.uniform(0.5, 2.0) * rng.choice([-1, 1]) / m for m in magnitudes)])
    parts = []
    for rows in (9, 13, 17):
        features = rng.uniform(-1, 1, (rows, len(magnitudes))) * magnitudes
        labels = truth[0] + features @ truth[1:] + rng.normal(0, 0.05, rows)
        parts.append((features, labels))
    return parts


def reference(parts: list[tuple[np.ndarray, np.ndarray]], magnitudes: list[float]) -> np.ndarray:
    """Pooled least squares, solved on columns divided by their magnitude (well conditioned), then undone."""
    features = np.vstack([x for x, _ in parts]) / magnitudes
    labels = np.concatenate([y for _, y in parts])
    solution = np.linalg.lstsq(np.hstack([np.ones((len(labels), 1)), features]), labels, rcond=None)[0]
    return np.concatenate([[solution[0]], solution[1:] / magnitudes])


def train(small_key, parts, bounds) -> list[float]:
    request = TrainingRequest.of(TrainingOptions(bounds=bounds), SETTINGS) if bounds else TrainingRequest.of(
        TrainingOptions(), SETTINGS)
    run = TrainingRun("scaled", request, small_key, SETTINGS, None)
    spec, public_key = run.spec, small_key.public_key
    maps = [EncryptedAffineMap.prepare(spec, x, y, f"owner-{i}") for i, (x, y) in enumerate(parts)]
    try:
        while not run.done:
            order = run.round_order()
            weights = ciphertexts_under(order.encrypted_weights, public_key, "weights", spec.dimension)
            run.absorb(aggregate(public_key.nsquare, [m.evaluate(public_key, weights, spec) for m in maps]),
                       ["a", "b", "c"], {})
        return list(run.coefficients().values())
    finally:
        run.close()


magnitude = st.sampled_from([10.0**k for k in range(-8, 13)])


@SLOW
@given(magnitudes=st.lists(magnitude, min_size=3, max_size=3), seed=st.integers(0, 2**16))
def test_any_mix_of_magnitudes_is_exact_to_1e_6_with_declared_bounds(small_key, magnitudes, seed):
    parts = owners(magnitudes, seed)
    labels = np.concatenate([y for _, y in parts])
    bounds = {name: [-m, m] for name, m in zip(FEATURES, magnitudes, strict=True)}
    bounds["y"] = [float(labels.min()) - 1, float(labels.max()) + 1]
    got = np.array(train(small_key, parts, bounds))
    expected = reference(parts, magnitudes)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)


def test_without_bounds_a_column_too_small_for_the_scale_fails_the_job_naming_it(small_key):
    """1e-5 with one fixed scale: the solution would be ~1e-3 off, so it is an error, never "exact"."""
    with pytest.raises(TrainingError, match=r"cannot make it exact to 1e-06: coefficient 'f0' is only within "
                                            r"\d\.\de-0[1-4] relative .*declare bounds"):
        train(small_key, owners([1e-5, 1.0, 1.0], 5), None)
    # 1e-2 and 1e9 are still exact to 1e-6 at one scale: trained, and right.
    parts = owners([1e-2, 1.0, 1e9], 5)
    np.testing.assert_allclose(train(small_key, parts, None), reference(parts, [1e-2, 1.0, 1e9]), rtol=1e-6)


def test_without_bounds_a_column_too_large_for_the_scale_overflows_loudly(small_key):
    with pytest.raises(EncodingOverflow):
        train(small_key, owners([1.0, 1.0, 1e12], 5), None)
