"""Federated training over real processes reproduces numpy's least squares on the pooled rows.

Shipped diabetes shards (three owners, different column orders, an extra text column) and
generated raw-scale data (values in the thousands, a 0/1 flag, labels in the hundreds of
thousands; owners of 30 to 20,000 rows with their own column orders and unused columns).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from e2e_support import (
    RAW_FEATURES,
    RAW_LABEL,
    STD_FEATURES,
    STD_LABEL,
    assert_finished_exact,
    assert_matches_lstsq,
    assert_prediction,
    coordinator_job,
    generated_owners,
    generated_test_csv,
    load,
    lstsq_reference,
    pooled,
    post_model,
    running_federation,
    validation_mse,
)
from support import DIABETES_FEATURES, DIABETES_LABEL, SHIPPED, SHIPPED_OWNER_NAMES, SHIPPED_OWNERS

pytestmark = pytest.mark.e2e

GENERATED_SIZES = (30, 3000, 20000, 457)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    with running_federation(tmp_path_factory.mktemp("shipped"), SHIPPED_OWNERS, SHIPPED / "test.csv") as federation:
        yield federation


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    directory = tmp_path_factory.mktemp("generated")
    owners = generated_owners(directory / "data", GENERATED_SIZES)
    test_csv = generated_test_csv(directory / "data")
    with running_federation(directory / "federation", owners, test_csv) as federation:
        federation.generated_owners = owners
        federation.generated_test_csv = test_csv
        yield federation


def test_shipped_shards_default_job_equals_lstsq(shipped):
    model = post_model(shipped, None)
    owners = [name for name, _ in SHIPPED_OWNERS]
    assert_finished_exact(model, owners, DIABETES_FEATURES)
    assert model["label"] == DIABETES_LABEL
    x, y = pooled([path for _, path in SHIPPED_OWNERS], DIABETES_FEATURES, DIABETES_LABEL)
    assert len(y) == 200 + 130 + 70
    reference = lstsq_reference(x, y)
    assert_matches_lstsq(model, DIABETES_FEATURES, reference)

    answer = assert_prediction(shipped, model, SHIPPED / "test.csv")
    x_test, y_test = load(SHIPPED / "test.csv", DIABETES_FEATURES, DIABETES_LABEL)
    reference_mse = float(np.mean((lstsq_reference(x, y)[0] + x_test @ reference[1:] - y_test) ** 2))
    assert answer["mse"] == pytest.approx(reference_mse, rel=1e-6)
    # Without ?model_id the latest finished model is scored.
    assert shipped.prediction()["model_id"] == model["model_id"]


def test_shipped_shards_feature_subset_equals_lstsq_on_the_subset(shipped):
    features = ["s5", "bmi", "bp"]
    model = post_model(shipped, {"features": features})
    owners = [name for name, _ in SHIPPED_OWNERS]
    assert_finished_exact(model, owners, features)
    x, y = pooled([path for _, path in SHIPPED_OWNERS], features, DIABETES_LABEL)
    assert_matches_lstsq(model, features, lstsq_reference(x, y))
    assert_prediction(shipped, model, SHIPPED / "test.csv")


def test_raw_scale_owners_of_very_different_sizes_equal_lstsq(generated):
    owners = generated.generated_owners
    model = post_model(generated, {"features": RAW_FEATURES, "label": RAW_LABEL})
    assert_finished_exact(model, [name for name, _ in owners], RAW_FEATURES)
    x, y = pooled([path for _, path in owners], RAW_FEATURES, RAW_LABEL)
    assert len(y) == sum(GENERATED_SIZES)
    assert np.max(np.abs(x)) > 1000 and np.max(np.abs(y)) > 100_000
    reference = lstsq_reference(x, y)
    assert_matches_lstsq(model, RAW_FEATURES, reference)
    assert_prediction(generated, model, generated.generated_test_csv)


def test_raw_scale_feature_subset_equals_lstsq_on_the_subset(generated):
    owners = generated.generated_owners
    features = ["has_pool", "sqft"]
    model = post_model(generated, {"features": features, "label": RAW_LABEL})
    assert_finished_exact(model, [name for name, _ in owners], features)
    x, y = pooled([path for _, path in owners], features, RAW_LABEL)
    assert_matches_lstsq(model, features, lstsq_reference(x, y))
    assert_prediction(generated, model, generated.generated_test_csv)


def test_gradient_descent_reduces_validation_mse(generated):
    owners = generated.generated_owners
    rounds = 12
    model = post_model(generated, {"features": STD_FEATURES, "label": STD_LABEL, "optimizer": "gd",
                                   "learning_rate": 0.5, "max_rounds": rounds})
    assert model["status"] == "finished", model.get("error")
    assert model["optimizer"] == "gd"
    assert model["stop_reason"] == "max_rounds"
    history = model["history"]
    assert len(history) == rounds
    assert all(entry["contributors"] == len(owners) for entry in history)
    mse = [validation_mse(entry) for entry in history]
    assert all(isinstance(value, float) for value in mse), mse
    assert mse[-1] < mse[0], mse
    x, y = pooled([path for _, path in owners], STD_FEATURES, STD_LABEL)
    reference = lstsq_reference(x, y)
    x_test, y_test = load(generated.generated_test_csv, STD_FEATURES, STD_LABEL)
    coefficients = np.array([model["coefficients"][name] for name in ["intercept", *STD_FEATURES]])
    # Gradient descent on standardised data converges towards the least-squares solution.
    assert np.linalg.norm(coefficients - reference) < 0.05 * np.linalg.norm(reference)
    assert mse[-1] == pytest.approx(float(np.mean((coefficients[0] + x_test @ coefficients[1:] - y_test) ** 2)),
                                    rel=1e-9)
    assert_prediction(generated, model, generated.generated_test_csv)


def test_generated_owners_really_differ_in_layout(generated):
    """Guard for the data the other tests rely on: column orders differ and extra columns exist."""
    headers = [Path(path).read_text().splitlines()[0].split(",") for _, path in generated.generated_owners]
    assert len({tuple(header) for header in headers}) >= 3
    assert all({"listing_id", "agent", "unused_score"} <= set(header) for header in headers)


# --- One-shot statistics and DJN randomness -----------------------------------------------------
# A one-shot job ("protocol": "one_shot") asks every owner once for its packed, masked, encrypted
# (n_i, A_i, b_i); the model creator decrypts only the sum and solves. Its result must be the
# gradient protocol's own, to the last bit, and least squares on the pooled rows; DJN randomness
# ("randomness": "djn") must change nothing in any result.


@pytest.fixture(scope="module")
def gradient_model(shipped):
    return post_model(shipped, None)


@pytest.fixture(scope="module")
def shipped_reference():
    x, y = pooled([path for _, path in SHIPPED_OWNERS], DIABETES_FEATURES, DIABETES_LABEL)
    return lstsq_reference(x, y)


@pytest.mark.parametrize("randomness", ["standard", "djn"])
def test_a_one_shot_job_is_one_moments_round_and_the_gradient_protocols_exact_model(
    shipped, gradient_model, shipped_reference, randomness
):
    model = post_model(shipped, {"protocol": "one_shot", "randomness": randomness})
    assert_finished_exact(model, SHIPPED_OWNER_NAMES, DIABETES_FEATURES)
    assert [entry["kind"] for entry in model["history"]] == ["moments"]
    assert model["request"]["protocol"] == "one_shot" and model["request"]["randomness"] == randomness
    assert_matches_lstsq(model, DIABETES_FEATURES, shipped_reference)
    # d + 1 gradient rounds for d coefficients (the features and the intercept).
    assert len(gradient_model["history"]) == len(DIABETES_FEATURES) + 2
    assert model["coefficients"] == gradient_model["coefficients"]
    job = coordinator_job(shipped, model["model_id"])
    assert job["spec"]["protocol"] == "one_shot" and job["spec"]["randomness"] == randomness
    assert [(r["kind"], sorted(r["contributors"])) for r in job["rounds"]] == [("moments", SHIPPED_OWNER_NAMES)]


def test_djn_randomness_trains_the_same_gradient_rounds(shipped, gradient_model):
    model = post_model(shipped, {"randomness": "djn"})
    assert_finished_exact(model, SHIPPED_OWNER_NAMES, DIABETES_FEATURES)
    assert [entry["kind"] for entry in model["history"]] == ["gradient"] * (len(DIABETES_FEATURES) + 2)
    assert model["coefficients"] == gradient_model["coefficients"]


def test_a_standardised_ridge_one_shot_job_equals_its_gradient_job(shipped):
    body = {"model": "ridge", "alpha": 3.5, "standardize": True, "features": ["bmi", "bp", "s5"]}
    gradients = post_model(shipped, body)
    one_shot = post_model(shipped, {**body, "protocol": "one_shot", "randomness": "djn"})
    assert gradients["status"] == one_shot["status"] == "finished", (gradients.get("error"), one_shot.get("error"))
    assert [entry["kind"] for entry in one_shot["history"]] == ["statistics", "moments"]
    assert one_shot["coefficients"] == gradients["coefficients"]
    assert one_shot["scaling"] == gradients["scaling"]

