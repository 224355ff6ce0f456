"""The model creator's user API for finished models, in process.

Predictions on rows given as JSON or CSV, GET /prediction on its own test data, the versioned
model list, export and import, and persistence across a restart. Models are put into the store
directly, as training would.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import DIABETES_FEATURES as DIABETES
from support import SHIPPED, UNREACHABLE, brute_force_auc

DIABETES_COEFFICIENTS = [-330.5, 0.07, -22.1, 5.6, 1.1, -1.05, 0.76, 0.4, 6.9, 68.4, 0.3]

SALE_FEATURES = ["sqft", "year_built", "has_pool"]
SALE_LABEL = "sold"
SALE_COEFFICIENTS = [5.4, 0.0009, -0.004, 0.8]
# Settings an app needs besides its state and test data; the secrets are given so that no secrets
# file outside the test's directory is ever read or created.
SECRET_SETTINGS = ("MODEL_CREATOR_TOKEN", "COORDINATOR_TOKEN", "SECRETS_FILE", "API_TOKEN")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def read_csv(path: Path, columns: list[str]) -> np.ndarray:
    """Columns of a CSV by name, as float64, without the product's reader."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = [name.strip() for name in rows[0]]
    return np.array([[float(row[header.index(c)]) for c in columns] for row in rows[1:]], dtype=np.float64)


def to_csv(columns: list[str], table: np.ndarray) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in table:
        writer.writerow([repr(float(v)) for v in row])
    return out.getvalue()


def scores(coefficients: list[float], table: np.ndarray) -> np.ndarray:
    return coefficients[0] + table @ np.array(coefficients[1:])


def sigmoid(values: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -values))


