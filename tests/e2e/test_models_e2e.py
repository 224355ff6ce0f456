"""Ridge, logistic regression, standardisation and optimisers over one federation of real processes.

Also secure feature statistics, predictions, and model export/import.

Three generated data owners of very different sizes, each with its own column order and columns
no job uses, hold raw-scale features (square feet and years in the thousands next to a 0/1 flag)
and, as columns of the same CSV, the same features pre-scaled with the pooled mean and standard
deviation. Every reference result is computed here with numpy from the generated arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import UNREACHABLE, brute_force_auc, design

from local_federation.cluster import LocalFederation
from tests.e2e.e2e_support import write_csv

pytestmark = pytest.mark.e2e

RAW = ["sqft", "year_built", "has_garage", "distance_km"]
SCALED = [f"{name}_z" for name in RAW]
PRICE, SOLD, SOLD_MIXED = "price", "sold", "sold_mixed"
EXTRA = ["listing_id", "agent", "notes_score"]
CONSTANT = {"region": 7.0, "fee_rate": 0.1}  # the same value for every row of every owner
COLUMNS = [*RAW, PRICE, SOLD, SOLD_MIXED, *SCALED, *EXTRA, *CONSTANT]
SIZES = (60, 1300, 380)
BAD_OWNER, BAD_ROW = 2, 7  # the third owner's 7th data row has sold_mixed = 2
TEST_ROWS = 1000


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def generate(rng: np.random.Generator, count: int, shift: float) -> dict[str, np.ndarray]:
    sqft = np.round(rng.uniform(600, 4500, count) + 120 * shift, 1)
    year_built = rng.integers(1950, 2021, count).astype(np.float64)
    has_garage = (rng.random(count) < 0.3 + 0.1 * shift).astype(np.float64)
    distance_km = np.round(rng.uniform(0.5, 40, count), 3)
    price = (50_000 + 120.0 * sqft + 800.0 * (year_built - 1950) + 15_000 * has_garage - 1200.0 * distance_km
             + rng.normal(0, 20_000, count))
    score = (0.3 + 1.3 * (sqft - 2550) / 1126 - 0.7 * (year_built - 1985) / 20.5 + 0.6 * (has_garage - 0.35) / 0.48
             - 0.9 * (distance_km - 20) / 11.4)
    sold = (rng.random(count) < 1 / (1 + np.exp(-score))).astype(np.float64)
    return {
        "sqft": sqft, "year_built": year_built, "has_garage": has_garage, "distance_km": distance_km,
        PRICE: np.round(price, 2), SOLD: sold, SOLD_MIXED: sold.copy(),
        "listing_id": rng.integers(100_000, 999_999, count).astype(np.float64),
        "agent": np.array([f"agent-{i}" for i in rng.integers(0, 40, count)]),
        "notes_score": rng.normal(50, 20, count),
        **{name: np.full(count, value) for name, value in CONSTANT.items()},
    }


def add_scaled(part: dict[str, np.ndarray], means: np.ndarray, stds: np.ndarray) -> None:
    for index, name in enumerate(RAW):
        part[f"{name}_z"] = (part[name] - means[index]) / stds[index]


class Data:
    """The generated owners and test set, as arrays and as the CSV files the parties read."""

    def __init__(self, directory: Path) -> None:
        rng = np.random.default_rng(20240917)
        self.parts = [generate(rng, size, shift=index) for index, size in enumerate(SIZES)]
        self.parts[BAD_OWNER][SOLD_MIXED][BAD_ROW - 1] = 2.0
        self.test = generate(rng, TEST_ROWS, shift=1.0)
        raw = np.vstack([np.column_stack([part[name] for name in RAW]) for part in self.parts])
        self.raw_means, self.raw_stds = raw.mean(axis=0), raw.std(axis=0)
        for part in [*self.parts, self.test]:
            add_scaled(part, self.raw_means, self.raw_stds)
        directory.mkdir(parents=True, exist_ok=True)
        self.owners: list[tuple[str, Path]] = []
        for index, part in enumerate(self.parts):
            columns = list(COLUMNS)
            if index == 1:
                columns.reverse()
            elif index == 2:
                columns = columns[5:] + columns[:5]
            name = f"owner{index}_{SIZES[index]}rows"
            self.owners.append((name, write_csv(directory / f"{name}.csv", columns, part)))
        test_columns = [SOLD, *SCALED, PRICE, SOLD_MIXED, *RAW[::-1], "agent", *CONSTANT]
        self.test_csv = write_csv(directory / "test.csv", test_columns, self.test)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.owners]

    def pooled(self, features: Sequence[str], label: str, owners: Sequence[int] = (0, 1, 2)):
        parts = [self.parts[i] for i in owners]
        x = np.vstack([np.column_stack([part[name] for name in features]) for part in parts])
        return x, np.concatenate([part[label] for part in parts])

    def testing(self, features: Sequence[str], label: str):
        return np.column_stack([self.test[name] for name in features]), self.test[label]


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------

def ridge_closed_form(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    a = design(x)
    penalty = np.diag([0.0] + [1.0] * x.shape[1])
    return np.linalg.solve(a.T @ a + alpha * penalty, a.T @ y)


def taylor_closed_form(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The minimiser of the second-order Taylor logistic loss: ¼AᵀA w = Aᵀ(y − ½)."""
    a = design(x)
    return np.linalg.solve(a.T @ a / 4, a.T @ (y - 0.5))


