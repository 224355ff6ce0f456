"""The model creator's API: training requests, models, predictions, import, and the
coordinator's callbacks.

A model "in flight" is started for real against a stub coordinator on a loopback port, with the
session's small key placed in the state directory, so the callbacks can be exercised with
ciphertexts the test makes itself.
"""

from __future__ import annotations

import json
import os
import stat
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from api_support import (
    MISSING,
    StubPeer,
    as_coordinator,
    assert_json_error,
    ciphertext_cases,
    client_with,
    encrypted,
    patched,
)
from support import DIABETES_FEATURES as FEATURES
from support import DIABETES_LABEL as LABEL
from support import SHIPPED, TOKENS, UNREACHABLE, secrets_for

from common.crypto.packing import pack_plain
from common.protocol.messages import RoundHistory, TrainingOptions
from common.protocol.spec import JobSpec
from common.protocol.wire import encode_ciphertexts
from model_creator import create_app
from model_creator.keystore import KEY_FILE
from model_creator.training import TrainingRequest

# The secrets a model creator takes (the coordinator's enrolment secret is not one of them).
MODEL_CREATOR_SECRETS = secrets_for("MODEL_CREATOR_TOKEN", "COORDINATOR_TOKEN")


def finished_result(intercept: float = 152.0) -> dict:
    return {"coefficients": {"intercept": intercept, **{f: 0.25 * (i + 1) for i, f in enumerate(FEATURES)}},
            "stop_reason": "converged", "data_owners": ["owner-a", "owner-b"], "metrics": {"mse": 3000.0}}


def insert_finished(app) -> str:
    """A finished model, put straight into the store."""
    store = app.extensions["model_store"]
    model_id = store.create(TrainingRequest.of(TrainingOptions(), app.extensions["settings"]).to_json())
    store.finish(model_id, finished_result())
    return model_id


def insert_failed(app) -> str:
    store = app.extensions["model_store"]
    model_id = store.create(TrainingRequest.of(TrainingOptions(), app.extensions["settings"]).to_json())
    store.fail(model_id, "round 3: the coordinator gave up")
    return model_id


# -- POST /model ---------------------------------------------------------------------------------

