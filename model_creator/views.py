"""HTTP endpoints of the model creator.

The user's API (models, predictions, export and import) and the coordinator's callbacks
(aggregates, failures).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from functools import wraps
from typing import Any

import numpy as np
from flask import Blueprint, current_app, jsonify, request

from common.service.auth import COORDINATOR, USER, authenticate, requires
from common.dataset import load_columns, read_columns, read_header
from common.protocol.errors import Conflict, DataError, SchemaError
from common.protocol.models import MODELS
from common.protocol.spec import MAX_FEATURES, require_round_kind
from common.service.app import json_body
from common.protocol.wire import decode_ciphertexts, require_int, require_number, require_str, require_str_list
from model_creator.training import TrainingRequest

models = Blueprint("models", __name__)
callbacks = Blueprint("callbacks", __name__)

EXPORT_FORMAT = "federated_trainer.model/1"
MAX_ABS_COEFFICIENT = 2.0**128
MAX_PREDICTION_ROWS = 100_000


def user_api(view: Callable) -> Callable:
    """The user's endpoints: open on loopback by default, bearer-protected when API_TOKEN is set."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_app.config.get("API_TOKEN"):
            authenticate(current_app.extensions["auth"], [USER])
        return view(*args, **kwargs)

    return wrapper


def _trainer():
    return current_app.extensions["trainer"]


def _store():
    return current_app.extensions["model_store"]


@models.post("/model")
@user_api
def train() -> tuple[Any, int]:
    """Start training; with no body, the default linear regression on the shipped columns."""
    training_request = TrainingRequest.from_json(json_body(), current_app.config)
    test_data = current_app.config.get("TEST_DATA")
    if test_data:
        header = read_header(test_data)
        unknown = [c for c in [*training_request.features, training_request.label] if c not in header]
        if unknown:
            raise SchemaError(
                f"body: unknown column(s) {', '.join(map(repr, unknown))}; the model creator's data has"
                f" {', '.join(header)}"
            )
    model_id = _trainer().start(training_request)
    return jsonify(model_id=model_id, status="pending"), 202


@models.get("/models")
@user_api
def list_models() -> tuple[Any, int]:
    """Every model, oldest first, with status, type, features and metrics."""
    return jsonify(models=_store().list()), 200


@models.get("/model/<model_id>")
@user_api
def show_model(model_id: str) -> tuple[Any, int]:
    return jsonify(_store().get(model_id)), 200


@models.get("/model/<model_id>/export")
@user_api
def export_model(model_id: str) -> tuple[Any, int]:
    """A finished model as self-contained JSON, loadable by ``POST /models/import`` anywhere."""
    model = _finished(model_id)
    exported = {
        "format": EXPORT_FORMAT,
        "model_id": model["model_id"],
        "model": model["model"],
        "features": model["features"],
        "label": model["label"],
        "coefficients": model["coefficients"],
        "training": {
            "request": model["request"],
            "rounds": model["round"],
            "stop_reason": model.get("stop_reason"),
            "data_owners": model.get("data_owners", []),
            "metrics": model.get("metrics"),
            "created_at": model["created_at"],
            "finished_at": model["updated_at"],
        },
    }
    for optional in ("scaling", "standardized_coefficients"):
        if optional in model:
            exported[optional] = model[optional]
    return jsonify(exported), 200


@models.post("/models/import")
@user_api
def import_model() -> tuple[Any, int]:
    """Store an exported model as a new finished model, ready for predictions."""
    body = json_body()
    if body.get("format") != EXPORT_FORMAT:
        raise SchemaError(f"body.format: expected {EXPORT_FORMAT!r}")
    model = require_str(body, "model")
    if model not in MODELS:
        raise SchemaError(f"body.model: unknown model {model!r}; known: {', '.join(MODELS)}")
    features = require_str_list(body, "features", max_items=MAX_FEATURES)
    if "intercept" in features:
        raise SchemaError("body.features: 'intercept' is reserved for the intercept coefficient")
    label = require_str(body, "label")
    coefficients = body.get("coefficients")
    names = ["intercept", *features]
    if not isinstance(coefficients, dict) or set(coefficients) != set(names):
        raise SchemaError(f"body.coefficients: expected a number for each of {', '.join(names)}")
    for name in names:
        require_number(coefficients, name, "body.coefficients", -MAX_ABS_COEFFICIENT, MAX_ABS_COEFFICIENT)
    training = body.get("training", {})
    if not isinstance(training, dict) or not isinstance(training.get("request", {}), dict):
        raise SchemaError("body.training: expected an object whose 'request' is an object")
    result = {
        "coefficients": {n: float(coefficients[n]) for n in names},
        "stop_reason": training.get("stop_reason"),
        "data_owners": training.get("data_owners", []),
        "metrics": training.get("metrics"),
        "imported_from": body.get("model_id"),
    }
    for optional in ("scaling", "standardized_coefficients"):
        if isinstance(body.get(optional), dict):
            result[optional] = body[optional]
    request_record = {
        "model": model,
        "features": features,
        "label": label,
        "optimizer": training.get("request", {}).get("optimizer", "imported"),
    }
    model_id = _store().import_finished(request_record, result)
    return jsonify(model_id=model_id, status="finished"), 201


@models.get("/prediction")
@user_api
def prediction() -> tuple[Any, int]:
    """Metrics and predictions of the latest finished model (or ``?model_id=``) on the test data."""
    model_id = request.args.get("model_id")
    model = _finished(model_id) if model_id else _store().latest_finished()
    test_data = current_app.config.get("TEST_DATA")
    if not test_data:
        raise Conflict("the model creator has no test data (start it with --test-data CSV)")
    features, labels = load_columns(test_data, model["features"], model["label"])
    return jsonify(_predict(model, features, labels)), 200