def classification_reference(coefficients: list[float], table: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    s = scores(coefficients, table)
    return {
        "accuracy": float(np.mean((s >= 0) == (labels == 1))),
        "log_loss": float(np.mean(labels * np.logaddexp(0, -s) + (1 - labels) * np.logaddexp(0, s))),
        "auc": brute_force_auc(s, labels),
    }


def assert_error(response, status: int, *fragments: str) -> str:
    text = response.get_data(as_text=True)
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {text}"
    assert response.mimetype == "application/json", text
    assert "Traceback" not in text, text
    body = response.get_json()
    assert set(body) == {"error", "type"}, body
    for fragment in fragments:
        assert fragment in body["error"], f"{fragment!r} not in {body['error']!r}"
    return body["error"]


def insert_model(app, model: str, features: list[str], label: str, coefficients: list[float], *,
                 scaling: dict | None = None, metrics: dict | None = None, finish: bool = True) -> str:
    """A model as training leaves it in the store: created, then finished with its result."""
    store = app.extensions["model_store"]
    model_id = store.create({"model": model, "features": list(features), "label": label, "optimizer": "exact",
                             "standardize": scaling is not None})
    if finish:
        result: dict[str, Any] = {
            "coefficients": dict(zip(["intercept", *features], map(float, coefficients), strict=True)),
            "stop_reason": "exact: gradient is zero",
            "data_owners": ["owner_a", "owner_b"],
            "metrics": metrics,
        }
        if scaling is not None:
            means = np.array([scaling["means"][f] for f in features])
            stds = np.array([scaling["stds"][f] for f in features])
            slopes = np.array(coefficients[1:]) * stds
            result["scaling"] = scaling
            intercept = coefficients[0] + float(np.array(coefficients[1:]) @ means)
            result["standardized_coefficients"] = dict(zip(["intercept", *features], [intercept, *slopes], strict=True))
        store.finish(model_id, result)
    return model_id


def binary_rows(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = np.column_stack([
        rng.uniform(600, 4500, count).round(1),
        rng.integers(1950, 2021, count).astype(float),
        (rng.random(count) < 0.3).astype(float),
    ])
    probability = sigmoid(scores(SALE_COEFFICIENTS, table) + rng.normal(0, 1, count))
    labels = (rng.random(count) < probability).astype(float)
    return table, labels


@pytest.fixture
def client(model_creator_app):
    return model_creator_app.test_client()


@pytest.fixture
def linear_id(model_creator_app) -> str:
    return insert_model(model_creator_app, "linear_regression", DIABETES, "progression", DIABETES_COEFFICIENTS,
                        metrics={"mse": 3000.0})


@pytest.fixture
def binary_test_csv(tmp_path) -> Path:
    """The model creator's test data for a 0/1 label: columns in another order plus an unused one."""
    table, labels = binary_rows(7, 120)
    path = tmp_path / "binary_test.csv"
    columns = ["has_pool", SALE_LABEL, "sqft", "listing_id", "year_built"]
    data = np.column_stack([table[:, 2], labels, table[:, 0], np.arange(len(labels)) + 1000, table[:, 1]])
    path.write_text(to_csv(columns, data), encoding="utf-8")
    return path


def another_model_creator(like, state_dir: Path, test_data: Path):
    """A model creator configured as ``like`` but with its own state directory and test data."""
    from model_creator import create_app

    return create_app({"TESTING": True, "STATE_DIR": str(state_dir), "KEY_BITS": 1024, "TEST_ONLY_SMALL_KEYS": True,
                       "COORDINATOR_URL": UNREACHABLE, "TEST_DATA": str(test_data), "REQUEST_TIMEOUT": 5,
                       **{name: getattr(like.extensions["settings"], name.lower()) for name in SECRET_SETTINGS}})


@pytest.fixture
def binary_app(model_creator_app, tmp_path, binary_test_csv):
    return another_model_creator(model_creator_app, tmp_path / "binary_model_creator", binary_test_csv)


def logistic_scaling() -> dict[str, dict[str, float]]:
    return {"means": {"sqft": 2550.0, "year_built": 1985.0, "has_pool": 0.3},
            "stds": {"sqft": 1120.0, "year_built": 20.5, "has_pool": 0.458}}


@pytest.fixture
def logistic_id(binary_app) -> str:
    return insert_model(binary_app, "logistic_regression", SALE_FEATURES, SALE_LABEL, SALE_COEFFICIENTS,
                        scaling=logistic_scaling(), metrics={"accuracy": 0.7, "log_loss": 0.6, "auc": 0.75})


# --------------------------------------------------------------------------------------------
# POST /prediction with JSON rows
# --------------------------------------------------------------------------------------------

def test_rows_of_a_regression_model_are_predicted(client, linear_id):
    table = read_csv(SHIPPED / "test.csv", DIABETES)[:5]
    rows = [dict(zip(DIABETES, map(float, row), strict=True)) for row in table]
    rows[1] = dict(reversed(list(rows[1].items())))  # key order does not matter
    rows[2] = {k: int(v) if float(v).is_integer() else v for k, v in rows[2].items()}  # integers are numbers too
    response = client.post("/prediction", json={"model_id": linear_id, "rows": rows})
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["model_id"] == linear_id
    assert answer["model"] == "linear_regression"
    assert answer["rows"] == 5
    np.testing.assert_allclose(answer["predictions"], scores(DIABETES_COEFFICIENTS, table), rtol=1e-12)
    assert "mse" not in answer and "labels" not in answer and "probabilities" not in answer


def test_rows_of_a_logistic_model_give_probabilities_and_classes(binary_app, logistic_id):
    table, _ = binary_rows(8, 25)
    rows = [dict(zip(SALE_FEATURES, map(float, row), strict=True)) for row in table]
    response = binary_app.test_client().post("/prediction", json={"model_id": logistic_id, "rows": rows})
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    expected = sigmoid(scores(SALE_COEFFICIENTS, table))
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-12)
    assert answer["predictions"] == [int(p >= 0.5) for p in expected]
    assert 0 < sum(answer["predictions"]) < 25, "the check needs both classes among the rows"
    assert answer["model"] == "logistic_regression" and answer["rows"] == 25


def test_without_model_id_the_latest_finished_model_predicts(model_creator_app, client, linear_id):
    newer = insert_model(model_creator_app, "ridge", ["bmi", "bp"], "progression", [1.0, 2.0, 3.0])
    insert_model(model_creator_app, "linear_regression", ["bmi"], "progression", [0.0, 1.0], finish=False)
    answer = client.post("/prediction", json={"rows": [{"bmi": 10.0, "bp": 100.0}]}).get_json()
    assert answer["model_id"] == newer
    assert answer["predictions"] == [321.0]


# Rows the document allows whose feature names are not the stored model's: only it can tell.
MODEL_DEPENDENT_ROW_CASES = {"missing-feature", "missing-in-second-row"}


@pytest.mark.parametrize(("rows", "fragments"), [
    pytest.param([{f: 1.0 for f in DIABETES if f != "bmi"}], ["body.rows[0]", "missing feature(s) 'bmi'"],
                 id="missing-feature"),
    pytest.param([{f: 1.0 for f in DIABETES}, {**{f: 1.0 for f in DIABETES if f not in ("s1", "s6")}, "zz": 1,
                                               "progression": 3}],
                 ["body.rows[1]", "missing feature(s) 's1', 's6'"],
                 id="missing-in-second-row"),
    pytest.param([{**{f: 1.0 for f in DIABETES}, "age": "67"}], ["body.rows[0].age", "expected a number"],
                 id="string-value"),
    pytest.param([{**{f: 1.0 for f in DIABETES}, "sex": True}], ["body.rows[0].sex", "expected a number"],
                 id="bool-value"),
    pytest.param([{**{f: 1.0 for f in DIABETES}, "s3": None}], ["body.rows[0].s3", "expected a number"],
                 id="null-value"),
    pytest.param([{f: 1.0 for f in DIABETES}, [1.0] * 10], ["body.rows[1]", "expected an object"], id="row-is-list"),
    pytest.param([], ["body.rows", "at least 1 item"], id="no-rows"),
    pytest.param({"age": 1.0}, ["body.rows", "expected a list"], id="rows-is-object"),
    pytest.param(None, ["body.rows", "required"], id="rows-missing"),
])
def test_bad_rows_are_refused_naming_what_is_wrong(client, request, linear_id, rows, fragments):
    """A 400 for rows the document rules out; a 422 for rows it allows that miss the model's features."""
    body = {"model_id": linear_id}
    if rows is not None:
        body["rows"] = rows
    status = 422 if request.node.callspec.id in MODEL_DEPENDENT_ROW_CASES else 400
    assert_error(client.post("/prediction", json=body), status, *fragments)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_400(client, linear_id, literal):
    row = ", ".join(f'"{f}": {literal if f == "bp" else "1.5"}' for f in DIABETES)
    raw = f'{{"model_id": "{linear_id}", "rows": [{{{row}}}]}}'
    response = client.post("/prediction", data=raw, content_type="application/json")
    assert_error(response, 400, "body.rows[0].bp", "expected a finite number")


def test_predictions_beyond_the_float_range_are_422(model_creator_app, client):
    huge = insert_model(model_creator_app, "linear_regression", ["bmi"], "progression", [0.0, 2.0**128])
    response = client.post("/prediction", json={"model_id": huge, "rows": [{"bmi": 1e300}]})
    assert_error(response, 422, huge, "exceed the range of floating point")
    text = "bmi\n1e300\n"
    response = client.post(f"/prediction?model_id={huge}", data=text, content_type="text/csv")
    assert_error(response, 422, "exceed the range of floating point")


def test_model_id_errors(model_creator_app, client, linear_id):
    assert_error(client.post("/prediction", json={"model_id": 7, "rows": [{"bmi": 1.0}]}), 400, "body.model_id")
    assert_error(client.post("/prediction", json={"model_id": "nope", "rows": [{"bmi": 1.0}]}), 404, "nope")
    pending = insert_model(model_creator_app, "linear_regression", ["bmi"], "progression", [0.0, 1.0], finish=False)
    assert_error(client.post("/prediction", json={"model_id": pending, "rows": [{"bmi": 1.0}]}), 409, pending,
                 "pending")


def test_no_finished_model_yet_is_404(client):
    assert_error(client.post("/prediction", json={"rows": [{"bmi": 1.0}]}), 404, "no model has finished")
    assert_error(client.get("/prediction"), 404, "no model has finished")


# --------------------------------------------------------------------------------------------
# POST /prediction with CSV
# --------------------------------------------------------------------------------------------

def test_csv_body_without_label_gives_predictions_only(client, linear_id):
    table = read_csv(SHIPPED / "test.csv", DIABETES)
    order = DIABETES[::-1]
    text = to_csv(order, table[:, [DIABETES.index(c) for c in order]])
    response = client.post(f"/prediction?model_id={linear_id}", data=text, content_type="text/csv")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["rows"] == len(table)
    np.testing.assert_allclose(answer["predictions"], scores(DIABETES_COEFFICIENTS, table), rtol=1e-12)
    assert "mse" not in answer and "labels" not in answer


def test_csv_body_with_label_adds_metrics(client, linear_id):
    table = read_csv(SHIPPED / "test.csv", [*DIABETES, "progression"])
    text = (SHIPPED / "test.csv").read_text(encoding="utf-8")
    response = client.post("/prediction", query_string={"model_id": linear_id}, data=text,
                           content_type="text/csv; charset=utf-8")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    expected = scores(DIABETES_COEFFICIENTS, table[:, :-1])
    assert answer["mse"] == pytest.approx(float(np.mean((expected - table[:, -1]) ** 2)), rel=1e-12)
    assert answer["labels"] == table[:, -1].tolist()
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-12)