MODEL_CASES = [
    pytest.param({"foo": 1}, 400, "body.foo: unknown field", id="unknown-field"),
    pytest.param({"features": FEATURES, "lable": LABEL}, 400, "body.lable: unknown field", id="misspelt-field"),
    pytest.param({"model": "svm"}, 400, "body.model: unknown model 'svm'", id="model-unknown"),
    pytest.param({"model": None}, 400, "body.model: expected a string", id="model-null"),
    pytest.param({"model": 3}, 400, "body.model", id="model-int"),
    pytest.param({"model": ["linear_regression"]}, 400, "body.model", id="model-list"),
    pytest.param({"model": {"name": "ridge"}}, 400, "body.model", id="model-object"),
    pytest.param({"optimizer": "sgd"}, 400, "body.optimizer: Input should be 'exact', 'gd', 'momentum' or 'adam'",
                 id="optimizer-unknown"),
    pytest.param({"optimizer": ["exact"]}, 400, "body.optimizer", id="optimizer-list"),
    pytest.param({"optimizer": True}, 400, "body.optimizer", id="optimizer-bool"),
    pytest.param({"features": "age"}, 400, "body.features", id="features-string"),
    pytest.param({"features": []}, 400, "body.features", id="features-empty"),
    pytest.param({"features": ["age", 1]}, 400, "body.features", id="features-int-item"),
    pytest.param({"features": ["age", "age"]}, 400, "body.features: names must not repeat", id="features-repeat"),
    pytest.param({"features": None}, 400, "body.features", id="features-null"),
    pytest.param({"label": 7}, 400, "body.label", id="label-int"),
    pytest.param({"label": ""}, 400, "body.label", id="label-empty"),
    pytest.param({"features": ["age", "bmi"], "label": "bmi"}, 422, "body: label 'bmi' is also listed as a feature",
                 id="label-is-feature"),
    pytest.param({"model": "logistic_regression"}, 422,
                 "body.label: the model creator's test data: row 1, column 'progression': value is not a binary label",
                 id="logistic-on-a-label-the-test-data-shows-is-not-binary"),
    pytest.param({"bounds": {"glucose": [0, 1]}}, 422, "body.bounds: 'glucose' is neither a feature nor the label",
                 id="bounds-of-another-column"),
    pytest.param({"bounds": {"age": [80, 20]}}, 422, "the low bound 80 is not below the high bound 20",
                 id="bounds-reversed"),
    pytest.param({"bounds": {"age": [0, 1, 2]}}, 400, "body.bounds.age", id="bounds-three-numbers"),
    pytest.param({"bounds": {"age": [0, float("nan")]}}, 400, "body.bounds", id="bounds-nan"),
    pytest.param({"name": ""}, 400, "body.name", id="name-empty"),
    pytest.param({"learning_rate": "fast"}, 400, "body.learning_rate", id="learning-rate-string"),
    pytest.param({"learning_rate": True}, 400, "body.learning_rate", id="learning-rate-bool"),
    pytest.param({"learning_rate": 0}, 400, "body.learning_rate", id="learning-rate-zero"),
    pytest.param({"learning_rate": 1e7}, 400, "body.learning_rate", id="learning-rate-too-big"),
    pytest.param({"learning_rate": 10**400}, 400, "body.learning_rate", id="learning-rate-huge-int"),
    pytest.param({"max_rounds": 10**400}, 400, "body.max_rounds", id="max-rounds-huge-int"),
    pytest.param({"max_rounds": True}, 400, "body.max_rounds", id="max-rounds-bool"),
    pytest.param({"max_rounds": 0}, 400, "body.max_rounds", id="max-rounds-zero"),
    pytest.param({"max_rounds": "10"}, 400, "body.max_rounds", id="max-rounds-string"),
    pytest.param({"max_rounds": 2.5}, 400, "body.max_rounds", id="max-rounds-float"),
    pytest.param({"max_rounds": None}, 400, "body.max_rounds", id="max-rounds-null"),
    pytest.param({"min_data_owners": 0}, 400, "body.min_data_owners", id="min-owners-zero"),
    pytest.param({"min_data_owners": 1001}, 400, "body.min_data_owners", id="min-owners-too-many"),
    pytest.param({"min_data_owners": True}, 400, "body.min_data_owners", id="min-owners-bool"),
    pytest.param({"max_abs_weight": 0.5}, 400, "body.max_abs_weight", id="max-weight-below-one"),
    pytest.param({"max_abs_weight": 2.0**129}, 400, "body.max_abs_weight", id="max-weight-too-big"),
    pytest.param({"max_abs_weight": "big"}, 400, "body.max_abs_weight", id="max-weight-string"),
    pytest.param({"alpha": 1.0}, 400, "body.alpha: model 'linear_regression' takes no penalty", id="alpha-unpenalised"),
    pytest.param({"model": "ridge", "alpha": -1}, 400, "body.alpha", id="alpha-negative"),
    pytest.param({"model": "ridge", "alpha": False}, 400, "body.alpha", id="alpha-bool"),
    pytest.param({"standardize": "yes"}, 400, "body.standardize", id="standardize-string"),
    pytest.param({"standardize": 1}, 400, "body.standardize", id="standardize-int"),
    pytest.param({"tolerance": -1}, 400, "body.tolerance", id="tolerance-negative"),
    pytest.param({"relative_tolerance": 2}, 400, "body.relative_tolerance", id="relative-tolerance-too-big"),
    pytest.param({"protocol": "two_shot"}, 400, "body.protocol: Input should be 'gradients' or 'one_shot'",
                 id="protocol-unknown"),
    pytest.param({"protocol": "one_shot", "optimizer": "adam"}, 422,
                 "body: protocol: 'one_shot' is solved exactly; it takes no other optimizer than 'exact'",
                 id="one-shot-with-adam"),
    pytest.param({"randomness": "fast"}, 400, "body.randomness: Input should be 'standard' or 'djn'",
                 id="randomness-unknown"),
    pytest.param({"randomness": None}, 400, "body.randomness", id="randomness-null"),
]

RAW_MODEL_CASES = [
    pytest.param(b'{"learning_rate": NaN}', "body.learning_rate", id="learning-rate-nan"),
    pytest.param(b'{"max_abs_weight": Infinity}', "body.max_abs_weight", id="max-weight-infinity"),
    pytest.param(b'{"model": "linear_regression",}', "body: malformed JSON", id="trailing-comma"),
    pytest.param(b'["linear_regression"]', "body: expected a JSON object", id="array"),
]


@pytest.mark.parametrize(("payload", "status", "fragment"), MODEL_CASES)
def test_bad_training_request(model_creator_app, payload, status, fragment):
    client = model_creator_app.test_client()
    assert_json_error(client.post("/model", json=payload), status, fragment)
    assert client.get("/models").get_json() == {"models": []}


@pytest.mark.parametrize(("raw", "fragment"), RAW_MODEL_CASES)
def test_bad_training_request_body(model_creator_app, raw, fragment):
    client = model_creator_app.test_client()
    assert_json_error(client.post("/model", data=raw, content_type="application/json"), 400, fragment)
    assert client.get("/models").get_json() == {"models": []}


