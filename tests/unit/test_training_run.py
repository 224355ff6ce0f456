"""The model creator's checks on an aggregate: it counts contributors inside the ciphertexts."""

from __future__ import annotations

import numpy as np
import pytest

from common.protocol.errors import ProtocolViolation
from common.protocol.messages import TrainingOptions, ciphertexts_under
from coordinator.policy import aggregate
from data_owner.affine import EncryptedAffineMap
from model_creator.config import ModelCreatorSettings
from model_creator.training import TrainingRequest, TrainingRun

SETTINGS = ModelCreatorSettings(default_features=["x1", "x2"], default_label="y", test_data=None)


def _owner_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(25, 2))
    return features, features @ [1.5, -2.0] + 0.5 + rng.normal(scale=0.1, size=25)


def _run(small_key, min_data_owners: int) -> TrainingRun:
    request = TrainingRequest.of(TrainingOptions(min_data_owners=min_data_owners), SETTINGS)
    return TrainingRun("job-under-test", request, small_key, SETTINGS, None)


def _replies(run: TrainingRun, owners: int) -> list:
    """Each owner's packed encrypted gradient at the run's first query, as a data owner makes it."""
    order = run.round_order()
    assert order.encrypted_weights is not None
    public_key = run.private_key.public_key
    weights = ciphertexts_under(order.encrypted_weights, public_key, "encrypted_weights", run.spec.dimension)
    replies = []
    for seed in range(owners):
        statistics = EncryptedAffineMap.prepare(run.spec, *_owner_data(seed), f"owner{seed}.csv")
        replies.append(statistics.evaluate(public_key, weights, run.spec))
    return replies


def test_an_aggregate_of_one_owner_is_refused_when_the_job_needs_two(small_key):
    run = _run(small_key, 2)
    single = _replies(run, 1)[0]
    # The coordinator claims two contributors; the count inside the ciphertexts says one.
    with pytest.raises(ProtocolViolation, match="sums 1 data owner.*min_data_owners = 2; refused"):
        run.absorb(single, ["a", "b"], {})
    assert run.round == 0


def test_the_coordinators_count_must_match_the_encrypted_one(small_key):
    run = _run(small_key, 1)
    summed = aggregate(small_key.public_key.nsquare, _replies(run, 2))
    with pytest.raises(ProtocolViolation, match="names 3 contributor.*sums 2"):
        run.absorb(summed, ["a", "b", "c"], {})


def test_an_aggregate_of_two_owners_is_the_sum_of_their_gradients(small_key):
    run = _run(small_key, 2)
    summed = aggregate(small_key.public_key.nsquare, _replies(run, 2))
    record = run.absorb(summed, ["a", "b"], {})
    assert record.contributors == 2 and record.round == 0 and run.round == 1
    # At w = 0 the gradient sum is −Σ Xᵀy over both owners.
    expected = -sum(np.hstack([np.ones((25, 1)), x]).T @ y for x, y in map(_owner_data, range(2)))
    np.testing.assert_allclose(record.gradient_norm, np.linalg.norm(expected) / 50, rtol=1e-9)