def test_multipart_upload_of_a_logistic_csv_with_label(binary_app, logistic_id, binary_test_csv):
    table, labels = binary_rows(9, 60)
    text = to_csv([SALE_LABEL, *SALE_FEATURES[::-1]], np.column_stack([labels, table[:, ::-1]]))
    response = binary_app.test_client().post("/prediction", data={
        "model_id": logistic_id, "file": (io.BytesIO(text.encode()), "rows.csv"),
    }, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    reference = classification_reference(SALE_COEFFICIENTS, table, labels)
    assert answer["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-12)
    assert answer["log_loss"] == pytest.approx(reference["log_loss"], rel=1e-9)
    assert answer["auc"] == pytest.approx(reference["auc"], abs=1e-12)
    np.testing.assert_allclose(answer["probabilities"], sigmoid(scores(SALE_COEFFICIENTS, table)), rtol=1e-12)
    assert answer["labels"] == labels.tolist()


def test_multipart_upload_without_label_uses_the_latest_model(binary_app, logistic_id):
    table, _ = binary_rows(10, 12)
    text = to_csv(SALE_FEATURES, table)
    response = binary_app.test_client().post("/prediction", data={"file": (io.BytesIO(text.encode()), "x.csv")},
                                             content_type="multipart/form-data")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["model_id"] == logistic_id
    assert len(answer["probabilities"]) == len(answer["predictions"]) == 12
    assert "accuracy" not in answer


@pytest.mark.parametrize(("text", "fragments"), [
    pytest.param("age,sex,bmi,bp,s1,s2,s3,s4,s5\n1,2,3,4,5,6,7,8,9\n", ["missing column", "'s6'"], id="missing-column"),
    pytest.param("age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n1,2,3,4,5,6,7,8,9,10\n1,2,x,4,5,6,7,8,9,10\n",
                 ["row 2", "column 'bmi'", "value is not a number"], id="bad-value"),
    pytest.param("age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n1,2,3,4,5,6,7,8,9,nan\n", ["row 1", "column 's6'"], id="nan"),
    pytest.param("age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n", ["no rows"], id="header-only"),
    pytest.param("", ["empty"], id="empty"),
])
def test_bad_csv_is_422_naming_the_problem(client, linear_id, text, fragments):
    """Any text is a CSV by the document: one that cannot serve the model is a 422."""
    response = client.post(f"/prediction?model_id={linear_id}", data=text, content_type="text/csv")
    assert_error(response, 422, *fragments)
    upload = client.post("/prediction", data={"model_id": linear_id, "file": (io.BytesIO(text.encode()), "up.csv")},
                         content_type="multipart/form-data")
    assert_error(upload, 422, *fragments)


def test_csv_that_is_not_utf8_is_422(client, linear_id):
    response = client.post(f"/prediction?model_id={linear_id}", data=b"age\xff\xfe\n1\n", content_type="text/csv")
    assert_error(response, 422, "not UTF-8")
    latin1 = (io.BytesIO(b"age\xff\xfe\n1\n"), "up.csv")
    upload = client.post("/prediction", data={"model_id": linear_id, "file": latin1}, content_type="multipart/form-data")
    assert_error(upload, 422, "not UTF-8")


def test_multipart_without_a_file_field_is_400(client, linear_id):
    response = client.post("/prediction", data={"model_id": linear_id, "other": (io.BytesIO(b"a\n1\n"), "a.csv")},
                           content_type="multipart/form-data")
    assert_error(response, 400, "form.file")


# --------------------------------------------------------------------------------------------
# GET /prediction on the model creator's test data
# --------------------------------------------------------------------------------------------

def test_get_prediction_of_a_regression_model(client, linear_id):
    answer = client.get(f"/prediction?model_id={linear_id}").get_json()
    table = read_csv(SHIPPED / "test.csv", [*DIABETES, "progression"])
    expected = scores(DIABETES_COEFFICIENTS, table[:, :-1])
    assert answer["model_id"] == linear_id and answer["rows"] == len(table)
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-12)
    assert answer["mse"] == pytest.approx(float(np.mean((expected - table[:, -1]) ** 2)), rel=1e-12)
    assert client.get("/prediction").get_json() == answer


def test_get_prediction_of_a_logistic_model_reports_accuracy_log_loss_and_auc(binary_app, logistic_id,
                                                                              binary_test_csv):
    answer = binary_app.test_client().get("/prediction", query_string={"model_id": logistic_id}).get_json()
    table = read_csv(binary_test_csv, SALE_FEATURES)
    labels = read_csv(binary_test_csv, [SALE_LABEL])[:, 0]
    reference = classification_reference(SALE_COEFFICIENTS, table, labels)
    assert 0.5 < reference["auc"] < 1.0
    assert answer["accuracy"] == pytest.approx(reference["accuracy"], abs=1e-12)
    assert answer["log_loss"] == pytest.approx(reference["log_loss"], rel=1e-9)
    assert answer["auc"] == pytest.approx(reference["auc"], abs=1e-12)
    expected = sigmoid(scores(SALE_COEFFICIENTS, table))
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-12)
    assert answer["predictions"] == [int(p >= 0.5) for p in expected]
    assert answer["labels"] == labels.tolist()