# -- models and predictions ----------------------------------------------------------------------

def test_unknown_model_is_a_404(model_creator_app):
    client = model_creator_app.test_client()
    assert_json_error(client.get("/model/0123456789abcdef"), 404, "model 0123456789abcdef does not exist")
    assert_json_error(client.get("/model/nope/export"), 404, "model nope does not exist")
    assert_json_error(client.get("/prediction?model_id=nope"), 404, "model nope does not exist")
    assert_json_error(client.post("/prediction", json={"model_id": "nope", "rows": [{"age": 1}]}), 404,
                      "model nope does not exist")


def test_prediction_without_a_finished_model_is_a_404(model_creator_app):
    client = model_creator_app.test_client()
    fragment = "no model has finished training yet"
    assert_json_error(client.get("/prediction"), 404, fragment)
    insert_failed(model_creator_app)
    assert_json_error(client.get("/prediction"), 404, fragment)
    rows = {"rows": [dict.fromkeys(FEATURES, 1.0)]}
    assert_json_error(client.post("/prediction", json=rows), 404, fragment)


def test_prediction_of_an_unfinished_model_is_a_conflict(model_creator_app):
    failed = insert_failed(model_creator_app)
    client = model_creator_app.test_client()
    assert_json_error(client.get(f"/prediction?model_id={failed}"), 409, f"model {failed} is failed, not finished")
    assert_json_error(client.get(f"/model/{failed}/export"), 409, f"model {failed} is failed, not finished")


def test_columns_a_model_does_not_use_are_ignored_in_rows_and_csv(model_creator_app):
    model_id = insert_finished(model_creator_app)
    client = model_creator_app.test_client()
    row = dict.fromkeys(FEATURES, 1.0)
    plain = client.post("/prediction", json={"model_id": model_id, "rows": [row]}).get_json()
    extra = client.post("/prediction", json={"model_id": model_id, "rows": [{**row, "glucose": 5, "clinic": 2}]})
    assert extra.status_code == 200 and extra.get_json()["predictions"] == plain["predictions"]
    header = ",".join(["clinic", *FEATURES])
    csv_body = f"{header}\n7,{','.join('1' for _ in FEATURES)}\n"
    from_csv = client.post(f"/prediction?model_id={model_id}", data=csv_body, content_type="text/csv")
    assert from_csv.status_code == 200 and from_csv.get_json()["predictions"] == plain["predictions"]


def test_prediction_of_a_finished_model(model_creator_app):
    model_id = insert_finished(model_creator_app)
    client = model_creator_app.test_client()
    shown = client.get(f"/model/{model_id}")
    assert shown.status_code == 200
    assert shown.get_json()["status"] == "finished"
    assert shown.get_json()["coefficients"] == finished_result()["coefficients"]
    assert [m["model_id"] for m in client.get("/models").get_json()["models"]] == [model_id]

    predicted = client.get("/prediction")
    assert predicted.status_code == 200
    body = predicted.get_json()
    assert body["model_id"] == model_id
    test_rows = len((SHIPPED / "test.csv").read_text().splitlines()) - 1
    assert body["rows"] == test_rows and len(body["predictions"]) == test_rows
    assert client.get(f"/prediction?model_id={model_id}").get_json() == body


PREDICTION_CASES = [
    pytest.param({}, "body.rows", id="rows-missing"),
    pytest.param({"rows": []}, "body.rows", id="rows-empty"),
    pytest.param({"rows": {"age": 1}}, "body.rows", id="rows-object"),
    pytest.param({"rows": [[1, 2, 3]]}, "body.rows[0]: expected an object", id="row-list"),
    pytest.param({"rows": [{f: 1.0 for f in FEATURES if f != "bmi"}]}, "body.rows[0]: missing feature(s) 'bmi'",
                 id="row-missing-feature"),
    pytest.param({"rows": [dict.fromkeys(FEATURES, 1.0), {**dict.fromkeys(FEATURES, 1.0), "s3": "high"}]},
                 "body.rows[1].s3: expected a number", id="row-string-value"),
    pytest.param({"rows": [{**dict.fromkeys(FEATURES, 1.0), "sex": True}]},
                 "body.rows[0].sex: expected a number", id="row-bool-value"),
    pytest.param({"model_id": 5, "rows": [dict.fromkeys(FEATURES, 1.0)]}, "body.model_id", id="model-id-int"),
]


