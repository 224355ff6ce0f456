"""The model creator's state survives a restart; a 2048-bit federation is exact too."""

from __future__ import annotations

import json

import pytest
import requests

from common.crypto.paillier import PrivateKey
from e2e_support import (
    assert_finished_exact,
    assert_matches_lstsq,
    assert_prediction,
    coefficient_vector,
    get_json,
    lstsq_reference,
    pooled,
    post_model,
    wait_coordinator_job,
)
from support import DIABETES_FEATURES, DIABETES_LABEL, SHIPPED, SHIPPED_OWNER_NAMES, SHIPPED_OWNERS, file_mode

pytestmark = pytest.mark.e2e



def key_file(federation):
    return federation.workdir / "model_creator" / "paillier_private_key.json"


def fingerprint_of(path) -> str:
    return PrivateKey.from_json(json.loads(path.read_text())).public_key.fingerprint


def test_finished_model_prediction_and_key_survive_a_model_creator_restart(federation):
    running = federation(SHIPPED_OWNERS)
    model = post_model(running, None)
    assert_finished_exact(model, SHIPPED_OWNER_NAMES, DIABETES_FEATURES)
    prediction = assert_prediction(running, model, SHIPPED / "test.csv")
    path = key_file(running)
    assert file_mode(path) == 0o600
    key_text = path.read_text()
    fingerprint = fingerprint_of(path)
    job = wait_coordinator_job(running, model["model_id"])
    assert job["spec"]["key_fingerprint"] == fingerprint

    creator = running.model_creator
    creator.stop()
    assert creator.process.poll() is not None
    with pytest.raises(requests.RequestException):
        requests.get(f"{creator.url}/health", timeout=2)
    running.start_party(creator)

    assert get_json(running, f"{creator.url}/model/{model['model_id']}") == model
    assert [m["model_id"] for m in get_json(running, f"{creator.url}/models")["models"]] == [model["model_id"]]
    assert running.prediction(model["model_id"]) == prediction
    assert running.prediction() == prediction
    assert path.read_text() == key_text
    assert file_mode(path) == 0o600

    # The restarted model creator trains with the same key, to the same model.
    again = post_model(running, None)
    assert_finished_exact(again, SHIPPED_OWNER_NAMES, DIABETES_FEATURES)
    assert wait_coordinator_job(running, again["model_id"])["spec"]["key_fingerprint"] == fingerprint
    assert coefficient_vector(again, DIABETES_FEATURES) == pytest.approx(
        coefficient_vector(model, DIABETES_FEATURES), rel=1e-12)
    assert fingerprint_of(path) == fingerprint


def test_2048_bit_keys_reproduce_lstsq_on_the_shipped_shards(federation):
    running = federation(SHIPPED_OWNERS, key_bits=2048)
    model = post_model(running, None)
    assert_finished_exact(model, SHIPPED_OWNER_NAMES, DIABETES_FEATURES)
    x, y = pooled([path for _, path in SHIPPED_OWNERS], DIABETES_FEATURES, DIABETES_LABEL)
    assert_matches_lstsq(model, DIABETES_FEATURES, lstsq_reference(x, y))
    assert_prediction(running, model, SHIPPED / "test.csv")
    key = PrivateKey.from_json(json.loads(key_file(running).read_text()))
    assert key.public_key.bits == 2048
    assert wait_coordinator_job(running, model["model_id"])["spec"]["key_fingerprint"] == key.public_key.fingerprint