def test_get_prediction_of_a_pending_model_is_409(model_creator_app, client):
    pending = insert_model(model_creator_app, "ridge", ["bmi"], "progression", [0.0, 1.0], finish=False)
    assert_error(client.get(f"/prediction?model_id={pending}"), 409, "pending")


# --------------------------------------------------------------------------------------------
# GET /models
# --------------------------------------------------------------------------------------------

def test_models_are_listed_with_status_type_features_metrics_and_increasing_versions(model_creator_app, client):
    store = model_creator_app.extensions["model_store"]
    first = insert_model(model_creator_app, "linear_regression", DIABETES, "progression", DIABETES_COEFFICIENTS,
                         metrics={"mse": 2900.5})
    second = insert_model(model_creator_app, "ridge", ["bmi", "s5"], "progression", [1.0, 2.0, 3.0], finish=False)
    third = insert_model(model_creator_app, "ridge", ["bp"], "progression", [0.0, 1.0], finish=False)
    store.fail(third, "coordinator: no data owner answered")
    fourth = insert_model(model_creator_app, "logistic_regression", SALE_FEATURES, SALE_LABEL,
                          SALE_COEFFICIENTS, scaling=logistic_scaling(), metrics={"accuracy": 0.8})

    listed = client.get("/models").get_json()["models"]
    assert [m["model_id"] for m in listed] == [first, second, third, fourth]
    assert [m["status"] for m in listed] == ["finished", "pending", "failed", "finished"]
    assert [m["model"] for m in listed] == ["linear_regression", "ridge", "ridge", "logistic_regression"]
    assert [m["features"] for m in listed] == [DIABETES, ["bmi", "s5"], ["bp"], SALE_FEATURES]
    assert listed[0]["metrics"] == {"mse": 2900.5}
    assert listed[0]["label"] == "progression"
    assert listed[2]["error"] == "coordinator: no data owner answered"
    assert listed[3]["metrics"] == {"accuracy": 0.8}
    versions = [m["version"] for m in listed]
    assert all(isinstance(v, int) for v in versions)
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert all("history" not in m for m in listed)
    shown = client.get(f"/model/{first}").get_json()
    assert shown["version"] == versions[0] and shown["history"] == []