# Rows the document allows but that do not name the stored model's features: only the model can
# tell, so they are a 422; the rest a 400.
MODEL_DEPENDENT_PREDICTION_CASES = {"row-missing-feature"}


@pytest.mark.parametrize(("payload", "fragment"), PREDICTION_CASES)
def test_bad_prediction_rows(model_creator_app, request, payload, fragment):
    insert_finished(model_creator_app)
    status = 422 if request.node.callspec.id in MODEL_DEPENDENT_PREDICTION_CASES else 400
    assert_json_error(model_creator_app.test_client().post("/prediction", json=payload), status, fragment)


@pytest.mark.parametrize(
    ("csv_text", "fragment"),
    [
        pytest.param(",".join(FEATURES[:-1]) + "\n" + ",".join(["1"] * 9) + "\n", "missing column 's6'",
                     id="csv-missing-column"),
        pytest.param(",".join(FEATURES) + "\n" + ",".join(["1"] * 9) + ",nan\n", "row 1, column 's6'", id="csv-nan"),
        pytest.param("", "empty", id="csv-empty"),
    ],
)
def test_bad_prediction_csv(model_creator_app, csv_text, fragment):
    """Any text is a CSV body by the document; one that cannot serve the model is a 422."""
    insert_finished(model_creator_app)
    response = model_creator_app.test_client().post("/prediction", data=csv_text, content_type="text/csv")
    assert_json_error(response, 422, fragment)


def exported_model(**changes) -> dict:
    body = {"format": "federated_trainer.model/1", "model_id": "abc", "model": "linear_regression",
            "features": ["age", "bmi"], "label": LABEL,
            "coefficients": {"intercept": 1.0, "age": 0.5, "bmi": 2.0}, "training": {}}
    body.update(changes)
    return body


IMPORT_CASES = [
    pytest.param(exported_model(format="v0"), "body.format", id="format-wrong"),
    pytest.param(exported_model(format=MISSING), "body.format", id="format-missing"),
    pytest.param(exported_model(model="svm"), "body.model: unknown model 'svm'", id="model-unknown"),
    pytest.param(exported_model(model=["ridge"]), "body.model", id="model-list"),
    pytest.param(exported_model(features="age"), "body.features", id="features-string"),
    pytest.param(exported_model(features=[]), "body.features", id="features-empty"),
    pytest.param(exported_model(label=5), "body.label", id="label-int"),
    pytest.param(exported_model(coefficients=[1.0, 0.5, 2.0]), "body.coefficients", id="coefficients-list"),
    pytest.param(exported_model(coefficients={"intercept": 1.0, "age": 0.5}),
                 "body: coefficients: expected a number for each of intercept, age, bmi",
                 id="coefficients-missing-one"),
    pytest.param(exported_model(coefficients={"intercept": 1.0, "age": 0.5, "bmi": "2"}), "body.coefficients",
                 id="coefficients-string"),
    pytest.param(exported_model(coefficients={"intercept": 1.0, "age": True, "bmi": 2.0}), "body.coefficients",
                 id="coefficients-bool"),
    pytest.param(exported_model(features=["age", "age"], coefficients={"intercept": 1.0, "age": 0.5}),
                 "body.features", id="features-repeat"),
    pytest.param(exported_model(training={"request": ["exact"]}), "body.training", id="training-request-list"),
    pytest.param(exported_model(training={"request": "exact"}), "body.training", id="training-request-string"),
]


INCONSISTENT_IMPORTS = {"coefficients-missing-one"}


@pytest.mark.parametrize(("payload", "fragment"), IMPORT_CASES)
def test_bad_import(request, model_creator_app, payload, fragment):
    payload = {name: value for name, value in payload.items() if value is not MISSING}
    client = model_creator_app.test_client()
    # Values the document allows but that contradict each other are a 422; the rest a 400.
    status = 422 if request.node.callspec.id in INCONSISTENT_IMPORTS else 400
    assert_json_error(client.post("/models/import", json=payload), status, fragment)
    assert client.get("/models").get_json() == {"models": []}


# -- callbacks for a model with no job in flight -------------------------------------------------

def test_callbacks_for_no_job_in_flight(model_creator_app, small_key):
    client = as_coordinator(model_creator_app)
    aggregate = {"round": 0, "kind": "gradient", "key_fingerprint": small_key.public_key.fingerprint,
                 "ciphertexts": encrypted(small_key, [1, 2, 3]), "contributors": ["a"], "failures": {}}
    assert_json_error(client.post("/jobs/nope/aggregates", json=aggregate), 404, "model nope has no job in flight")
    assert_json_error(client.post("/jobs/nope/failure", json={"error": "boom"}), 404, "model nope has no job in flight")
    assert_json_error(client.post("/jobs/nope/failure", json={}), 400, "body.error")
    assert_json_error(client.post("/jobs/nope/failure", json={"error": ""}), 400, "body.error")


