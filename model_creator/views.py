"""HTTP endpoints of the model creator: the user's API (models, predictions) and the
coordinator's callbacks (aggregates, failures)."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint, current_app, jsonify, request

from common.dataset import load_columns, read_header
from common.errors import Conflict, SchemaError
from common.models import mean_squared_error, predict
from common.service import json_body
from common.wire import decode_ciphertexts, require_int
from model_creator.training import TrainingRequest

models = Blueprint("models", __name__)
callbacks = Blueprint("callbacks", __name__)


def _trainer():
    return current_app.extensions["trainer"]


def _store():
    return current_app.extensions["model_store"]


@models.post("/model")
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
def list_models() -> tuple[Any, int]:
    return jsonify(models=_store().list()), 200


@models.get("/model/<model_id>")
def show_model(model_id: str) -> tuple[Any, int]:
    return jsonify(_store().get(model_id)), 200


@models.get("/prediction")
def prediction() -> tuple[Any, int]:
    """MSE and predicted values of the latest finished model (or ``?model_id=``) on the test data."""
    model_id = request.args.get("model_id")
    model = _store().get(model_id) if model_id else _store().latest_finished()
    if model["status"] != "finished":
        raise Conflict(f"model {model['model_id']} is {model['status']}, not finished")
    test_data = current_app.config.get("TEST_DATA")
    if not test_data:
        raise Conflict("the model creator has no test data (start it with --test-data CSV)")
    features, labels = load_columns(test_data, model["features"], model["label"])
    coefficients = model["coefficients"]
    predictions = predict([coefficients["intercept"], *(coefficients[f] for f in model["features"])], features)
    return jsonify(
        model_id=model["model_id"],
        mse=mean_squared_error(predictions, labels),
        rows=int(len(labels)),
        predictions=[float(p) for p in predictions],
        labels=[float(v) for v in np.asarray(labels)],
    ), 200


@callbacks.post("/jobs/<job_id>/aggregates")
def receive_aggregate(job_id: str) -> tuple[Any, int]:
    """The coordinator's aggregate of a round: checked here, decrypted in the worker."""
    run = _trainer().run(job_id)
    body = json_body()
    public_key = run.private_key.public_key
    public_key.check_fingerprint(body.get("key_fingerprint"), "body.key_fingerprint")
    round_number = require_int(body, "round", maximum=1_000_000)
    ciphertexts = decode_ciphertexts(body.get("ciphertexts"), public_key, "body.ciphertexts",
                                     run.spec.layout.ciphertext_count(run.spec.reply_values))
    data_owners = body.get("contributors")
    if not isinstance(data_owners, list) or not all(isinstance(n, str) for n in data_owners):
        raise SchemaError("body.contributors: expected a list of data-owner names")
    failures = body.get("failures", {})
    if not isinstance(failures, dict) or not all(isinstance(v, str) for v in failures.values()):
        raise SchemaError("body.failures: expected an object of name → reason")
    _trainer().accept_aggregate(job_id, round_number, ciphertexts, data_owners, failures)
    return jsonify(status="accepted"), 202


@callbacks.post("/jobs/<job_id>/failure")
def receive_failure(job_id: str) -> tuple[Any, int]:
    body = json_body()
    error = body.get("error")
    if not isinstance(error, str) or not error:
        raise SchemaError("body.error: expected a non-empty string")
    _trainer().accept_failure(job_id, f"coordinator: {error}")
    return jsonify(status="accepted"), 202