# --------------------------------------------------------------------------------------------
# Export and import
# --------------------------------------------------------------------------------------------

def export(client, model_id: str) -> dict[str, Any]:
    response = client.get(f"/model/{model_id}/export")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_export_is_self_contained_json(binary_app, logistic_id):
    exported = export(binary_app.test_client(), logistic_id)
    assert exported["format"] == "federated_trainer.model/1"
    assert exported["model_id"] == logistic_id
    assert exported["model"] == "logistic_regression"
    assert exported["features"] == SALE_FEATURES and exported["label"] == SALE_LABEL
    assert exported["coefficients"] == dict(zip(["intercept", *SALE_FEATURES], SALE_COEFFICIENTS, strict=True))
    assert exported["scaling"] == logistic_scaling()
    assert set(exported["standardized_coefficients"]) == {"intercept", *SALE_FEATURES}
    training = exported["training"]
    assert training["request"]["model"] == "logistic_regression"
    assert training["stop_reason"] == "exact: gradient is zero"
    assert training["data_owners"] == ["owner_a", "owner_b"]
    assert training["metrics"] == {"accuracy": 0.7, "log_loss": 0.6, "auc": 0.75}
    assert isinstance(training["rounds"], int)
    assert training["created_at"] <= training["finished_at"]
    json.dumps(exported, allow_nan=False)  # plain JSON, nothing special


