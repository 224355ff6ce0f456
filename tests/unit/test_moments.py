"""One-shot statistics (common/protocol/moments.py): what owners send once, and what its sum gives."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from pydantic import ValidationError
from hypothesis import strategies as st

from common.crypto.encoding import encode_array
from common.crypto.packing import unpack_sum
from common.protocol.errors import ProtocolViolation
from common.protocol.moments import Moments, moment_values
from common.protocol.spec import JobSpec
from common.protocol.statistics import encrypt_statistics
from coordinator.policy import aggregate
from data_owner.affine import EncryptedAffineMap


def make_spec(key, protocol="one_shot", features=("f1", "f2", "f3")) -> JobSpec:
    return JobSpec.for_bounds("job-1", "linear_regression", features, "y", key.public_key, data_bits=30,
                              data_frac_bits=20, weight_bits=8, weight_frac_bits=20, max_contributors=7,
                              protocol=protocol)


def owner_data(seed: int, rows: int):
    rng = np.random.default_rng(seed)
    features = rng.normal(0, 10, (rows, 3))
    return features, features @ rng.normal(0, 2, 3) + rng.normal(0, 1, rows) + 4.0


def test_the_values_are_the_row_count_the_upper_triangle_and_b():
    assert moment_values([[1, 2], [2, 5]], [7, -8], 3) == [3, 1, 2, 5, 7, -8]


@pytest.mark.parametrize(("matrix", "offset", "message"), [
    ([[1, 2], [3, 5]], [7, 8], "not symmetric"),
    ([[1, 2], [2, 5]], [7, 8, 9], "not 3 × 3"),
    ([[1, 2, 0], [2, 5]], [7, 8], "not 2 × 2"),
])
def test_a_matrix_that_the_triangle_would_misstate_is_refused(matrix, offset, message):
    with pytest.raises(ProtocolViolation, match=message):
        moment_values(matrix, offset, 3)


def test_sums_of_the_wrong_length_or_without_rows_are_refused(small_key):
    spec = make_spec(small_key)
    assert spec.reply_values("moments") == 1 + 10 + 4
    with pytest.raises(ProtocolViolation, match="expected 15 values, got 14"):
        Moments.from_sums([1] * 14, spec, "job-1 round 0")
    with pytest.raises(ProtocolViolation, match="row count is 0"):
        Moments.from_sums([0] * 15, spec, "job-1 round 0")


def test_the_kind_of_a_round_must_be_the_jobs(small_key):
    one_shot, gradients = make_spec(small_key), make_spec(small_key, "gradients")
    assert (one_shot.main_kind, gradients.main_kind) == ("moments", "gradient")
    for spec, kind in ((one_shot, "statistics"), (one_shot, "moments"), (gradients, "statistics"),
                       (gradients, "gradient")):
        spec.check_round_kind(kind, "body.kind")
    with pytest.raises(ProtocolViolation, match="body.kind: a gradient round has no place in a job of protocol 'one_shot'"):
        one_shot.check_round_kind("gradient", "body.kind")
    with pytest.raises(ProtocolViolation, match="a moments round has no place in a job of protocol 'gradients'"):
        gradients.check_round_kind("moments", "body.kind")


@settings(max_examples=10, deadline=None)
@given(rows=st.lists(st.integers(1, 40), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1),
       weights=st.lists(st.floats(-100, 100), min_size=4, max_size=4))
def test_the_masked_encrypted_sum_gives_every_gradient_a_gradient_round_decrypts(small_key, rows, seed, weights):
    """decrypt(aggregate(one-shot replies)) at any w is exactly Σ_i (A_i w − b_i), as a gradient round's sum."""
    spec = make_spec(small_key)
    public_key = small_key.public_key
    owners = [EncryptedAffineMap.prepare(spec, *owner_data(seed + i, count), "owner") for i, count in enumerate(rows)]
    count = spec.reply_ciphertexts("moments")
    # Pairwise masks mod n that cancel over the member set, as member_masks makes them.
    rng = np.random.default_rng(seed)
    pair = {(i, j): [int(rng.integers(0, 2**62)) * 2**900 % int(public_key.n) for _ in range(count)]
            for i in range(len(owners)) for j in range(i + 1, len(owners))}
    replies = []
    for i, owner in enumerate(owners):
        masks = [(sum(pair[(i, j)][k] for j in range(i + 1, len(owners)))
                  - sum(pair[(j, i)][k] for j in range(i))) % int(public_key.n) for k in range(count)]
        values = moment_values(owner.matrix, owner.offset, owner.row_count)
        replies.append(encrypt_statistics(public_key, values, spec, None, masks))
    total = aggregate(public_key.nsquare, replies)
    contributors, values = unpack_sum([small_key.raw_decrypt(c) for c in total], spec.layout,
                                      spec.reply_values("moments"), "sum")
    assert contributors == len(owners)
    moments = Moments.from_sums(values, spec, "sum")
    assert moments.row_count == sum(rows)
    query = encode_array(np.asarray(weights), spec.weight_frac_bits, spec.weight_bits + spec.weight_frac_bits, "w")
    expected = [sum(sum(a * q for a, q in zip(owner.matrix[j], query)) - owner.offset[j] for owner in owners)
                for j in range(spec.dimension)]
    matrix, vector = moments.quadratic([Fraction(0)] * spec.dimension)
    point = [Fraction(q, 2**spec.weight_frac_bits) for q in query]
    gradient = [sum(m * w for m, w in zip(row, point)) - r for row, r in zip(matrix, vector)]
    assert [g * 2**spec.gradient_frac_bits for g in gradient] == expected


def test_the_penalty_is_added_to_the_diagonal_only(small_key):
    spec = make_spec(small_key)
    values = [5, *range(1, 11), 7, 8, 9, 10]
    moments = Moments.from_sums(values, spec, "sum")
    plain, _ = moments.quadratic([Fraction(0)] * 4)
    penalised, vector = moments.quadratic([Fraction(0), Fraction(1, 3), Fraction(2), Fraction(5, 7)])
    assert plain[0] == [Fraction(v, 2**20) for v in (1, 2, 3, 4)] and plain[1][0] == plain[0][1]
    assert [penalised[i][i] - plain[i][i] for i in range(4)] == [0, Fraction(1, 3), 2, Fraction(5, 7)]
    assert all(penalised[i][j] == plain[i][j] for i in range(4) for j in range(4) if i != j)
    assert vector == [Fraction(v, 2**40) for v in (7, 8, 9, 10)]


def test_a_one_shot_job_too_large_for_one_message_is_refused_naming_the_option(small_key):
    features = tuple(f"f{i}" for i in range(400))
    assert make_spec(small_key, "gradients", features).reply_ciphertexts() == 34
    with pytest.raises(ValidationError, match="protocol: a one-shot reply of 400 features needs 6751 ciphertexts,"
                                              " more than the 4096 a message carries; use 'gradients'"):
        make_spec(small_key, "one_shot", features)