# -- nothing stored changes ----------------------------------------------------------------------

def test_bad_requests_change_nothing_stored(model_creator_app, small_key):
    app = model_creator_app
    client = app.test_client()
    key_path = app.extensions["settings"].state_dir / KEY_FILE
    fingerprint = app.extensions["key_store"].private_key().public_key.fingerprint
    key_bytes = key_path.read_bytes()
    model_id = insert_finished(app)
    failed_id = insert_failed(app)
    views = ["/models", f"/model/{model_id}", f"/model/{failed_id}", "/prediction", f"/prediction?model_id={model_id}",
             f"/model/{model_id}/export"]
    before = {view: client.get(view).get_json() for view in views}
    assert all(before.values())

    statuses = []
    for case in MODEL_CASES:
        payload, _, _ = case.values
        statuses.append(client.post("/model", json=payload).status_code)
    for case in RAW_MODEL_CASES:
        raw, _ = case.values
        statuses.append(client.post("/model", data=raw, content_type="application/json").status_code)
    for case in PREDICTION_CASES:
        payload, _ = case.values
        statuses.append(client.post("/prediction", json=payload).status_code)
    for case in IMPORT_CASES:
        payload, _ = case.values
        payload = {name: value for name, value in payload.items() if value is not MISSING}
        statuses.append(client.post("/models/import", json=payload).status_code)
    aggregate = {"round": 0, "kind": "gradient", "key_fingerprint": fingerprint,
                 "ciphertexts": encrypted(small_key, [1, 2, 3]), "contributors": ["a"], "failures": {}}
    coordinator = as_coordinator(app)
    for target in (model_id, failed_id, "nope"):
        for caller in (coordinator, client, client_with(app, app.extensions["settings"].model_creator_token)):
            statuses.append(caller.post(f"/jobs/{target}/aggregates", json=aggregate).status_code)
            statuses.append(caller.post(f"/jobs/{target}/failure", json={"error": "coordinator gave up"}).status_code)
        statuses.append(coordinator.post(f"/jobs/{target}/failure", json={"error": 5}).status_code)
    for view in ("/model/nope", f"/prediction?model_id={failed_id}", f"/model/{failed_id}/export"):
        statuses.append(client.get(view).status_code)
    for raw in (b"{", b"[]", b"null", b"\xc3\x28"):
        for path in ("/model", "/prediction", "/models/import"):
            statuses.append(client.post(path, data=raw, content_type="application/json").status_code)
        statuses.append(coordinator.post(f"/jobs/{model_id}/failure", data=raw,
                                         content_type="application/json").status_code)

    assert {view: client.get(view).get_json() for view in views} == before
    assert key_path.read_bytes() == key_bytes
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert all(400 <= status < 500 for status in statuses), statuses


# -- callbacks for a model in flight -------------------------------------------------------------

def coordinator_answer(method: str, path: str, body) -> tuple[int, dict] | None:
    """What a coordinator answers to the model creator's calls: a job opened, a round started."""
    parts = path.strip("/").split("/")
    if method == "POST" and parts == ["jobs"]:
        return 200, {"job_id": body["spec"]["job_id"], "status": "running"}
    if method == "POST" and len(parts) == 3 and parts[2] == "rounds":
        return 200, {"job_id": parts[1], "round": body["round"], "status": "started"}
    if method == "POST" and len(parts) == 3 and parts[2] == "finish":
        return 200, {"job_id": parts[1], "status": body["status"]}
    return None


class InFlight:
    """A model creator whose model awaits gradient round 0 from a stub coordinator."""

    def __init__(self, state_dir: Path, key) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        key_path = state_dir / KEY_FILE
        descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(key.to_json(), handle)
        self.key = key
        self.coordinator = StubPeer(coordinator_answer)
        self.config = {"TESTING": True, "STATE_DIR": str(state_dir), "KEY_BITS": 1024, "TEST_ONLY_SMALL_KEYS": True,
                       "COORDINATOR_URL": self.coordinator.url, "PUBLIC_URL": UNREACHABLE,
                       "TEST_DATA": str(SHIPPED / "test.csv"), "REQUEST_TIMEOUT": 5, **MODEL_CREATOR_SECRETS}
        self.app = create_app(self.config)
        self.client = self.app.test_client()
        started = self.client.post("/model", json={"features": FEATURES, "label": LABEL})
        assert started.status_code == 202, started.get_json()
        self.model_id = started.get_json()["model_id"]
        (opened,) = self.coordinator.wait_for(lambda r: r.path == "/jobs")
        self.spec = JobSpec.model_validate(opened.body["spec"])
        (self.round_message,) = self.coordinator.wait_for(lambda r: r.path == f"/jobs/{self.model_id}/rounds")

    def aggregate(self, **changes) -> dict:
        body = {"round": 0, "kind": "gradient", "key_fingerprint": self.key.public_key.fingerprint,
                "ciphertexts": encrypted(self.key, [1] * self.spec.reply_ciphertexts()),
                "contributors": ["owner-a"], "failures": {}}
        body.update(changes)
        return body

    def post(self, body):
        return as_coordinator(self.app).post(f"/jobs/{self.model_id}/aggregates", json=body)