def test_export_of_an_unfinished_or_unknown_model(model_creator_app, client):
    pending = insert_model(model_creator_app, "ridge", ["bmi"], "progression", [0.0, 1.0], finish=False)
    assert_error(client.get(f"/model/{pending}/export"), 409, "pending")
    assert_error(client.get("/model/doesnotexist/export"), 404, "doesnotexist")


def test_import_makes_a_new_finished_model_with_identical_predictions(binary_app, logistic_id):
    client = binary_app.test_client()
    exported = export(client, logistic_id)
    response = client.post("/models/import", json=exported)
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == "finished" and body["model_id"] != logistic_id
    imported = client.get(f"/model/{body['model_id']}").get_json()
    assert imported["status"] == "finished"
    assert imported["coefficients"] == exported["coefficients"]
    assert imported["scaling"] == exported["scaling"]
    assert imported["standardized_coefficients"] == exported["standardized_coefficients"]
    assert imported["model"] == "logistic_regression" and imported["features"] == SALE_FEATURES
    original_version = client.get(f"/model/{logistic_id}").get_json()["version"]
    assert imported["version"] > original_version

    rows = [dict(zip(SALE_FEATURES, map(float, row), strict=True)) for row in binary_rows(11, 20)[0]]
    before = client.post("/prediction", json={"model_id": logistic_id, "rows": rows}).get_json()
    after = client.post("/prediction", json={"model_id": body["model_id"], "rows": rows}).get_json()
    assert after["probabilities"] == before["probabilities"]
    assert after["predictions"] == before["predictions"]
    # The imported model is now the latest finished one, and exports again the same way.
    assert client.get("/prediction").get_json()["model_id"] == body["model_id"]
    again = export(client, body["model_id"])
    assert again["coefficients"] == exported["coefficients"] and again["features"] == exported["features"]