def probabilities(scores: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -scores))


def newton_logistic(z: np.ndarray, y: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Exact (unpenalised) logistic regression by Newton's method."""
    a = design(z)
    w = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = probabilities(a @ w)
        step = np.linalg.solve(a.T @ (a * (p * (1 - p))[:, None]), a.T @ (p - y))
        w = w - step
        if np.linalg.norm(step) < 1e-12 * max(1.0, np.linalg.norm(w)):
            break
    return w


def classification(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(np.mean((scores >= 0) == (labels == 1))),
        "log_loss": float(np.mean(labels * np.logaddexp(0, -scores) + (1 - labels) * np.logaddexp(0, scores))),
        "auc": brute_force_auc(scores, labels),
    }


def vector(mapping: dict[str, float], features: Sequence[str]) -> np.ndarray:
    assert set(mapping) == {"intercept", *features}, sorted(mapping)
    return np.array([mapping["intercept"], *(mapping[name] for name in features)])


def assert_relative(got: np.ndarray, expected: np.ndarray, rtol: float, names: Sequence[str]) -> None:
    relative = np.abs(got - expected) / np.abs(expected)
    worst = int(np.argmax(relative))
    assert np.all(relative <= rtol), (f"{names[worst]}: {got[worst]!r} vs {expected[worst]!r}"
                                      f" (relative error {relative[worst]:.3g} > {rtol:g})")


# --------------------------------------------------------------------------------------------
# The federation and its jobs
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    return Data(tmp_path_factory.mktemp("models_data"))


@pytest.fixture(scope="module")
def federation(tmp_path_factory, data) -> Iterator[LocalFederation]:
    instance = LocalFederation(tmp_path_factory.mktemp("models_federation"), list(data.owners),
                               test_data=data.test_csv, key_bits=1024)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def train(federation: LocalFederation, body: dict[str, Any]) -> dict[str, Any]:
    response = federation.session.post(f"{federation.model_creator.url}/model", json=body, timeout=30)
    assert response.status_code == 202, f"POST /model {body}: {response.status_code} {response.text}"
    model_id = response.json()["model_id"]
    try:
        model = federation.wait_model(model_id, timeout=240)
    except TimeoutError:
        logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in federation.parties.values())
        raise AssertionError(f"model {model_id} did not end in time\n{logs}") from None
    assert model["status"] == "finished", f"{body}: {model.get('error')}"
    return model


def get(federation: LocalFederation, path: str, **params: Any) -> dict[str, Any]:
    response = federation.session.get(f"{federation.model_creator.url}{path}", params=params or None, timeout=30)
    assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
    return response.json()


