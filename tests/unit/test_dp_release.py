"""A data owner's private release (data_owner/release.py) and its accounting (data_owner/accounting.py).

What is checked: the conversion between (ε, δ) and ρ and its composition; clipping to the declared
bounds; the exact sensitivity of every released entry (property test: one row more changes no
entry by more than 2**2h); the noise, over many draws, against the declared discrete Gaussian
(a Kolmogorov–Smirnov and a variance test, with stated false-alarm rates); and the encoding of a
release, which at a negligible noise gives the job's exact statistics back.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from support import DIABETES_FEATURES, DIABETES_LABEL, SHIPPED, SLOW

from common.dataset import load_columns
from common.protocol.errors import Refused
from common.protocol.models import MODELS
from common.protocol.spec import JobSpec
from data_owner.accounting import epsilon_of, rho_for
from data_owner.affine import EncryptedAffineMap
from data_owner.release import BLOCK_SHARES, MAX_ROWS, QUANTUM_BITS, NoisyRelease, exact_blocks

BOUNDS = json.loads((SHIPPED / "dp_job.json").read_text())["bounds"]
ONE = 1 << (2 * QUANTUM_BITS)
# A false alarm of each statistical test below happens once in this many runs.
FALSE_ALARM = 1e-6


def spec_for(key, model="linear_regression", bounds=BOUNDS, features=DIABETES_FEATURES, label=DIABETES_LABEL):
    return JobSpec.for_bounds("dp-job", model, features, label, key.public_key, data_bits=48, data_frac_bits=32,
                              weight_bits=16, weight_frac_bits=32, max_contributors=100, bounds=bounds)


@pytest.fixture(scope="module")
def shipped():
    return load_columns(SHIPPED / "train.csv", DIABETES_FEATURES, DIABETES_LABEL)


# --- accounting ------------------------------------------------------------------------------

def test_rho_for_is_the_largest_rho_within_epsilon_and_composition_adds_rho():
    rho = rho_for(1.0, 1e-5)
    assert epsilon_of(rho, 1e-5) <= 1.0 < epsilon_of(rho * (1 + 1e-9), 1e-5)
    # The classic conversion ε = ρ + 2√(ρ log 1/δ) is looser than the one used: its ρ is smaller.
    classic = (math.sqrt(math.log(1e5) + 1.0) - math.sqrt(math.log(1e5))) ** 2
    assert rho > classic
    # Three jobs of ε = 1 cost far less than ε = 3 together (ρ adds up, not ε) ...
    assert epsilon_of(3 * rho, 1e-5) == pytest.approx(1.8245, abs=1e-3)
    # ... so a budget of 3 admits seven of them, and a budget of 1.6 exactly two.
    assert int(rho_for(3.0, 1e-5) // rho) == 7
    assert int(rho_for(1.6, 1e-5) // rho) == 2
    assert epsilon_of(0.0, 1e-5) == 0.0


@pytest.mark.parametrize("epsilon, delta", [(0.0, 1e-5), (-1.0, 1e-5), (math.inf, 1e-5), (1.0, 0.0), (1.0, 1.0)])
def test_rho_for_refuses_what_is_no_privacy_parameter(epsilon, delta):
    with pytest.raises(ValueError):
        rho_for(epsilon, delta)


# --- the exact blocks: clipping and sensitivity ---------------------------------------------

def test_rows_are_clipped_to_the_declared_bounds(small_key, shipped):
    features, labels = shipped
    narrow = {**BOUNDS, "age": [30.0, 60.0], DIABETES_LABEL: [50.0, 300.0]}
    spec = spec_for(small_key, bounds=narrow)
    age = DIABETES_FEATURES.index("age")
    assert features[:, age].min() < 30 and features[:, age].max() > 60 and labels.max() > 300
    clipped = features.copy()
    clipped[:, age] = np.clip(clipped[:, age], 30, 60)
    assert exact_blocks(spec, features, labels) == exact_blocks(spec, clipped, np.clip(labels, 50, 300))
    assert exact_blocks(spec, features, labels) != exact_blocks(spec_for(small_key), features, labels)


def frames() -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-width of each feature's shipped bounds."""
    low, high = np.array([BOUNDS[f] for f in DIABETES_FEATURES], dtype=float).T
    return (low + high) / 2, (high - low) / 2