def test_model_moves_to_another_model_creator_with_identical_predictions(binary_app, logistic_id, tmp_path,
                                                                         binary_test_csv):
    other = another_model_creator(binary_app, tmp_path / "elsewhere", binary_test_csv)
    source, target = binary_app.test_client(), other.test_client()
    response = target.post("/models/import", json=export(source, logistic_id))
    assert response.status_code == 201, response.get_data(as_text=True)
    new_id = response.get_json()["model_id"]
    assert [m["model_id"] for m in target.get("/models").get_json()["models"]] == [new_id]

    here = source.get(f"/prediction?model_id={logistic_id}").get_json()
    there = target.get(f"/prediction?model_id={new_id}").get_json()
    for name in ("accuracy", "log_loss", "auc", "probabilities", "predictions", "labels", "rows"):
        assert there[name] == here[name], name
    text = to_csv(SALE_FEATURES, binary_rows(12, 15)[0])
    csv_here = source.post(f"/prediction?model_id={logistic_id}", data=text, content_type="text/csv").get_json()
    csv_there = target.post(f"/prediction?model_id={new_id}", data=text, content_type="text/csv").get_json()
    assert csv_there["probabilities"] == csv_here["probabilities"]


def test_models_survive_a_restart(model_creator_app, client, linear_id):
    from model_creator import create_app

    before = client.get(f"/prediction?model_id={linear_id}").get_json()
    listed_before = client.get("/models").get_json()["models"]
    settings = model_creator_app.extensions["settings"]
    restarted = create_app({name: getattr(settings, name.lower()) for name in
                            ("TESTING", "STATE_DIR", "KEY_BITS", "TEST_ONLY_SMALL_KEYS", "COORDINATOR_URL", "TEST_DATA", "REQUEST_TIMEOUT",
                             *SECRET_SETTINGS)})
    again = restarted.test_client()
    assert again.get(f"/prediction?model_id={linear_id}").get_json() == before
    shown = again.get(f"/model/{linear_id}").get_json()
    assert shown["status"] == "finished"
    assert shown["coefficients"] == dict(zip(["intercept", *DIABETES], DIABETES_COEFFICIENTS, strict=True))
    listed_after = again.get("/models").get_json()["models"]
    assert listed_after == listed_before
    assert again.get(f"/model/{linear_id}/export").get_json() == client.get(f"/model/{linear_id}/export").get_json()


def valid_export() -> dict[str, Any]:
    return {
        "format": "federated_trainer.model/1",
        "model_id": "abc",
        "model": "ridge",
        "features": ["bmi", "bp"],
        "label": "progression",
        "coefficients": {"intercept": 1.0, "bmi": 2.0, "bp": -0.5},
        "training": {"request": {"model": "ridge", "optimizer": "exact"}, "stop_reason": "exact: gradient is zero"},
    }


def _set(path: str, value: Any):
    def apply(body: dict[str, Any]) -> dict[str, Any]:
        *parents, name = path.split(".")
        target = body
        for parent in parents:
            target = target[parent]
        if value is _DELETE:
            del target[name]
        else:
            target[name] = value
        return body
    return apply


_DELETE = object()