def assert_history(model: dict[str, Any], owners: Sequence[str], standardised: bool, validation_keys: set[str]):
    history = model["history"]
    assert model["round"] == len(history)
    assert [entry["round"] for entry in history] == list(range(len(history)))
    kinds = [entry["kind"] for entry in history]
    if standardised:
        assert kinds[0] == "statistics" and set(kinds[1:]) == {"gradient"}, kinds
        assert history[0]["gradient_norm"] is None
    else:
        assert set(kinds) == {"gradient"}, kinds
    for entry in history:
        assert sorted(entry["data_owners"]) == sorted(owners)
        assert entry["contributors"] == len(owners)
        assert set(entry["validation"]) == validation_keys, entry
    assert all(entry["stop_reason"] is None for entry in history[:-1])
    assert history[-1]["stop_reason"] == model["stop_reason"]
    assert history[-1]["validation"] == model["metrics"]
    assert sorted(model["data_owners"]) == sorted(owners)


@pytest.fixture(scope="module")
def logistic(federation) -> dict[str, Any]:
    """The default logistic regression: exact optimiser on standardised features."""
    return train(federation, {"model": "logistic_regression", "features": RAW, "label": SOLD})


# --------------------------------------------------------------------------------------------
# Ridge
# --------------------------------------------------------------------------------------------

def test_ridge_equals_the_closed_form_on_the_pooled_rows(federation, data):
    features = ["sqft_z", "year_built_z", "has_garage", "distance_km"]
    alpha = 400.0
    model = train(federation, {"model": "ridge", "features": features, "label": PRICE, "alpha": alpha})
    assert model["model"] == "ridge" and model["request"]["alpha"] == alpha
    assert model["request"]["standardize"] is False
    assert model["stop_reason"].startswith("exact"), model["stop_reason"]
    assert_history(model, data.names, standardised=False, validation_keys={"mse"})
    assert "scaling" not in model and "standardized_coefficients" not in model

    x, y = data.pooled(features, PRICE)
    expected = ridge_closed_form(x, y, alpha)
    got = vector(model["coefficients"], features)
    assert_relative(got, expected, 1e-6, ["intercept", *features])
    # The penalty mattered: least squares is clearly different.
    least_squares = np.linalg.lstsq(design(x), y, rcond=None)[0]
    assert np.max(np.abs(least_squares - expected) / np.abs(expected)) > 1e-2

    x_test, y_test = data.testing(features, PRICE)
    predictions = design(x_test) @ got
    answer = get(federation, "/prediction", model_id=model["model_id"])
    np.testing.assert_allclose(answer["predictions"], predictions, rtol=1e-9)
    assert answer["mse"] == pytest.approx(float(np.mean((predictions - y_test) ** 2)), rel=1e-9)
    assert model["metrics"]["mse"] == pytest.approx(answer["mse"], rel=1e-9)


