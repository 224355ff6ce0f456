"""Secure feature statistics (common/statistics.py).

Per-owner sums, encrypted, aggregated by the coordinator's code, decrypted and unpacked, give the
pooled mean and population variance.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto.encoding import decode
from common.protocol.errors import EncodingOverflow, ProtocolViolation, TrainingError
from common.crypto.packing import unpack_sum
from common.protocol.spec import STATISTICS, JobSpec
from common.crypto.randomness import ObfuscatorPool
from common.protocol.statistics import FeatureStatistics, encrypt_statistics, feature_sums
from coordinator.policy import aggregate
from model_creator.config import ModelCreatorSettings

# Synthetic raw-scale columns (not the shipped data set), and three owners' rows of them.
SYNTHETIC_FEATURES = ("sqft", "year_built", "has_pool", "distance_km")
DEFAULTS = ModelCreatorSettings(default_features=list(SYNTHETIC_FEATURES), default_label="sold", test_data=None)


def make_spec(key, features=SYNTHETIC_FEATURES, weight_bits: int = 32) -> JobSpec:
    """The spec the model creator would build with its default encoding parameters."""
    return JobSpec.for_bounds("stats-job", "logistic_regression", features, "sold", key.public_key,
                              data_bits=DEFAULTS.data_bits, data_frac_bits=DEFAULTS.data_frac_bits,
                              weight_bits=weight_bits, weight_frac_bits=DEFAULTS.weight_frac_bits,
                              max_contributors=DEFAULTS.max_data_owners)


def owner_rows(seed: int, count: int, shift: float = 0.0) -> np.ndarray:
    """Raw-scale features: square feet, a year, a 0/1 flag and a distance."""
    rng = np.random.default_rng(seed)
    return np.column_stack([
        rng.uniform(600, 4500, count).round(1) + 200 * shift,
        rng.integers(1950, 2021, count).astype(float),
        (rng.random(count) < 0.2 + 0.2 * shift).astype(float),
        rng.uniform(0.5, 40, count).round(3),
    ])


SYNTHETIC_OWNERS = [owner_rows(1, 23), owner_rows(2, 410, shift=1.0), owner_rows(3, 97, shift=2.0)]


def secure_round(key, spec, owners):
    """Every owner encrypts its sums; the coordinator multiplies; the model creator decrypts and unpacks."""
    public_key = key.public_key
    replies = [encrypt_statistics(public_key, feature_sums(rows, spec, f"owner{i}.csv"), spec)
               for i, rows in enumerate(owners)]
    assert all(len(reply) == spec.reply_ciphertexts(STATISTICS) for reply in replies)
    summed = aggregate(public_key.nsquare, replies)
    plaintexts = [key.raw_decrypt(c) for c in summed]
    return unpack_sum(plaintexts, spec.layout, spec.reply_values(STATISTICS), "job stats-job round 0")


def test_feature_sums_layout_is_count_sums_then_squares(small_key):
    spec = make_spec(small_key)
    rows = SYNTHETIC_OWNERS[0]
    values = feature_sums(rows, spec, "owner.csv")
    width = len(SYNTHETIC_FEATURES)
    assert len(values) == spec.reply_values(STATISTICS) == 1 + 2 * width
    assert values[0] == len(rows)
    scale = 2**DEFAULTS.data_frac_bits
    np.testing.assert_allclose([v / scale for v in values[1 : 1 + width]], rows.sum(axis=0), rtol=1e-15, atol=2.0**-32)
    np.testing.assert_allclose([v / scale for v in values[1 + width :]], (rows**2).sum(axis=0), rtol=1e-15,
                               atol=2.0**-32)
    assert all(isinstance(v, int) for v in values)


def test_three_owners_give_the_pooled_mean_and_population_std(small_key):
    spec = make_spec(small_key)
    contributors, values = secure_round(small_key, spec, SYNTHETIC_OWNERS)
    assert contributors == 3
    # The aggregate is exactly the sum of what each owner would have sent.
    per_owner = [feature_sums(rows, spec, "owner.csv") for rows in SYNTHETIC_OWNERS]
    assert values == [sum(column) for column in zip(*per_owner, strict=True)]

    statistics = FeatureStatistics.from_sums(values, spec, "job stats-job round 0")
    pooled = np.vstack(SYNTHETIC_OWNERS)
    assert statistics.row_count == len(pooled) == 23 + 410 + 97
    np.testing.assert_allclose([float(m) for m in statistics.means], pooled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose([float(v) for v in statistics.variances], pooled.var(axis=0), rtol=1e-9)
    np.testing.assert_allclose(statistics.stds, pooled.std(axis=0), rtol=1e-9)

    as_json = statistics.to_json(SYNTHETIC_FEATURES)
    assert list(as_json) == ["means", "stds"]
    assert list(as_json["means"]) == list(SYNTHETIC_FEATURES) == list(as_json["stds"])
    for index, name in enumerate(SYNTHETIC_FEATURES):
        assert as_json["means"][name] == pytest.approx(pooled[:, index].mean(), rel=1e-12)
        assert as_json["stds"][name] == pytest.approx(pooled[:, index].std(), rel=1e-9)


def test_statistics_are_exact_rationals_of_the_encoded_sums(small_key):
    spec = make_spec(small_key)
    _, values = secure_round(small_key, spec, SYNTHETIC_OWNERS)
    statistics = FeatureStatistics.from_sums(values, spec, "here")
    count, width = values[0], len(SYNTHETIC_FEATURES)
    for k in range(width):
        mean = Fraction(values[1 + k], 2**spec.data_frac_bits) / count
        assert statistics.means[k] == mean
        assert statistics.variances[k] == Fraction(values[1 + width + k], 2**spec.data_frac_bits) / count - mean * mean


def test_an_owner_constant_in_one_column_is_fine_when_the_pool_is_not(small_key):
    """Each owner alone may have a constant flag; only a globally constant feature is refused."""
    spec = make_spec(small_key)
    owners = [rows.copy() for rows in SYNTHETIC_OWNERS]
    owners[0][:, 2] = 0.0
    owners[1][:, 2] = 1.0
    owners[2][:, 2] = 1.0
    _, values = secure_round(small_key, spec, owners)
    statistics = FeatureStatistics.from_sums(values, spec, "here")
    pooled = np.vstack(owners)
    assert statistics.stds[2] == pytest.approx(pooled[:, 2].std(), rel=1e-12)


@pytest.mark.parametrize("value", [1999.0, 7.0, 0.5, 2549.7, 0.1, 1 / 3, 0.7])
def test_a_feature_constant_over_all_owners_is_a_training_error(small_key, value):
    """Whatever the constant: values that are not dyadic fractions must not slip through on rounding."""
    spec = make_spec(small_key)
    owners = [rows.copy() for rows in SYNTHETIC_OWNERS]
    for rows in owners:
        rows[:, 1] = value
    _, values = secure_round(small_key, spec, owners)
    with pytest.raises(TrainingError) as caught:
        FeatureStatistics.from_sums(values, spec, "job stats-job round 0")
    message = caught.value.message
    assert "job stats-job round 0" in message
    assert "year_built" in message and "constant" in message
    assert "sqft" not in message


def test_several_constant_features_are_all_named(small_key):
    spec = make_spec(small_key)
    owners = [rows.copy() for rows in SYNTHETIC_OWNERS]
    for rows in owners:
        rows[:, 0] = 0.0
        rows[:, 3] = 7.25
    _, values = secure_round(small_key, spec, owners)
    with pytest.raises(TrainingError, match="sqft, distance_km"):
        FeatureStatistics.from_sums(values, spec, "here")


def test_a_zero_row_count_is_a_protocol_violation(small_key):
    spec = make_spec(small_key)
    values = [0] + [0] * (2 * len(SYNTHETIC_FEATURES))
    with pytest.raises(ProtocolViolation, match="row count is 0"):
        FeatureStatistics.from_sums(values, spec, "job x round 0")


def test_a_value_beyond_the_data_bound_is_refused_by_the_owner(small_key):
    spec = make_spec(small_key)
    rows = SYNTHETIC_OWNERS[0].copy()
    rows[3, 0] = 2.0**70  # its square at 2**32 needs 172 bits; the slots hold 160
    with pytest.raises(EncodingOverflow, match="owner.csv: feature sums of squares"):
        feature_sums(rows, spec, "owner.csv")


def test_encryption_uses_fresh_randomness_and_the_pool(small_key):
    spec = make_spec(small_key)
    public_key = small_key.public_key
    values = feature_sums(SYNTHETIC_OWNERS[1], spec, "owner.csv")
    first = encrypt_statistics(public_key, values, spec)
    second = encrypt_statistics(public_key, values, spec)
    assert all(a != b for a, b in zip(first, second, strict=True))
    assert [small_key.raw_decrypt(c) for c in first] == [small_key.raw_decrypt(c) for c in second]

    pool = ObfuscatorPool(public_key, len(first))
    pool.fill()
    try:
        pooled = encrypt_statistics(public_key, values, spec, pool)
    finally:
        pool.stop()
    assert pool.taken == len(first)
    assert [small_key.raw_decrypt(c) for c in pooled] == [small_key.raw_decrypt(c) for c in first]
    contributors, unpacked = unpack_sum([small_key.raw_decrypt(c) for c in pooled], spec.layout,
                                        spec.reply_values(STATISTICS), "here")
    assert (contributors, unpacked) == (1, values)


@settings(max_examples=40, deadline=None)
@given(st.lists(
    st.lists(st.lists(st.integers(-4000, 4000), min_size=2, max_size=2), min_size=1, max_size=12),
    min_size=1, max_size=4,
))
def test_property_from_sums_is_exact_for_values_on_the_grid(owners):
    """Values that are multiples of 1/8 encode exactly, so mean and variance are exact rationals."""
    spec = make_spec(_KEY_FOR_LAYOUT, features=("a", "b"))
    tables = [np.array(rows, dtype=float) / 8 for rows in owners]
    pooled = np.vstack(tables)
    per_owner = [feature_sums(rows, spec, "owner.csv") for rows in tables]
    summed = [sum(column) for column in zip(*per_owner, strict=True)]
    all_rows = [row for rows in owners for row in rows]
    exact = [[Fraction(row[k], 8) for row in all_rows] for k in range(2)]
    variances = [sum(x * x for x in column) / len(column) - (sum(column) / len(column)) ** 2 for column in exact]
    if any(v == 0 for v in variances):
        with pytest.raises(TrainingError):
            FeatureStatistics.from_sums(summed, spec, "here")
        return
    statistics = FeatureStatistics.from_sums(summed, spec, "here")
    assert statistics.row_count == len(pooled)
    assert list(statistics.means) == [sum(column) / len(column) for column in exact]
    assert list(statistics.variances) == variances
    assert decode(summed[1], DEFAULTS.data_frac_bits) == sum(exact[0])


class _LayoutKey:
    """Stands in for a 1024-bit key where only the layout and the fingerprint are needed."""

    class public_key:  # noqa: N801 - mimics the attribute of a PrivateKey
        bits = 1024
        fingerprint = "0" * 64


_KEY_FOR_LAYOUT = _LayoutKey()


@pytest.mark.parametrize("optimizer", ["gd", "exact"])
def test_model_creator_starts_standardised_jobs_with_a_statistics_round(small_key, optimizer):
    """The first round of a standardised job asks only for sums; the model creator keeps the scaling."""
    from common.protocol.messages import TrainingOptions
    from model_creator.training import TrainingRequest, TrainingRun

    request = TrainingRequest.of(TrainingOptions(model="logistic_regression", optimizer=optimizer), DEFAULTS)
    assert request.standardize is True
    run = TrainingRun("stats-job", request, small_key, DEFAULTS, None)
    try:
        assert run.next_kind == STATISTICS
        order = run.round_order()
        assert order.kind == STATISTICS and order.encrypted_weights is None
        replies = [encrypt_statistics(small_key.public_key, feature_sums(rows, run.spec, "o.csv"), run.spec)
                   for rows in SYNTHETIC_OWNERS]
        record = run.absorb(aggregate(small_key.public_key.nsquare, replies), ["a", "b", "c"], {})
        assert record.kind == STATISTICS and record.round == 0 and record.contributors == 3
        assert record.gradient_norm is None
        assert run.next_kind == "gradient"
        assert run.round_order().encrypted_weights is not None
        pooled = np.vstack(SYNTHETIC_OWNERS)
        result = run.result()
        np.testing.assert_allclose(list(result["scaling"]["means"].values()), pooled.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(list(result["scaling"]["stds"].values()), pooled.std(axis=0), rtol=1e-9)
        assert run.penalty_weights[0] == 0
        np.testing.assert_allclose([float(w) for w in run.penalty_weights[1:]], pooled.var(axis=0), rtol=1e-9)
        if optimizer == "gd":
            np.testing.assert_allclose(run.optimizer.scaling.means, pooled.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(run.optimizer.scaling.stds, pooled.std(axis=0), rtol=1e-9)
    finally:
        run.close()