def normalised_design(features: np.ndarray) -> np.ndarray:
    centres, radii = frames()
    return np.hstack([np.ones((len(features), 1)), (features - centres) / radii])


def test_the_exact_blocks_are_the_centred_normalised_statistics(small_key, shipped):
    features, labels = shipped
    spec = spec_for(small_key)
    blocks = exact_blocks(spec, features, labels)
    design = normalised_design(features)
    low, high = BOUNDS[DIABETES_LABEL]
    target = (labels - (low + high) / 2) / ((high - low) / 2)
    gram = np.array(blocks["gram"], dtype=float) / ONE
    upper = (design.T @ design)[np.triu_indices(spec.dimension)]
    np.testing.assert_allclose(gram, upper, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.array(blocks["moment"], dtype=float) / ONE, design.T @ target, rtol=1e-5, atol=1e-3)
    assert blocks["moments"][0] == len(labels) * ONE


def test_a_missing_bound_is_refused_naming_the_column_and_a_binary_label_needs_none(small_key, shipped):
    features, labels = shipped
    without = {k: v for k, v in BOUNDS.items() if k != "s3"}
    with pytest.raises(Refused) as refused:
        exact_blocks(spec_for(small_key, bounds=without), features, labels)
    assert (refused.value.code, refused.value.column) == ("policy:bounds", "s3")
    binary = (labels > np.median(labels)).astype(float)
    no_label = {k: v for k, v in BOUNDS.items() if k != DIABETES_LABEL}
    blocks = exact_blocks(spec_for(small_key, "logistic_regression", no_label), features, binary)
    assert len(blocks["moment"]) == len(DIABETES_FEATURES) + 1


def test_more_rows_than_a_release_holds_are_refused(small_key):
    features = np.zeros((MAX_ROWS + 1, 1))
    spec = spec_for(small_key, bounds={"x": [0.0, 1.0], "y": [0.0, 1.0]}, features=["x"], label="y")
    with pytest.raises(Refused) as refused:
        exact_blocks(spec, features, np.zeros(MAX_ROWS + 1))
    assert refused.value.code == "bound_exceeded"


row_values = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=3, max_size=3)


@SLOW
@given(rows=st.lists(row_values, min_size=1, max_size=30), extra=row_values)
def test_one_row_more_moves_no_entry_by_more_than_the_sensitivity(small_key, rows, extra):
    spec = spec_for(small_key, bounds={"x": [-3.0, 5.0], "z": [0.0, 100.0], "y": [-1e3, 1e3]},
                    features=["x", "z"], label="y")
    data = np.array(rows)
    grown = np.vstack([data, [extra]])
    before = exact_blocks(spec, data[:, :2], data[:, 2])
    after = exact_blocks(spec, grown[:, :2], grown[:, 2])
    for name in BLOCK_SHARES:
        assert max(abs(a - b) for a, b in zip(after[name], before[name], strict=True)) <= ONE


# --- the noise -------------------------------------------------------------------------------

def test_the_noise_over_many_draws_is_the_declared_centred_gaussian():
    """Kolmogorov–Smirnov against N(0, σ²) and a χ² test of the variance, each at FALSE_ALARM.

    The sampler draws from the operating system's cryptographic generator, which cannot be seeded:
    the tests are exact at their stated false-alarm rate instead. At these scales (σ ≫ 1) the
    discrete Gaussian and the continuous one differ by far less than the tests can resolve.
    """
    entries = 5_000
    exact = {"gram": [0] * entries, "moment": [7] * 40, "moments": [0] * 40}
    rho = rho_for(1.0, 1e-5)
    release = NoisyRelease.draw(exact, rho, 1.0, 1e-5)
    sigma = release.declaration.noise_std["gram"] * ONE
    expected = math.sqrt(entries) * ONE / math.sqrt(2 * rho * BLOCK_SHARES["gram"]) / ONE * ONE
    assert sigma == pytest.approx(expected, rel=1e-6)
    noise = np.array(release.blocks["gram"], dtype=float)
    assert stats.kstest(noise / sigma, "norm").pvalue > FALSE_ALARM
    statistic = float(np.sum((noise / sigma) ** 2))
    assert stats.chi2.sf(statistic, entries) > FALSE_ALARM / 2 and stats.chi2.cdf(statistic, entries) > FALSE_ALARM / 2
    # The release's ρ is the job's, within the sampler's rounding.
    assert release.declaration.rho == pytest.approx(rho, rel=1e-9)
    assert release.declaration.epsilon_at_delta == pytest.approx(1.0, rel=1e-6)
    # The noise is added to the values, not drawn in their place.
    assert np.mean(release.blocks["moment"]) != 0