def ridge_standardised_closed_form(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge on z = (x − μ)/σ (population σ), as (coefficients on z, the same model in original units)."""
    means, stds = x.mean(axis=0), x.std(axis=0)
    on_z = ridge_closed_form((x - means) / stds, y, alpha)
    slopes = on_z[1:] / stds
    return on_z, np.concatenate([[on_z[0] - slopes @ means], slopes])


def test_standardised_ridge_penalises_the_standardised_coefficients(federation, data):
    alpha = 400.0
    model = train(federation, {"model": "ridge", "features": RAW, "label": PRICE, "alpha": alpha,
                               "standardize": True})
    assert model["stop_reason"].startswith("exact"), model["stop_reason"]
    assert_history(model, data.names, standardised=True, validation_keys={"mse"})
    x, y = data.pooled(RAW, PRICE)
    on_z, original = ridge_standardised_closed_form(x, y, alpha)
    names = ["intercept", *RAW]
    assert_relative(vector(model["coefficients"], RAW), original, 1e-6, names)
    assert_relative(vector(model["standardized_coefficients"], RAW), on_z, 1e-6, names)
    # Not the same as penalising the raw coefficients.
    raw_penalty = ridge_closed_form(x, y, alpha)
    assert np.max(np.abs(raw_penalty - original) / np.abs(original)) > 1e-2


def test_momentum_converges_to_the_standardised_ridge_solution(federation, data):
    alpha = 400.0
    model = train(federation, {"model": "ridge", "features": RAW, "label": PRICE, "alpha": alpha,
                               "standardize": True, "optimizer": "momentum", "learning_rate": 0.1,
                               "tolerance": 50.0, "max_rounds": 600})
    assert model["optimizer"] == "momentum"
    assert model["stop_reason"] == "gradient_norm <= 50"
    assert_history(model, data.names, standardised=True, validation_keys={"mse"})
    assert len(model["history"]) < 600
    x, y = data.pooled(RAW, PRICE)
    on_z, original = ridge_standardised_closed_form(x, y, alpha)
    # Within the tolerance: |v − v*| ≤ |mean gradient| / smallest curvature (≥ 0.5 here).
    standardised = vector(model["standardized_coefficients"], RAW)
    assert np.linalg.norm(standardised - on_z) <= 100
    # Reported in original units, it is the same model.
    means, stds = x.mean(axis=0), x.std(axis=0)
    slopes = standardised[1:] / stds
    np.testing.assert_allclose(vector(model["coefficients"], RAW),
                               np.concatenate([[standardised[0] - slopes @ means], slopes]), rtol=1e-8)
    x_test, _ = data.testing(RAW, PRICE)
    np.testing.assert_allclose(design(x_test) @ vector(model["coefficients"], RAW), design(x_test) @ original,
                               rtol=1e-3)


# --------------------------------------------------------------------------------------------
# Logistic regression
# --------------------------------------------------------------------------------------------

def test_logistic_regression_starts_with_secure_feature_statistics(logistic, data):
    assert logistic["model"] == "logistic_regression"
    assert logistic["request"]["standardize"] is True
    assert_history(logistic, data.names, standardised=True, validation_keys={"accuracy", "log_loss", "auc"})
    x, _ = data.pooled(RAW, SOLD)
    scaling = logistic["scaling"]
    assert list(scaling["means"]) == RAW and list(scaling["stds"]) == RAW
    assert_relative(np.array([scaling["means"][f] for f in RAW]), x.mean(axis=0), 1e-9, RAW)
    assert_relative(np.array([scaling["stds"][f] for f in RAW]), x.std(axis=0), 1e-9, RAW)


def test_logistic_regression_solves_the_taylor_objective_and_reports_both_scales(logistic, data):
    x, y = data.pooled(RAW, SOLD)
    coefficients = vector(logistic["coefficients"], RAW)
    assert logistic["stop_reason"].startswith("exact"), logistic["stop_reason"]
    assert_relative(coefficients, taylor_closed_form(x, y), 1e-6, ["intercept", *RAW])
    # Standardised coefficients are the same model on (x − μ)/σ.
    means, stds = x.mean(axis=0), x.std(axis=0)
    standardised = vector(logistic["standardized_coefficients"], RAW)
    np.testing.assert_allclose(standardised[1:], coefficients[1:] * stds, rtol=1e-9)
    assert standardised[0] == pytest.approx(coefficients[0] + coefficients[1:] @ means, rel=1e-9, abs=1e-9)
    z = (x - means) / stds
    np.testing.assert_allclose(design(z) @ standardised, design(x) @ coefficients, rtol=1e-7, atol=1e-7)


def test_logistic_accuracy_is_within_two_points_of_exact_logistic_regression(logistic, data):
    x, y = data.pooled(RAW, SOLD)
    means, stds = x.mean(axis=0), x.std(axis=0)
    reference = newton_logistic((x - means) / stds, y)
    x_test, y_test = data.testing(RAW, SOLD)
    reference_accuracy = classification(design((x_test - means) / stds) @ reference, y_test)["accuracy"]
    accuracy = classification(design(x_test) @ vector(logistic["coefficients"], RAW), y_test)["accuracy"]
    assert reference_accuracy > 0.7, "the data set must be learnable for the comparison to mean anything"
    assert abs(accuracy - reference_accuracy) <= 0.02, (accuracy, reference_accuracy)


def test_get_prediction_of_logistic_reports_metrics_of_the_returned_coefficients(federation, logistic, data):
    answer = get(federation, "/prediction", model_id=logistic["model_id"])
    x_test, y_test = data.testing(RAW, SOLD)
    scores = design(x_test) @ vector(logistic["coefficients"], RAW)
    expected = classification(scores, y_test)
    assert answer["rows"] == TEST_ROWS
    assert answer["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert answer["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-9)
    assert answer["auc"] == pytest.approx(expected["auc"], abs=1e-12)
    np.testing.assert_allclose(answer["probabilities"], probabilities(scores), rtol=1e-9, atol=1e-15)
    assert answer["predictions"] == [int(s >= 0) for s in scores]
    assert logistic["metrics"] == pytest.approx(expected, rel=1e-9)

    rows = [{name: float(x_test[i, k]) for k, name in enumerate(RAW)} for i in range(5)]
    response = federation.session.post(f"{federation.model_creator.url}/prediction",
                                       json={"model_id": logistic["model_id"], "rows": rows}, timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["probabilities"], probabilities(scores[:5]), rtol=1e-9)

    # The test file itself, uploaded: the same metrics as GET /prediction.
    with data.test_csv.open("rb") as handle:
        text = handle.read()
    columns = text.decode().splitlines()[0].split(",")
    assert "agent" in columns  # a column the model does not use (text, even): ignored, as at the owners
    whole = federation.session.post(f"{federation.model_creator.url}/prediction",
                                    params={"model_id": logistic["model_id"]}, data=text,
                                    headers={"Content-Type": "text/csv"}, timeout=30)
    assert whole.status_code == 200, whole.text
    for name in ("accuracy", "log_loss", "auc", "probabilities", "predictions", "rows"):
        assert whole.json()[name] == pytest.approx(answer[name], rel=1e-12), name
    keep = [columns.index(name) for name in [*RAW, SOLD]]
    lines = [",".join(line.split(",")[i] for i in keep) for line in text.decode().splitlines()]
    uploaded = federation.session.post(f"{federation.model_creator.url}/prediction",
                                       data={"model_id": logistic["model_id"]},
                                       files={"file": ("test.csv", "\n".join(lines).encode(), "text/csv")},
                                       timeout=30)
    assert uploaded.status_code == 200, uploaded.text
    for name in ("accuracy", "log_loss", "auc", "probabilities", "predictions", "rows"):
        assert uploaded.json()[name] == pytest.approx(answer[name], rel=1e-12), name


def test_an_owner_with_a_non_binary_label_refuses_and_the_others_train(federation, data):
    model = train(federation, {"model": "logistic_regression", "features": SCALED, "label": SOLD_MIXED})
    good = [name for i, name in enumerate(data.names) if i != BAD_OWNER]
    bad_name, bad_path = data.owners[BAD_OWNER]
    assert sorted(model["data_owners"]) == sorted(good)
    for entry in model["history"]:
        assert sorted(entry["data_owners"]) == sorted(good)
        reason = entry["failures"][bad_name]
        # The code and the job's column travel; the file, the row and the value stay with the owner.
        assert reason.endswith(f"not_binary (column '{SOLD_MIXED}')"), reason
        assert str(Path(bad_path).resolve()) not in reason and bad_path.name not in reason, reason
        assert f"row {BAD_ROW}" not in reason, reason
    details = [e["detail"] for e in federation.owner_status(bad_name)["events"] if e["code"] == "not_binary"]
    assert any(f"row {BAD_ROW}" in d and bad_path.name in d for d in details), details
    x, y = data.pooled(SCALED, SOLD_MIXED, owners=[i for i in range(3) if i != BAD_OWNER])
    assert_relative(vector(model["coefficients"], SCALED), taylor_closed_form(x, y), 1e-6, ["intercept", *SCALED])


@pytest.mark.parametrize(("constant", "optimizer"), [("region", "exact"), ("fee_rate", "exact"), ("fee_rate", "gd")])
def test_a_feature_constant_over_all_owners_stops_a_standardised_job(federation, constant, optimizer):
    """Secure statistics find the constant column (σ = 0) and the job fails naming it, whatever the value."""
    body = {"model": "logistic_regression", "features": ["sqft", constant], "label": SOLD, "optimizer": optimizer,
            "max_rounds": 5}
    response = federation.session.post(f"{federation.model_creator.url}/model", json=body, timeout=30)
    assert response.status_code == 202, response.text
    model = federation.wait_model(response.json()["model_id"], timeout=120)
    assert model["status"] == "failed", (f"a job on the constant feature {constant!r} ended {model['status']}"
                                         f" with scaling {model.get('scaling')} and coefficients"
                                         f" {model.get('coefficients')}")
    assert constant in model["error"] and "constant" in model["error"], model["error"]
    assert "sqft" not in model["error"]


# --------------------------------------------------------------------------------------------
# First-order optimisers on raw-scale and pre-scaled features
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model_name", "label", "optimizer", "learning_rate", "rounds"), [
    pytest.param("logistic_regression", SOLD, "adam", 0.1, 20, id="logistic-adam"),
    pytest.param("linear_regression", PRICE, "gd", 0.5, 15, id="linear-gd"),
])
def test_raw_scale_features_train_as_well_as_prescaled_ones(federation, data, model_name, label, optimizer,
                                                            learning_rate, rounds):
    common = {"model": model_name, "label": label, "optimizer": optimizer, "learning_rate": learning_rate,
              "max_rounds": rounds, "standardize": True, "tolerance": 0, "relative_tolerance": 0}
    on_raw = train(federation, {**common, "features": RAW})
    on_scaled = train(federation, {**common, "features": SCALED})
    keys = {"mse"} if model_name == "linear_regression" else {"accuracy", "log_loss", "auc"}
    for model in (on_raw, on_scaled):
        assert model["optimizer"] == optimizer
        assert model["stop_reason"] == "max_rounds"
        assert len(model["history"]) == rounds + 1  # the statistics round, then the gradient rounds
        assert_history(model, data.names, standardised=True, validation_keys=keys)

    # The same model, in standardised coordinates, after the same number of rounds.
    np.testing.assert_allclose(vector(on_raw["standardized_coefficients"], RAW),
                               vector(on_scaled["standardized_coefficients"], SCALED), rtol=1e-5, atol=1e-8)
    x_raw, y_test = data.testing(RAW, label)
    x_scaled, _ = data.testing(SCALED, label)
    raw_scores = design(x_raw) @ vector(on_raw["coefficients"], RAW)
    scaled_scores = design(x_scaled) @ vector(on_scaled["coefficients"], SCALED)
    if model_name == "linear_regression":
        raw_mse, scaled_mse = (float(np.mean((s - y_test) ** 2)) for s in (raw_scores, scaled_scores))
        assert raw_mse == pytest.approx(scaled_mse, rel=1e-4)
        assert on_raw["metrics"]["mse"] == pytest.approx(raw_mse, rel=1e-9)
        # and it learnt: far better than predicting the mean price
        assert raw_mse < 0.5 * float(np.var(y_test))
        mse = [entry["validation"]["mse"] for entry in on_raw["history"]]
        assert mse[-1] < mse[1] < mse[0]
    else:
        raw_metrics, scaled_metrics = classification(raw_scores, y_test), classification(scaled_scores, y_test)
        assert abs(raw_metrics["accuracy"] - scaled_metrics["accuracy"]) <= 0.002
        assert raw_metrics["log_loss"] == pytest.approx(scaled_metrics["log_loss"], rel=1e-4)
        assert on_raw["metrics"]["accuracy"] == pytest.approx(raw_metrics["accuracy"], abs=1e-12)
        assert raw_metrics["accuracy"] > 0.7


def test_without_standardisation_the_same_adam_run_on_raw_features_is_far_worse(federation, data):
    common = {"model": "logistic_regression", "features": RAW, "label": SOLD, "optimizer": "adam",
              "learning_rate": 0.1, "max_rounds": 20, "tolerance": 0, "relative_tolerance": 0}
    plain = train(federation, {**common, "standardize": False})
    assert [entry["kind"] for entry in plain["history"]] == ["gradient"] * 20
    assert "scaling" not in plain
    standardised = train(federation, {**common, "standardize": True})
    assert plain["metrics"]["log_loss"] > 2 * standardised["metrics"]["log_loss"]
    assert plain["metrics"]["accuracy"] < standardised["metrics"]["accuracy"] - 0.05


def test_gradient_tolerance_stops_training_and_is_recorded(federation, data):
    model = train(federation, {"model": "logistic_regression", "features": SCALED, "label": SOLD, "optimizer": "gd",
                               "learning_rate": 3.0, "tolerance": 1e-4, "max_rounds": 200})
    assert model["stop_reason"] == "gradient_norm <= 0.0001"
    assert_history(model, data.names, standardised=True, validation_keys={"accuracy", "log_loss", "auc"})
    assert len(model["history"]) < 200
    x, y = data.pooled(SCALED, SOLD)
    np.testing.assert_allclose(vector(model["coefficients"], SCALED), taylor_closed_form(x, y), atol=1e-3)


def test_relative_tolerance_stops_training_and_is_recorded(federation, data):
    model = train(federation, {"model": "linear_regression", "features": RAW, "label": PRICE, "optimizer": "gd",
                               "learning_rate": 0.7, "standardize": True, "tolerance": 0,
                               "relative_tolerance": 1e-4, "max_rounds": 300})
    assert model["stop_reason"] == "relative_change <= 0.0001"
    assert_history(model, data.names, standardised=True, validation_keys={"mse"})
    assert len(model["history"]) < 300
    x, y = data.pooled(RAW, PRICE)
    least_squares = np.linalg.lstsq(design(x), y, rcond=None)[0]
    x_test, y_test = data.testing(RAW, PRICE)
    best = float(np.mean((design(x_test) @ least_squares - y_test) ** 2))
    assert model["metrics"]["mse"] <= best * 1.01


# --------------------------------------------------------------------------------------------
# Versions, export and import, restart
# --------------------------------------------------------------------------------------------

def test_models_are_listed_with_versions(federation, logistic):
    listed = get(federation, "/models")["models"]
    assert len(listed) >= 2
    versions = [entry["version"] for entry in listed]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    entry = next(m for m in listed if m["model_id"] == logistic["model_id"])
    assert entry["status"] == "finished" and entry["model"] == "logistic_regression"
    assert entry["features"] == RAW and entry["metrics"] == logistic["metrics"]


def test_a_model_survives_a_restart_and_moves_to_another_model_creator(federation, logistic, data, tmp_path):
    from model_creator import create_app

    model_id = logistic["model_id"]
    before = get(federation, "/prediction", model_id=model_id)
    exported = get(federation, f"/model/{model_id}/export")
    assert exported["coefficients"] == logistic["coefficients"]
    assert exported["scaling"] == logistic["scaling"]
    assert exported["standardized_coefficients"] == logistic["standardized_coefficients"]
    assert exported["training"]["rounds"] == len(logistic["history"])
    assert exported["training"]["stop_reason"] == logistic["stop_reason"]

    creator = federation.model_creator
    creator.stop()
    federation.start_party(creator)
    after = get(federation, "/prediction", model_id=model_id)
    assert after == before
    shown = get(federation, f"/model/{model_id}")
    assert shown["status"] == "finished" and shown["coefficients"] == logistic["coefficients"]
    assert shown["history"] == logistic["history"]

    other = create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "other_model_creator"), "KEY_BITS": 1024, "TEST_ONLY_SMALL_KEYS": True,
                        "COORDINATOR_URL": UNREACHABLE, "TEST_DATA": str(data.test_csv),
                        "REQUEST_TIMEOUT": 5, "MODEL_CREATOR_TOKEN": "another-model-creator-token",
                        "COORDINATOR_TOKEN": "another-coordinator-token", "SECRETS_FILE": None})
    client = other.test_client()
    response = client.post("/models/import", json=exported)
    assert response.status_code == 201, response.get_data(as_text=True)
    imported_id = response.get_json()["model_id"]
    elsewhere = client.get(f"/prediction?model_id={imported_id}").get_json()
    for name in ("accuracy", "log_loss", "auc", "probabilities", "predictions", "rows"):
        assert elsewhere[name] == before[name], name
    assert math.isfinite(elsewhere["log_loss"])

    # Imported back into the running model creator, too.
    response = federation.session.post(f"{creator.url}/models/import", json=exported, timeout=30)
    assert response.status_code == 201, response.text
    again = get(federation, "/prediction", model_id=response.json()["model_id"])
    assert again["probabilities"] == before["probabilities"]
