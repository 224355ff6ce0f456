"""A data owner's encrypted affine gradient map (common/affine.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import DIABETES_FEATURES, DIABETES_LABEL, SHIPPED

from data_owner.affine import EncryptedAffineMap
from common.dataset import load_columns
from common.crypto.encoding import encode_array
from common.protocol.errors import EncodingOverflow, ProtocolViolation
from common.crypto.packing import SlotLayout, unpack_sum
from common.protocol.spec import JobSpec
from coordinator.policy import aggregate



def make_spec(key, features=("f1", "f2", "f3"), data_bits=30, data_frac_bits=20, weight_frac_bits=20,
              weight_bits=8, max_contributors=7) -> JobSpec:
    return JobSpec.for_bounds("job-1", "linear_regression", features, "y", key.public_key, data_bits=data_bits,
                              data_frac_bits=data_frac_bits, weight_bits=weight_bits,
                              weight_frac_bits=weight_frac_bits, max_contributors=max_contributors)


def small_data(seed: int, rows: int = 25, columns: int = 3):
    rng = np.random.default_rng(seed)
    features = rng.normal(0, 10, (rows, columns))
    labels = features @ rng.normal(0, 2, columns) + rng.normal(0, 1, rows) + 4.0
    return features, labels


def encrypt_weights(key, weights, spec):
    bound_bits = spec.weight_bits + spec.weight_frac_bits
    weight_ints = encode_array(np.asarray(weights), spec.weight_frac_bits, bound_bits, "w")
    return weight_ints, [key.public_key.raw_encrypt(v) for v in weight_ints]


def decrypt_reply(key, ciphertexts, spec):
    plaintexts = [key.raw_decrypt(c) for c in ciphertexts]
    return unpack_sum(plaintexts, spec.layout, 1 + spec.dimension, "reply")


def exact_gradient(affine_map, weight_ints):
    return [sum(a * w for a, w in zip(row, weight_ints)) - b for row, b in zip(affine_map.matrix, affine_map.offset)]


def test_prepare_encodes_gram_and_moment(small_key):
    spec = make_spec(small_key)
    features, labels = small_data(1)
    affine_map = EncryptedAffineMap.prepare(spec, features, labels, "owner.csv")
    design = np.hstack([np.ones((25, 1)), features])
    assert affine_map.row_count == 25
    assert len(affine_map.matrix) == len(affine_map.offset) == spec.dimension == 4
    assert all(len(row) == 4 for row in affine_map.matrix)
    assert [list(r) for r in affine_map.matrix] == [list(r) for r in zip(*affine_map.matrix)]  # symmetric
    np.testing.assert_allclose(np.array(affine_map.matrix, dtype=float) / 2**20, design.T @ design, atol=2**-20)
    np.testing.assert_allclose(np.array(affine_map.offset, dtype=float) / 2**40, design.T @ labels,
                               rtol=1e-12, atol=2**-40)
    assert affine_map.matrix[0][0] == 25 * 2**20


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_evaluate_is_exact(small_key, seed):
    spec = make_spec(small_key)
    features, labels = small_data(seed)
    affine_map = EncryptedAffineMap.prepare(spec, features, labels, "owner.csv")
    weights = np.random.default_rng(seed + 100).uniform(-3, 3, spec.dimension)
    weight_ints, encrypted = encrypt_weights(small_key, weights, spec)
    reply = affine_map.evaluate(small_key.public_key, encrypted, spec)
    assert len(reply) == spec.layout.ciphertext_count(1 + spec.dimension)
    contributors, values = decrypt_reply(small_key, reply, spec)
    assert contributors == 1
    assert values == [25, *exact_gradient(affine_map, weight_ints)]

    # The same, up to the fixed-point quantisation, as numpy's XᵀX w − Xᵀy at the encoded weights.
    design = np.hstack([np.ones((25, 1)), features])
    weights_q = np.array(weight_ints, dtype=float) / 2**spec.weight_frac_bits
    expected = design.T @ design @ weights_q - design.T @ labels
    tolerance = spec.dimension * 3 * 2.0**-spec.data_frac_bits + 1e-9 * np.abs(design.T @ labels).max()
    np.testing.assert_allclose(np.array(values[1:], dtype=float) / 2**spec.gradient_frac_bits, expected,
                               rtol=0, atol=tolerance)


def test_evaluate_spans_several_ciphertexts(small_key):
    """Wide slots and many features: the reply takes more than one ciphertext and stays exact."""
    spec = make_spec(small_key, features=[f"f{i}" for i in range(9)], data_bits=100, data_frac_bits=40,
                     weight_frac_bits=40, weight_bits=16)
    assert spec.layout.ciphertext_count(1 + spec.dimension) >= 3
    features, labels = small_data(7, rows=40, columns=9)
    affine_map = EncryptedAffineMap.prepare(spec, features, labels, "o")
    weights = np.random.default_rng(8).uniform(-2000, 2000, spec.dimension)
    weight_ints, encrypted = encrypt_weights(small_key, weights, spec)
    contributors, values = decrypt_reply(small_key, affine_map.evaluate(small_key.public_key, encrypted, spec), spec)
    assert (contributors, values) == (1, [40, *exact_gradient(affine_map, weight_ints)])


def test_extreme_weights_never_give_a_wrong_number(small_key):
    """Data that passed prepare and weights at ±(2**(weight_bits+weight_frac_bits) − 1) still decode exactly."""
    spec = make_spec(small_key, data_bits=12)
    features, labels = small_data(4, rows=6)
    affine_map = EncryptedAffineMap.prepare(spec, features, labels, "o")
    limit = 2 ** (spec.weight_bits + spec.weight_frac_bits) - 1
    for signs in ([1, 1, 1, 1], [-1, -1, -1, -1], [1, -1, 1, -1]):
        weight_ints = [s * limit for s in signs]
        encrypted = [small_key.public_key.raw_encrypt(w) for w in weight_ints]
        reply = affine_map.evaluate(small_key.public_key, encrypted, spec)
        assert decrypt_reply(small_key, reply, spec) == (1, [6, *exact_gradient(affine_map, weight_ints)])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 30), scale=st.sampled_from([1e-3, 1.0, 50.0]),
       weight_scale=st.sampled_from([0.0, 1e-4, 1.0, 200.0]))
def test_evaluate_exact_property(small_key, seed, rows, scale, weight_scale):
    spec = make_spec(small_key, features=("a", "b"))
    rng = np.random.default_rng(seed)
    features = rng.normal(0, scale, (rows, 2))
    labels = rng.normal(0, scale, rows)
    affine_map = EncryptedAffineMap.prepare(spec, features, labels, "o")
    weight_ints, encrypted = encrypt_weights(small_key, rng.uniform(-weight_scale, weight_scale, 3), spec)
    reply = affine_map.evaluate(small_key.public_key, encrypted, spec)
    assert decrypt_reply(small_key, reply, spec) == (1, [rows, *exact_gradient(affine_map, weight_ints)])


def test_two_owners_aggregate_to_pooled_gradient(small_key):
    spec = make_spec(small_key)
    first = EncryptedAffineMap.prepare(spec, *small_data(11, rows=20), "a")
    second = EncryptedAffineMap.prepare(spec, *small_data(12, rows=13), "b")
    weight_ints, encrypted = encrypt_weights(small_key, [0.5, -1.25, 2.0, 0.0], spec)
    replies = [m.evaluate(small_key.public_key, encrypted, spec) for m in (first, second)]
    contributors, values = decrypt_reply(small_key, aggregate(small_key.public_key.nsquare, replies), spec)
    expected = [a + b for a, b in zip(exact_gradient(first, weight_ints), exact_gradient(second, weight_ints))]
    assert (contributors, values) == (2, [33, *expected])


def test_evaluations_are_rerandomised(small_key):
    spec = make_spec(small_key)
    affine_map = EncryptedAffineMap.prepare(spec, *small_data(5), "o")
    _, encrypted = encrypt_weights(small_key, [1.0, 0.0, -1.0, 0.5], spec)
    first = affine_map.evaluate(small_key.public_key, encrypted, spec)
    second = affine_map.evaluate(small_key.public_key, encrypted, spec)
    assert all(a != b for a, b in zip(first, second))
    assert [small_key.raw_decrypt(c) for c in first] == [small_key.raw_decrypt(c) for c in second]


def test_zero_weights_reply_is_still_randomised(small_key):
    """Even E(0) weights built without randomness give an unlinkable reply (−b alone would be a constant)."""
    spec = make_spec(small_key)
    affine_map = EncryptedAffineMap.prepare(spec, *small_data(5), "o")
    constants = [small_key.public_key.raw_constant(0)] * spec.dimension
    reply = affine_map.evaluate(small_key.public_key, constants, spec)
    assert decrypt_reply(small_key, reply, spec) == (1, [25, *[-b for b in affine_map.offset]])
    plaintexts = [small_key.raw_decrypt(c) for c in reply]
    assert all(c != small_key.public_key.raw_constant(p) for c, p in zip(reply, plaintexts))


@pytest.mark.parametrize("count", [0, 3, 5])
def test_wrong_number_of_weights(small_key, count):
    spec = make_spec(small_key)
    affine_map = EncryptedAffineMap.prepare(spec, *small_data(5), "o")
    encrypted = [small_key.public_key.raw_encrypt(1) for _ in range(count)]
    with pytest.raises(ProtocolViolation, match=f"expected 4 encrypted weights, got {count}"):
        affine_map.evaluate(small_key.public_key, encrypted, spec)


def test_gram_too_large_for_layout(small_key):
    spec = make_spec(small_key, data_bits=12)
    features, labels = small_data(1)
    features[3, 1] = 1e4  # XᵀX entry 1e8 ≫ 2**12
    with pytest.raises(EncodingOverflow, match="owner.csv: XᵀX"):
        EncryptedAffineMap.prepare(spec, features, labels, "owner.csv")


def test_moment_too_large_for_layout(small_key):
    spec = make_spec(small_key, data_bits=12)
    features, _ = small_data(1, rows=4)
    features = features / 100
    labels = np.array([2.0**60, 0.0, 0.0, 0.0])
    with pytest.raises(EncodingOverflow, match="owner.csv: Xᵀy"):
        EncryptedAffineMap.prepare(spec, features, labels, "owner.csv")


def test_worst_case_row_sum_too_large_for_layout(small_key):
    """Each XᵀX entry fits on its own but a row times the largest weight would overflow a slot."""
    spec = make_spec(small_key, data_bits=12)
    matrix_bound = 2.0 ** (spec.layout.value_bits - spec.weight_bits - spec.weight_frac_bits - spec.data_frac_bits)
    rows = int(matrix_bound * 0.6)  # XᵀX[0][0] = rows < bound, but the intercept row sums to ~4 × 0.6 × bound
    features = np.ones((rows, 3))
    labels = np.zeros(rows)
    with pytest.raises(EncodingOverflow, match="owner.csv: gradient bound.*too large for the job's slot layout"):
        EncryptedAffineMap.prepare(spec, features, labels, "owner.csv")


def test_non_finite_data_is_refused(small_key):
    spec = make_spec(small_key)
    features, labels = small_data(1)
    labels[0] = np.inf
    with pytest.raises(EncodingOverflow, match="not a finite number"):
        EncryptedAffineMap.prepare(spec, features, labels, "o")


def test_real_size_shipped_data(real_key):
    """The model creator's default encoding on a 2048-bit key and raw-scale shipped data."""
    spec = JobSpec(
        job_id="job", model="linear_regression", features=tuple(DIABETES_FEATURES), label=DIABETES_LABEL,
        data_frac_bits=32, weight_frac_bits=32, weight_bits=32,
        layout=SlotLayout.for_key(2048, 64 + 32 + 32 + 32, 1000), min_data_owners=1,
        key_fingerprint=real_key.public_key.fingerprint,
    )
    features, labels = load_columns(SHIPPED / "owner_a.csv", DIABETES_FEATURES, DIABETES_LABEL)
    affine_map = EncryptedAffineMap.prepare(spec, features, labels, "owner_a.csv")
    design = np.hstack([np.ones((len(labels), 1)), features])
    weights = np.linalg.lstsq(design, labels, rcond=None)[0]
    weight_ints, encrypted = encrypt_weights(real_key, weights, spec)
    contributors, values = decrypt_reply(real_key, affine_map.evaluate(real_key.public_key, encrypted, spec), spec)
    assert (contributors, values) == (1, [200, *exact_gradient(affine_map, weight_ints)])
    # At the least-squares solution the gradient nearly vanishes relative to Xᵀy.
    gradient = np.array(values[1:], dtype=float) / 2**spec.gradient_frac_bits
    assert np.abs(gradient).max() < 1e-3 * np.abs(design.T @ labels).max()