@models.post("/prediction")
@user_api
def predict_rows() -> tuple[Any, int]:
    """Predictions for rows given as JSON ``{"model_id", "rows": [{feature: value}]}`` or as CSV.

    CSV comes as a ``text/csv`` body (``?model_id=`` optional) or a multipart upload in the field
    ``file``; a column with the model's label, if present, adds the metrics on those rows.
    """
    if request.mimetype in ("text/csv", "multipart/form-data"):
        return _predict_csv()
    body = json_body()
    model_id = body.get("model_id")
    if model_id is not None and not isinstance(model_id, str):
        raise SchemaError("body.model_id: expected a string")
    model = _finished(model_id) if model_id else _store().latest_finished()
    rows = body.get("rows")
    if not isinstance(rows, list) or not 0 < len(rows) <= MAX_PREDICTION_ROWS:
        raise SchemaError(f"body.rows: expected a list of 1 to {MAX_PREDICTION_ROWS} objects")
    table = np.empty((len(rows), len(model["features"])))
    wanted = set(model["features"])
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SchemaError(f"body.rows[{index}]: expected an object of feature → value")
        missing = [f for f in model["features"] if f not in row]
        unknown = sorted(set(row) - wanted)
        if missing or unknown:
            parts = ([f"missing feature(s) {', '.join(map(repr, missing))}"] if missing else []) + (
                [f"unknown feature(s) {', '.join(map(repr, unknown))}"] if unknown else []
            )
            raise SchemaError(f"body.rows[{index}]: {'; '.join(parts)}")
        for column, feature in enumerate(model["features"]):
            table[index, column] = require_number(row, feature, f"body.rows[{index}]")
    return jsonify(_predict(model, table, None)), 200


def _predict_csv() -> tuple[Any, int]:
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise SchemaError("form.file: expected a CSV file upload")
        raw, model_id, source = upload.read(), request.form.get("model_id"), upload.filename or "upload"
    else:
        raw, model_id, source = request.get_data(), request.args.get("model_id"), "body"
    model = _finished(model_id) if model_id else _store().latest_finished()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{source}: CSV is not UTF-8 text") from exc
    header = next(csv.reader(io.StringIO(text)), [])
    label = model["label"] if model["label"] in [h.strip() for h in header] else None
    try:
        features, labels = read_columns(io.StringIO(text), model["features"], label, source, allow_extra=False)
    except DataError as exc:
        raise SchemaError(exc.message) from exc
    return jsonify(_predict(model, features, labels)), 200


def _predict(model: dict[str, Any], features: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Predictions (and metrics when labels are given); values beyond the float range are an error."""
    kind = MODELS[model["model"]]
    coefficients = model["coefficients"]
    weights = [coefficients["intercept"], *(coefficients[f] for f in model["features"])]
    answer: dict[str, Any] = {"model_id": model["model_id"], "model": model["model"], "rows": int(len(features))}
    with np.errstate(over="ignore", invalid="ignore"):
        if labels is not None:
            answer.update(kind.score(weights, features, labels))
        answer.update(kind.predictions(weights, features))
    if labels is not None:
        answer["labels"] = [float(v) for v in labels]
    numbers = [v for v in answer.values() if isinstance(v, float)] + [
        x for v in answer.values() if isinstance(v, list) for x in v
    ]
    if not all(math.isfinite(x) for x in numbers if isinstance(x, float)):
        raise DataError(f"model {model['model_id']}: predictions for these rows exceed the range of floating point")
    return answer


def _finished(model_id: str | None) -> dict[str, Any]:
    model = _store().get(model_id)
    if model["status"] != "finished":
        raise Conflict(f"model {model['model_id']} is {model['status']}, not finished")
    return model


@callbacks.post("/jobs/<job_id>/aggregates")
@requires(COORDINATOR)
def receive_aggregate(job_id: str) -> tuple[Any, int]:
    """The coordinator's aggregate of a round: checked here, decrypted in the worker."""
    run = _trainer().run(job_id)
    body = json_body()
    public_key = run.private_key.public_key
    public_key.check_fingerprint(body.get("key_fingerprint"), "body.key_fingerprint")
    round_number = require_int(body, "round", maximum=1_000_000)
    kind = require_round_kind(body, default=None)
    ciphertexts = decode_ciphertexts(
        body.get("ciphertexts"), public_key, "body.ciphertexts", run.spec.reply_ciphertexts(kind)
    )
    data_owners = body.get("contributors")
    if not isinstance(data_owners, list) or not all(isinstance(n, str) for n in data_owners):
        raise SchemaError("body.contributors: expected a list of data-owner names")
    failures = body.get("failures", {})
    if not isinstance(failures, dict) or not all(isinstance(v, str) for v in failures.values()):
        raise SchemaError("body.failures: expected an object of name → reason")
    _trainer().accept_aggregate(job_id, round_number, kind, ciphertexts, data_owners, failures)
    return jsonify(status="accepted"), 202


@callbacks.post("/jobs/<job_id>/failure")
@requires(COORDINATOR)
def receive_failure(job_id: str) -> tuple[Any, int]:
    body = json_body()
    error = body.get("error")
    if not isinstance(error, str) or not error:
        raise SchemaError("body.error: expected a non-empty string")
    _trainer().accept_failure(job_id, f"coordinator: {error}")
    return jsonify(status="accepted"), 202