@pytest.fixture(scope="module")
def in_flight(tmp_path_factory, small_key):
    flight = InFlight(tmp_path_factory.mktemp("in-flight"), small_key)
    yield flight
    flight.coordinator.close()


def test_job_opened_at_the_coordinator(in_flight, small_key):
    spec, message = in_flight.spec, in_flight.round_message.body
    assert spec.job_id == in_flight.model_id
    assert spec.key_fingerprint == small_key.public_key.fingerprint
    assert list(spec.features) == FEATURES and spec.label == LABEL
    assert message["round"] == 0 and message["kind"] == "gradient"
    assert message["key_fingerprint"] == small_key.public_key.fingerprint
    assert len(message["encrypted_weights"]) == spec.dimension
    for call in in_flight.coordinator.requests:
        assert call.authorization == f"Bearer {TOKENS['MODEL_CREATOR_TOKEN']}"
    shown = in_flight.client.get(f"/model/{in_flight.model_id}").get_json()
    assert shown["status"] == "running" and shown["round"] == 0


AGGREGATE_CASES = [
    pytest.param("key_fingerprint", MISSING, 400, "body.key_fingerprint", id="fingerprint-missing"),
    pytest.param("key_fingerprint", lambda k, o: o.public_key.fingerprint, 422, "body.key_fingerprint",
                 id="fingerprint-of-other-key"),
    pytest.param("round", MISSING, 400, "body.round", id="round-missing"),
    pytest.param("round", True, 400, "body.round", id="round-bool"),
    pytest.param("round", "0", 400, "body.round", id="round-string"),
    pytest.param("kind", MISSING, 400, "body.kind", id="kind-missing"),
    pytest.param("kind", "weights", 400, "body.kind", id="kind-unknown"),
    pytest.param("contributors", MISSING, 400, "body.contributors", id="contributors-missing"),
    pytest.param("contributors", "owner-a", 400, "body.contributors", id="contributors-string"),
    pytest.param("contributors", ["owner-a", 2], 400, "body.contributors", id="contributors-int-item"),
    pytest.param("failures", ["owner-b"], 400, "body.failures", id="failures-list"),
    pytest.param("failures", {"owner-b": 504}, 400, "body.failures", id="failures-int-reason"),
    pytest.param("round", 1, 409, "awaits gradient round 0, not gradient round 1", id="round-ahead"),
    pytest.param("kind", "statistics", 409, "awaits gradient round 0, not statistics round 0", id="kind-not-awaited"),
]


@pytest.mark.parametrize(("path", "value", "status", "fragment"), AGGREGATE_CASES)
def test_bad_aggregate(in_flight, small_key, other_small_key, path, value, status, fragment):
    body = patched(in_flight.aggregate(), path, value, small_key, other_small_key)
    if path == "kind" and value == "statistics":
        body["ciphertexts"] = encrypted(small_key, [1] * in_flight.spec.reply_ciphertexts("statistics"))
    assert_json_error(in_flight.post(body), status, fragment)


@pytest.mark.parametrize(("make", "status"), ciphertext_cases("body.ciphertexts"))
def test_bad_aggregate_ciphertexts(in_flight, make, status):
    body = in_flight.aggregate()
    body["ciphertexts"], fragment = make(in_flight.key, body["ciphertexts"])
    assert_json_error(in_flight.post(body), status, fragment)


def test_aggregate_not_from_the_coordinator(in_flight):
    body = in_flight.aggregate()
    path = f"/jobs/{in_flight.model_id}/aggregates"
    for token in (None, "forged", TOKENS["MODEL_CREATOR_TOKEN"], TOKENS["ENROLMENT_SECRET"]):
        assert_json_error(client_with(in_flight.app, token).post(path, json=body), 401, "credentials")
        assert_json_error(client_with(in_flight.app, token).post(f"/jobs/{in_flight.model_id}/failure",
                                                                 json={"error": "stop"}), 401, "credentials")