def test_two_draws_differ_and_a_stored_release_reads_back_identical():
    exact = {"gram": [5, 6, 7], "moment": [1, 2], "moments": [3, 4, 5]}
    first, second = (NoisyRelease.draw(exact, 0.5, 5.0, 1e-6) for _ in range(2))
    assert first.blocks != second.blocks
    assert NoisyRelease.from_json(json.loads(json.dumps(first.to_json()))) == first


def within_noise(released, exact, std, scale) -> float:
    """The largest deviation of a released block from the exact one, in declared noise deviations."""
    return float(np.max(np.abs(np.asarray(released, dtype=float) - exact) / (std * scale)))


# Six standard deviations: a false alarm once in 10**8 entries per test.
DEVIATIONS = 6.0


@pytest.mark.parametrize("model", ["linear_regression", "logistic_regression"])
def test_the_encoded_release_is_the_jobs_statistics_within_the_declared_noise(small_key, shipped, model):
    """Mapped back to the normalised frame, every released entry is within six declared deviations."""
    features, labels = shipped
    kind = MODELS[model]
    if kind.binary_labels:
        labels = (labels > np.median(labels)).astype(float)
    spec = spec_for(small_key, model)
    release = NoisyRelease.draw(exact_blocks(spec, features, labels), rho_for(10.0, 1e-5), 10.0, 1e-5)
    std = release.declaration.noise_std
    encoded = release.encoded(spec)
    a_factor = 0.25 if kind.binary_labels else 1.0
    centres, radii = frames()
    lift = np.eye(spec.dimension)
    lift[1:, 0], lift[np.arange(1, spec.dimension), np.arange(1, spec.dimension)] = centres, radii
    inverse = np.linalg.inv(lift)
    matrix = np.array(encoded.matrix, dtype=float) / 2**32
    assert (matrix == matrix.T).all()
    design = normalised_design(features)
    released_gram = inverse @ (matrix / a_factor) @ inverse.T
    assert within_noise(released_gram, design.T @ design, std["gram"], 1.0) < DEVIATIONS
    assert within_noise(released_gram, design.T @ design, std["gram"], 1.0) > 0.01  # the noise is there
    offset = inverse @ (np.array(encoded.offset, dtype=float) / 2**64)
    if kind.binary_labels:
        released_moment, target = 2 * offset, 2 * labels - 1
    else:
        low, high = BOUNDS[DIABETES_LABEL]
        centre, radius = (low + high) / 2, (high - low) / 2
        released_moment, target = (offset - centre * released_gram[:, 0]) / radius, (labels - centre) / radius
    assert within_noise(released_moment, design.T @ target, std["moment"], 1.0) < DEVIATIONS
    assert abs(encoded.row_count - len(labels)) < DEVIATIONS * std["moments"] + 1
    count = len(DIABETES_FEATURES)
    sums = np.array(encoded.feature_sums[1: 1 + count], dtype=float) / 2**32
    squares = np.array(encoded.feature_sums[1 + count:], dtype=float) / 2**32
    assert within_noise(sums, features.sum(axis=0), std["moments"], np.hypot(centres, radii)) < DEVIATIONS
    spread = np.sqrt(centres**4 + 4 * centres**2 * radii**2 + radii**4)
    assert within_noise(squares, (features**2).sum(axis=0), std["moments"], spread) < DEVIATIONS
