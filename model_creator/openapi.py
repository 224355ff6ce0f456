"""The model creator's OpenAPI description.

It covers the user's API (models, predictions, export and import) and the coordinator's callbacks
(aggregates, failures).

The user's endpoints are open unless the service is configured with an ``API_TOKEN``, hence their
optional bearer security; the callbacks take the coordinator's token only.
"""

from __future__ import annotations

from typing import Any

from common.service.auth import COORDINATOR, USER
from common.protocol.models import MODELS
from common.service.openapi import (
    bearer_security,
    error_responses,
    job_id_parameter,
    json_request,
    json_response,
    object_schema,
    path_parameter,
    ref,
)
from common.service.openapi import document as service_document
from common.protocol.spec import MAX_FEATURES
from model_creator.config import DEFAULTS
from model_creator.training import OPTIMIZERS
from model_creator.views import EXPORT_FORMAT, MAX_PREDICTION_ROWS

MODEL_STATUSES = ["pending", "running", "finished", "failed"]


def document() -> dict[str, Any]:
    """The model creator's OpenAPI document, served at ``GET /openapi.json``."""
    user = bearer_security(USER, optional=True)
    model_id = path_parameter("model_id", ref("ModelId"), "The model's id.")
    model_id_query = {
        "name": "model_id",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "A finished model; by default the latest finished one.",
    }
    return service_document(
        "Model Creator",
        "Holds the Paillier private key and the models; decrypts only sums over all data owners of a round.",
        tags={
            "models": "Training, inspecting, exporting and importing models (the user's API).",
            "predictions": "Predictions and metrics of finished models (the user's API).",
            "callbacks": "The coordinator's answers to the model creator's rounds.",
        },
        schemas={
            "ModelId": {"type": "string", "pattern": "^[0-9a-f]{16}$", "description": "16 hexadecimal digits."},
            "Column": {"type": "string", "minLength": 1, "maxLength": 200},
            "FeatureNames": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_FEATURES,
                "uniqueItems": True,
                "items": {"type": "string", "minLength": 1},
                "not": {"contains": {"const": "intercept"}},
                "description": "Distinct column names; 'intercept' is reserved for the intercept.",
            },
            "Coefficients": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "By name: 'intercept', then one per feature.",
            },
            "Metrics": {
                "type": ["object", "null"],
                "additionalProperties": {"type": ["number", "null"]},
                "description": "mse for regression; accuracy, log_loss and auc for classification.",
            },
            "TrainingRequest": {
                "type": "object",
                "additionalProperties": False,
                "description": "Every field is optional; with no body, linear regression on the default columns.",
                "properties": {
                    "model": {"type": "string", "enum": list(MODELS), "default": "linear_regression"},
                    "features": ref("FeatureNames")
                    | {
                        "default": list(DEFAULTS["DEFAULT_FEATURES"]),
                        "description": "Columns of the data owners' data (and of the test data).",
                    },
                    "label": ref("Column")
                    | {"default": DEFAULTS["DEFAULT_LABEL"], "description": "Not one of the features."},
                    "optimizer": {"type": "string", "enum": list(OPTIMIZERS), "default": "exact"},
                    "learning_rate": {"type": "number", "minimum": 1e-12, "maximum": 1e6, "default": 0.1},
                    "max_rounds": {"type": "integer", "minimum": 1, "maximum": 100_000},
                    "min_data_owners": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": DEFAULTS["MAX_DATA_OWNERS"],
                        "default": 1,
                        "description": "At most the service's MAX_DATA_OWNERS"
                        f" ({DEFAULTS['MAX_DATA_OWNERS']} by default).",
                    },
                    "max_abs_weight": {
                        "type": "number",
                        "minimum": 1.0,
                        "maximum": 2.0**128,
                        "description": "Bound on every coefficient's magnitude.",
                    },
                    "alpha": {
                        "type": "number",
                        "minimum": 0.0,
                        "maximum": 1e12,
                        "description": "L2 penalty; only for the penalised models (ridge, logistic).",
                    },
                    "standardize": {"type": "boolean"},
                    "tolerance": {"type": "number", "minimum": 0.0, "maximum": 1e6, "default": 1e-8},
                    "relative_tolerance": {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": 1e-12},
                },
            },
            "Model": object_schema(
                {
                    "model_id": ref("ModelId"),
                    "version": {"type": "integer"},
                    "status": {"type": "string", "enum": MODEL_STATUSES},
                    "model": {"type": "string", "enum": list(MODELS)},
                    "features": {"type": "array", "items": {"type": "string"}},
                    "label": {"type": "string"},
                    "optimizer": {"type": "string"},
                    "request": {"type": "object", "description": "The training request, defaults filled in."},
                    "round": {"type": "integer", "minimum": 0},
                    "created_at": {"type": "number"},
                    "updated_at": {"type": "number"},
                    "error": {"type": "string"},
                    "coefficients": ref("Coefficients"),
                    "stop_reason": {"type": ["string", "null"]},
                    "data_owners": {"type": "array", "items": {"type": "string"}},
                    "metrics": ref("Metrics"),
                    "scaling": {"type": "object"},
                    "standardized_coefficients": ref("Coefficients"),
                    "imported_from": {"type": ["string", "null"]},
                    "history": {
                        "type": "array",
                        "items": {"type": "object"},
                        "description": "One record per round (only on GET /model/{model_id}).",
                    },
                },
                [
                    "model_id",
                    "version",
                    "status",
                    "model",
                    "features",
                    "label",
                    "optimizer",
                    "request",
                    "round",
                    "created_at",
                    "updated_at",
                ],
            ),
            "ExportedModel": object_schema(
                {
                    "format": {"type": "string", "const": EXPORT_FORMAT},
                    "model_id": {"type": "string"},
                    "model": {"type": "string", "enum": list(MODELS)},
                    "features": ref("FeatureNames"),
                    "label": ref("Column"),
                    "coefficients": ref("Coefficients"),
                    "training": object_schema(
                        {
                            "request": {"type": "object"},
                            "rounds": {"type": "integer"},
                            "stop_reason": {"type": ["string", "null"]},
                            "data_owners": {"type": "array", "items": {"type": "string"}},
                            "metrics": ref("Metrics"),
                            "created_at": {"type": "number"},
                            "finished_at": {"type": "number"},
                        }
                    ),
                    "scaling": {"type": "object"},
                    "standardized_coefficients": ref("Coefficients"),
                },
                ["format", "model", "features", "label", "coefficients"],
            )
            | {
                "description": "A finished model as self-contained JSON; 'coefficients' has exactly 'intercept'"
                " and each feature."
            },
            "Prediction": object_schema(
                {
                    "model_id": ref("ModelId"),
                    "model": {"type": "string", "enum": list(MODELS)},
                    "rows": {"type": "integer", "minimum": 0},
                    "predictions": {"type": "array", "items": {"type": "number"}},
                    "probabilities": {"type": "array", "items": {"type": "number"}},
                    "labels": {"type": "array", "items": {"type": "number"}},
                    "mse": {"type": "number"},
                    "accuracy": {"type": "number"},
                    "log_loss": {"type": "number"},
                    "auc": {"type": ["number", "null"]},
                },
                ["model_id", "model", "rows", "predictions"],
            )
            | {"description": "Predictions, and the metrics when the rows came with labels."},
        },
        paths={
            "/model": {
                "post": {
                    "operationId": "train",
                    "tags": ["models"],
                    "summary": "Start training a model; it runs in the background.",
                    **user,
                    "requestBody": json_request(ref("TrainingRequest"), required=False),
                    "responses": {
                        "202": json_response(
                            "Training started.",
                            object_schema(
                                {
                                    "model_id": ref("ModelId"),
                                    "status": {"type": "string", "const": "pending"},
                                },
                                ["model_id", "status"],
                            ),
                        ),
                        **error_responses(400, 401, 403, 413, 422),
                    },
                },
            },
            "/models": {
                "get": {
                    "operationId": "listModels",
                    "tags": ["models"],
                    "summary": "Every model, oldest first, with status, type, features and metrics.",
                    **user,
                    "responses": {
                        "200": json_response(
                            "The models.",
                            object_schema({"models": {"type": "array", "items": ref("Model")}}, ["models"]),
                        ),
                        **error_responses(401, 403),
                    },
                },
            },
            "/model/{model_id}": {
                "parameters": [model_id],
                "get": {
                    "operationId": "showModel",
                    "tags": ["models"],
                    "summary": "A model with its round history.",
                    **user,
                    "responses": {
                        "200": json_response("The model.", ref("Model")),
                        **error_responses(401, 403, 404),
                    },
                },
            },
            "/model/{model_id}/export": {
                "parameters": [model_id],
                "get": {
                    "operationId": "exportModel",
                    "tags": ["models"],
                    "summary": "A finished model as self-contained JSON, for POST /models/import anywhere.",
                    **user,
                    "responses": {
                        "200": json_response("The exported model.", ref("ExportedModel")),
                        **error_responses(401, 403, 404, 409),
                    },
                },
            },
            "/models/import": {
                "post": {
                    "operationId": "importModel",
                    "tags": ["models"],
                    "summary": "Store an exported model as a new finished model, ready for predictions.",
                    **user,
                    "requestBody": json_request(ref("ExportedModel")),
                    "responses": {
                        "201": json_response(
                            "Imported.",
                            object_schema(
                                {
                                    "model_id": ref("ModelId"),
                                    "status": {"type": "string", "const": "finished"},
                                },
                                ["model_id", "status"],
                            ),
                        ),
                        **error_responses(400, 401, 403, 413),
                    },
                },
            },
            "/prediction": {
                "get": {
                    "operationId": "predictTestData",
                    "tags": ["predictions"],
                    "summary": "Metrics and predictions of a finished model on the model creator's test data.",
                    **user,
                    "parameters": [model_id_query],
                    "responses": {
                        "200": json_response("Predictions and metrics.", ref("Prediction")),
                        **error_responses(401, 403, 404, 409, 422),
                    },
                },
                "post": {
                    "operationId": "predictRows",
                    "tags": ["predictions"],
                    "summary": "Predictions for rows given as JSON, as a CSV body or as a CSV upload.",
                    "description": "A CSV column named as the model's label, if present, adds the metrics on"
                    " those rows.",
                    **user,
                    "parameters": [
                        model_id_query
                        | {"description": "With a text/csv body: a finished model; by default the latest finished one."}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": object_schema(
                                    {
                                        "model_id": {"type": "string"},
                                        "rows": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": MAX_PREDICTION_ROWS,
                                            "items": {
                                                "type": "object",
                                                "additionalProperties": {"type": "number"},
                                                "description": "Exactly the model's features → finite numbers.",
                                            },
                                        },
                                    },
                                    ["rows"],
                                )
                            },
                            "text/csv": {
                                "schema": {
                                    "type": "string",
                                    "description": "UTF-8 CSV with a header naming the features.",
                                }
                            },
                            "multipart/form-data": {
                                "schema": object_schema(
                                    {
                                        "file": {
                                            "type": "string",
                                            "format": "binary",
                                            "description": "A UTF-8 CSV file.",
                                        },
                                        "model_id": {"type": "string"},
                                    },
                                    ["file"],
                                )
                            },
                        },
                    },
                    "responses": {
                        "200": json_response(
                            "Predictions, and metrics if labels came with the rows.", ref("Prediction")
                        ),
                        **error_responses(400, 401, 403, 404, 409, 413, 422),
                    },
                },
            },
            "/jobs/{job_id}/aggregates": {
                "parameters": [job_id_parameter("The model's job (its id is the model's).")],
                "post": {
                    "operationId": "receiveAggregate",
                    "tags": ["callbacks"],
                    "summary": "The coordinator's aggregate of a round: checked here, decrypted in the background.",
                    **bearer_security(COORDINATOR),
                    "requestBody": json_request(
                        object_schema(
                            {
                                "key_fingerprint": ref("KeyFingerprint"),
                                "round": ref("RoundNumber"),
                                "kind": ref("RoundKind"),
                                "ciphertexts": ref("Ciphertexts"),
                                "contributors": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "description": "The data owners whose replies were summed.",
                                },
                                "failures": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                    "description": "Data owner → why it did not contribute.",
                                },
                            },
                            ["key_fingerprint", "round", "kind", "ciphertexts", "contributors"],
                        )
                    ),
                    "responses": {
                        "202": json_response(
                            "The aggregate is accepted.",
                            object_schema({"status": {"type": "string", "const": "accepted"}}, ["status"]),
                        ),
                        **error_responses(400, 401, 403, 404, 409, 413),
                    },
                },
            },
            "/jobs/{job_id}/failure": {
                "parameters": [job_id_parameter("The model's job (its id is the model's).")],
                "post": {
                    "operationId": "receiveFailure",
                    "tags": ["callbacks"],
                    "summary": "The coordinator gave up on the job; the model is marked failed.",
                    **bearer_security(COORDINATOR),
                    "requestBody": json_request(
                        object_schema({"error": {"type": "string", "minLength": 1}}, ["error"])
                    ),
                    "responses": {
                        "202": json_response(
                            "The failure is recorded.",
                            object_schema({"status": {"type": "string", "const": "accepted"}}, ["status"]),
                        ),
                        **error_responses(400, 401, 403, 404, 413),
                    },
                },
            },
        },
    )