def test_bad_aggregates_leave_the_model_awaiting_round_0(in_flight):
    """Runs after the bad aggregates above (same module-scoped model)."""
    shown = in_flight.client.get(f"/model/{in_flight.model_id}").get_json()
    assert shown["status"] == "running"
    assert shown["round"] == 0 and shown["history"] == []
    rounds = [r for r in in_flight.coordinator.requests if r.path.endswith("/rounds")]
    assert len(rounds) == 1


def first_round_aggregate(spec: JobSpec, key) -> list[str]:
    """The aggregate of one owner (owner_a.csv) at w = 0: its row count and −Xᵀy, packed, encrypted."""
    table = np.genfromtxt(SHIPPED / "owner_a.csv", delimiter=",", names=True)
    design = np.column_stack([np.ones(len(table)), *(table[f] for f in FEATURES)])
    moment = design.T @ table[LABEL]
    gradient = [round(-Fraction(float(v)) * 2**spec.gradient_frac_bits) for v in moment]
    plaintexts = pack_plain([len(table), *gradient], spec.layout)
    return encode_ciphertexts([key.public_key.raw_encrypt(p) for p in plaintexts], key.public_key)


def test_valid_aggregate_moves_the_model_to_the_next_round(tmp_path, small_key):
    flight = InFlight(tmp_path / "state", small_key)
    try:
        ciphertexts = first_round_aggregate(flight.spec, small_key)
        response = flight.post(flight.aggregate(ciphertexts=ciphertexts))
        assert response.status_code == 202
        assert response.get_json() == {"status": "accepted"}
        flight.coordinator.wait_for(lambda r: r.path == f"/jobs/{flight.model_id}/rounds", count=2)

        shown = flight.client.get(f"/model/{flight.model_id}").get_json()
        assert shown["status"] == "running" and shown["round"] == 1
        (record,) = shown["history"]
        assert record["round"] == 0 and record["contributors"] == 1 and record["data_owners"] == ["owner-a"]
        assert_json_error(flight.post(flight.aggregate(ciphertexts=ciphertexts)), 409, "awaits gradient round 1")
    finally:
        flight.coordinator.close()



def test_a_repeated_delivery_is_never_absorbed_twice(tmp_path, small_key):
    flight = InFlight(tmp_path / "state", small_key)
    try:
        ciphertexts = first_round_aggregate(flight.spec, small_key)
        first = flight.post(flight.aggregate(ciphertexts=ciphertexts))
        again = flight.post(flight.aggregate(ciphertexts=ciphertexts))
        assert first.status_code == 202
        assert_json_error(again, 409, "round")
        flight.coordinator.wait_for(lambda r: r.path == f"/jobs/{flight.model_id}/rounds", count=2)

        shown = flight.client.get(f"/model/{flight.model_id}").get_json()
        assert shown["round"] == 1
        assert [record["round"] for record in shown["history"]] == [0]
    finally:
        flight.coordinator.close()

# -- the user API behind a token -----------------------------------------------------------------

def test_user_api_with_an_api_token(tmp_path):
    app = create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "guarded"), "KEY_BITS": 1024, "TEST_ONLY_SMALL_KEYS": True,
                      "COORDINATOR_URL": UNREACHABLE, "TEST_DATA": str(SHIPPED / "test.csv"),
                      "REQUEST_TIMEOUT": 5, "API_TOKEN": "api-test-user-token", **MODEL_CREATOR_SECRETS})
    model_id = insert_finished(app)
    user = client_with(app, "api-test-user-token")
    views = ["/models", f"/model/{model_id}", "/prediction", f"/model/{model_id}/export"]
    before = {view: user.get(view).get_json() for view in views}
    assert all(user.get(view).status_code == 200 for view in views)
    for view in views:
        for token in (None, "forged"):
            assert_json_error(client_with(app, token).get(view), 401, "credentials")
        assert_json_error(as_coordinator(app).get(view), 403, "may not call")
    for token in (None, "forged", TOKENS["COORDINATOR_TOKEN"]):
        caller = client_with(app, token)
        assert 400 < caller.post("/model", json={}).status_code < 404
        assert 400 < caller.post("/models/import", json=exported_model()).status_code < 404
        assert 400 < caller.post("/prediction", json={"rows": [dict.fromkeys(FEATURES, 1.0)]}).status_code < 404
    assert {view: user.get(view).get_json() for view in views} == before