@pytest.mark.parametrize(("change", "fragment"), [
    pytest.param(_set("format", "federated_trainer.model/2"), "body.format", id="wrong-format"),
    pytest.param(_set("format", _DELETE), "body.format", id="no-format"),
    pytest.param(_set("model", "svm"), "body.model: unknown model 'svm'", id="unknown-model"),
    pytest.param(_set("model", _DELETE), "model", id="no-model"),
    pytest.param(_set("features", "bmi"), "body.features", id="features-not-list"),
    pytest.param(_set("features", []), "body.features", id="no-features"),
    pytest.param(_set("features", ["bmi", 3]), "body.features", id="feature-not-string"),
    pytest.param(_set("label", _DELETE), "label", id="no-label"),
    pytest.param(_set("coefficients", _DELETE), "body.coefficients", id="no-coefficients"),
    pytest.param(_set("coefficients", [1.0, 2.0, -0.5]), "body.coefficients", id="coefficients-list"),
    pytest.param(_set("coefficients.bp", _DELETE), "body: coefficients: expected a number for each of",
                 id="missing-coefficient"),
    pytest.param(_set("coefficients.intercept", _DELETE), "intercept", id="missing-intercept"),
    pytest.param(_set("coefficients.s5", 1.0), "body: coefficients: expected a number for each of",
                 id="extra-coefficient"),
    pytest.param(_set("coefficients.bmi", "2.0"), "body.coefficients", id="string-coefficient"),
    pytest.param(_set("coefficients.bmi", True), "body.coefficients", id="bool-coefficient"),
    pytest.param(_set("coefficients.bmi", None), "body.coefficients", id="null-coefficient"),
    pytest.param(_set("coefficients.bmi", float("nan")), "body.coefficients", id="nan-coefficient"),
    pytest.param(_set("coefficients.bp", float("inf")), "body.coefficients", id="infinite-coefficient"),
    pytest.param(_set("coefficients.intercept", float("-inf")), "body.coefficients", id="minus-infinity"),
    # Training refuses repeated feature names; an import must too, or every prediction counts the
    # repeated feature's coefficient once per repetition.
    pytest.param(_set("features", ["bmi", "bp", "bmi"]), "body.features", id="repeated-feature"),
    # A feature called "intercept" and the intercept would share one coefficient.
    pytest.param(lambda body: {**body, "features": ["intercept", "bp"],
                               "coefficients": {"intercept": 1.0, "bp": -0.5}},
                 "intercept", id="feature-named-intercept"),
])
def test_bad_imports_are_refused_and_store_nothing(request, model_creator_app, client, linear_id, change, fragment):
    listed_before = client.get("/models").get_json()["models"]
    body = change(copy.deepcopy(valid_export()))
    response = client.post("/models/import", data=json.dumps(body), content_type="application/json")
    # Values the document allows but that contradict each other are a 422; the rest a 400.
    inconsistent = {"missing-coefficient", "missing-intercept", "extra-coefficient", "feature-named-intercept"}
    assert_error(response, 422 if request.node.callspec.id in inconsistent else 400, fragment)
    assert client.get("/models").get_json()["models"] == listed_before
    assert client.get("/prediction").get_json()["model_id"] == linear_id


@pytest.mark.parametrize("raw", [b"[1, 2]", b"{not json", b'"federated_trainer.model/1"'])
def test_import_of_something_that_is_not_an_export_is_400(client, raw):
    response = client.post("/models/import", data=raw, content_type="application/json")
    assert_error(response, 400, "body")
    assert client.get("/models").get_json()["models"] == []


def test_the_valid_export_used_above_imports(client):
    """The baseline of the bad-import cases is itself accepted."""
    response = client.post("/models/import", json=valid_export())
    assert response.status_code == 201, response.get_data(as_text=True)
    model_id = response.get_json()["model_id"]
    answer = client.post("/prediction", json={"model_id": model_id, "rows": [{"bmi": 3.0, "bp": 4.0}]}).get_json()
    assert answer["predictions"] == [1.0 + 6.0 - 2.0]
    assert math.isfinite(client.get(f"/prediction?model_id={model_id}").get_json()["mse"])