def test_restarted_model_creator_resumes_at_the_awaited_round(tmp_path, small_key):
    """After round 0 is absorbed, a restart asks the coordinator for round 1, never round 0 again."""
    flight = InFlight(tmp_path / "state", small_key)
    try:
        rounds_path = f"/jobs/{flight.model_id}/rounds"
        first = flight.aggregate(ciphertexts=first_round_aggregate(flight.spec, small_key))
        assert flight.post(first).status_code == 202
        flight.coordinator.wait_for(lambda r: r.path == rounds_path, count=2)
        before = flight.client.get(f"/model/{flight.model_id}").get_json()
        assert before["round"] == 1

        app = create_app(flight.config)
        assert app.extensions["trainer"].resume_unfinished() == 1
        asked = flight.coordinator.wait_for(lambda r: r.path == rounds_path, count=3)
        assert asked[2].body["round"] == 1 and asked[2].body["kind"] == "gradient"
        assert asked[2].body["key_fingerprint"] == small_key.public_key.fingerprint

        after = app.test_client().get(f"/model/{flight.model_id}").get_json()
        assert after["status"] == "running" and after["round"] == 1 and after["history"] == before["history"]
        assert_json_error(as_coordinator(app).post(f"/jobs/{flight.model_id}/aggregates", json=first), 409,
                          "awaits gradient round 1, not gradient round 0")
    finally:
        flight.coordinator.close()


# --- progress, cancel, delete, name ------------------------------------------------------------

def test_a_job_in_flight_shows_its_progress_and_is_cancelled_and_then_deleted(tmp_path, small_key):
    flight = InFlight(tmp_path / "mc", small_key)
    try:
        shown = flight.client.get(f"/model/{flight.model_id}").get_json()
        assert shown["status"] == "running" and shown["round"] == 0
        assert shown["expected_rounds"] == len(FEATURES) + 2 and shown["fraction_done"] == 0.0
        assert shown["seconds_left"] is None  # no round has taken any time yet
        assert_json_error(flight.client.delete(f"/model/{flight.model_id}"), 409, "cancel it first")

        cancelled = flight.client.post(f"/model/{flight.model_id}/cancel")
        assert cancelled.status_code == 202
        assert cancelled.get_json() == {"model_id": flight.model_id, "status": "cancelling"}
        (finish,) = flight.coordinator.wait_for(lambda r: r.path == f"/jobs/{flight.model_id}/finish")
        assert finish.body == {"status": "failed", "error": "cancelled: cancelled by the user"}
        for _ in range(100):
            shown = flight.client.get(f"/model/{flight.model_id}").get_json()
            if shown["status"] == "cancelled":
                break
        assert shown["status"] == "cancelled" and shown["error"] == "cancelled by the user"
        assert shown["seconds_left"] is None
        assert_json_error(flight.client.post(f"/model/{flight.model_id}/cancel"), 409,
                          f"model {flight.model_id} is cancelled")

        finished = insert_finished(flight.app)
        deleted = flight.client.delete(f"/model/{flight.model_id}")
        assert deleted.status_code == 200
        assert deleted.get_json() == {"model_id": flight.model_id, "status": "deleted"}
        assert_json_error(flight.client.get(f"/model/{flight.model_id}"), 404, "does not exist")
        assert_json_error(flight.client.delete(f"/model/{flight.model_id}"), 404, "does not exist")
        # Nothing else was touched: the finished model still predicts.
        assert [m["model_id"] for m in flight.client.get("/models").get_json()["models"]] == [finished]
        assert flight.client.get(f"/prediction?model_id={finished}").status_code == 200
        listed = flight.client.get(f"/model/{finished}").get_json()
        assert listed["fraction_done"] == 1.0 and listed["seconds_left"] == 0.0
    finally:
        flight.coordinator.close()


def test_a_model_keeps_the_name_its_request_gave_it(model_creator_app):
    store = model_creator_app.extensions["model_store"]
    request = TrainingRequest.of(TrainingOptions(name="diabetes, all features", optimizer="gd", max_rounds=40,
                                                 standardize=True), model_creator_app.extensions["settings"])
    model_id = store.create(request.to_json())
    shown = model_creator_app.test_client().get(f"/model/{model_id}").get_json()
    assert shown["name"] == "diabetes, all features"
    assert shown["expected_rounds"] == 41 and shown["fraction_done"] == 0.0


@pytest.mark.parametrize("path, method", [("/model/nosuchmodel/cancel", "post"), ("/model/nosuchmodel", "delete")])
def test_cancel_and_delete_of_an_unknown_model_are_404s(model_creator_app, path, method):
    assert_json_error(getattr(model_creator_app.test_client(), method)(path), 404, "model nosuchmodel does not exist")
