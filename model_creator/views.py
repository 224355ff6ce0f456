"""HTTP endpoints of the model creator.

The user's API (models, predictions, export and import) and the coordinator's callbacks
(aggregates, failures). The user's endpoints are open unless the service has an ``api_token``,
hence their optional bearer security in the API document; the callbacks take the coordinator's
token only.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from flask import Response, current_app, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, ConfigDict, Field

from common.dataset import load_columns, read_columns, read_header
from common.protocol.errors import (
    Conflict,
    DataError,
    FederatedError,
    NotFound,
    PeerUnreachable,
    ProtocolViolation,
    SchemaError,
    UpstreamError,
)
from common.protocol.messages import (
    Accepted,
    Aggregate,
    ExportedModel,
    Federation,
    FederationMember,
    ImportedTraining,
    JobFailure,
    ModelCancelling,
    ModelDeleted,
    ModelImported,
    ModelList,
    ModelRecord,
    Prediction,
    PredictionRows,
    TrainingOptions,
    TrainingStarted,
    ciphertexts_under,
    parse,
)
from common.protocol.models import MODELS, check_binary_labels
from common.protocol.spec import JobId
from common.service.app import answer, documents, responses, settings_of
from common.service.auth import COORDINATOR, USER, requires
from common.service.clients import CoordinatorClient
from model_creator.config import ModelCreatorSettings
from model_creator.job import Trainer
from model_creator.progress import with_progress
from model_creator.store import ModelStore
from model_creator.training import TrainingRequest

logger = logging.getLogger(__name__)

EXPORT_FORMAT: Final = "federated_trainer.model/1"
CSV_TYPES = ("text/csv", "multipart/form-data")

#: The user's endpoints: a bearer token when the service has an API token, none otherwise.

logger = logging.getLogger(__name__)

models = APIBlueprint(
    "models",
    __name__,
    abp_tags=[Tag(name="models", description="Training, inspecting, exporting and importing models.")],
)
predictions = APIBlueprint(
    "predictions",
    __name__,
    abp_tags=[Tag(name="predictions", description="Predictions and metrics of finished models.")],
)
callbacks = APIBlueprint(
    "callbacks",
    __name__,
    abp_tags=[Tag(name="callbacks", description="The coordinator's answers to the model creator's rounds.")],
)


class TrainingBody(TrainingOptions):
    """A ``POST /model`` body, which may be left out altogether."""

    model_config = ConfigDict(title="TrainingOptions", openapi_extra={"required": False})  # type: ignore[typeddict-unknown-key]


class ModelPath(BaseModel):
    model_id: JobId


class JobPath(BaseModel):
    job_id: JobId


class ModelQuery(BaseModel):
    model_id: JobId | None = Field(default=None, description="A finished model; by default the latest finished one.")


class PredictionUpload(BaseModel):
    """``POST /prediction`` as a multipart upload: a CSV file and, optionally, the model."""

    file: bytes = Field(description="CSV with a header line: the model's features and, optionally, its label.")
    model_id: JobId | None = None


def _check_binary_label(test_data: Path, label: str) -> None:
    """A label the test data holds must be 0/1 for a model that needs binary labels (a 422 naming it)."""
    if label not in read_header(test_data):
        return
    try:
        _, labels = load_columns(test_data, [], label)
    except DataError as exc:
        raise ProtocolViolation(f"body.label: the model creator's test data cannot be read ({exc.code})") from None
    try:
        check_binary_labels(labels, "the model creator's test data", label)
    except DataError as exc:
        raise ProtocolViolation(f"body.label: {exc.message}; this model needs 0/1 labels") from None


def _training_limits(settings: ModelCreatorSettings) -> dict[str, dict[str, dict[str, Any]]]:
    """What this model creator takes in a ``POST /model`` body beyond the message's own limits.

    At most as many data owners as it counts: the bound :meth:`TrainingRequest.of
    <model_creator.training.TrainingRequest.of>` checks a body against. The columns are the data
    owners', not the model creator's, so its test data does not limit them.
    """
    limits: dict[str, dict[str, Any]] = {"min_data_owners": {"maximum": settings.max_data_owners}}
    return {"TrainingOptions": limits}


def _prediction_body() -> dict[str, Any]:
    """The three forms of a ``POST /prediction`` body, for the API document (from the types)."""
    return {
        "requestBody": {
            "required": True,
            "description": "Rows as JSON, a CSV body (`?model_id=` optional) or a multipart upload in `file`;"
            " a column with the model's label, if present, adds the metrics on those rows.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictionRows"}},
                "text/csv": {"schema": {"type": "string"}},
                "multipart/form-data": {"schema": PredictionUpload.model_json_schema()},
            },
        }
    }


def _trainer() -> Trainer:
    trainer: Trainer = current_app.extensions["trainer"]
    return trainer


def _store() -> ModelStore:
    store: ModelStore = current_app.extensions["model_store"]
    return store


def _settings() -> ModelCreatorSettings:
    return settings_of(current_app, ModelCreatorSettings)


# --- Models ---------------------------------------------------------------------------------


@models.post("/model", responses=responses(202, TrainingStarted, 400, 401, 403))
@requires(USER)
@documents(limits=_training_limits)
def train(body: TrainingBody) -> tuple[Response, int]:
    """Start training; with no body, the default linear regression on the default columns.

    The model creator needs no data of its own: when its test data has the job's columns the model
    is scored on them, otherwise the model says why it has no metrics. When the test data has the
    label of a model that needs binary labels, a label that is not 0/1 there is refused at once.
    """
    settings = _settings()
    features = body.features if body.features is not None else settings.default_features
    label = body.label if body.label is not None else settings.default_label
    if label in features:
        # Only one of them is the default (both given is the message's own check): the settings decide.
        raise ProtocolViolation(f"body: label {label!r} is also listed as a feature")
    training_request = TrainingRequest.of(body, settings)
    if settings.test_data is not None and MODELS[training_request.model].binary_labels:
        _check_binary_label(settings.test_data, training_request.label)
    warnings = _check_columns(training_request)
    model_id = _trainer().start(training_request)
    return answer(TrainingStarted(model_id=model_id, status="pending", warnings=warnings), 202)


def _federation(client: str = "coordinator") -> list[FederationMember]:
    """The owners registered with the coordinator and the columns each publishes.

    ``client`` names the app's coordinator client to ask: ``coordinator`` (the jobs' own, with
    its retries) or ``column_check`` (one short attempt).
    """
    coordinator: CoordinatorClient = current_app.extensions[client]
    listed = coordinator.data_owners().data_owners
    return [
        FederationMember(
            name=entry.name,
            columns=entry.columns,
            online=entry.online,
            offline_reason=None if entry.online else entry.offline_reason,
            last_seen=entry.last_seen,
        )
        for entry in listed
    ]


def _check_columns(request: TrainingRequest) -> list[str]:
    """Check a job's columns against the federation's schema; what the job will do without.

    The owners that take part are those that publish every column of the job; fewer than the
    job's ``min_data_owners`` (and at least one) is a 422 naming each missing column and the
    owners that lack it.

    The coordinator is asked once, for at most ``column_check_timeout`` seconds, without retries
    (the jobs' own client would retry for about a minute while the coordinator is down). When it
    cannot answer, the job is accepted all the same, with a warning saying so: opening the job
    retries until the coordinator is back (the model shows ``interrupted`` meanwhile), and the
    owners check their own columns when they join. Refusing it instead would only make the user
    retry what the job retries by itself.
    """
    try:
        members = [member for member in _federation("column_check") if member.columns and member.online]
    except FederatedError as exc:
        settings = _settings()
        why = (
            f"not reached within {settings.column_check_timeout:g} s"
            if isinstance(exc, PeerUnreachable)
            else f"it answered {exc.message}"
        )
        logger.warning("POST /model: columns not checked against the federation: the coordinator %s", why)
        return [
            f"the job's columns were not checked against the federation: the coordinator"
            f" ({settings.coordinator_url}) {why}; the job opens there once it answers, and each data owner"
            " checks its own columns when it joins"
        ]
    wanted = [*request.features, request.label]
    lacking = {member.name: [c for c in wanted if c not in member.columns] for member in members}
    taking_part = [name for name, missing in lacking.items() if not missing]
    by_column = {c: [name for name, missing in lacking.items() if c in missing] for c in wanted}
    described = "; ".join(f"{c!r} (lacked by {', '.join(names)})" for c, names in by_column.items() if names)
    if members and len(taking_part) < max(1, request.min_data_owners):
        raise ProtocolViolation(
            f"body: {len(taking_part)} data owner(s) publish every column of the job, the job needs"
            f" {max(1, request.min_data_owners)}; missing: {described}"
        )
    return [f"data owners without every column of the job will not take part: {described}"] if described else []


@models.get("/federation", responses=responses(200, Federation, 401, 403, 502))
@requires(USER)
def federation() -> tuple[Response, int]:
    """The data owners of the federation, as the coordinator knows them, with the columns they publish.

    A 502 when the coordinator cannot be asked (its own error is named in the message).
    """
    try:
        return answer(Federation(data_owners=_federation()))
    except FederatedError as exc:
        raise UpstreamError(f"the coordinator cannot list the federation: {exc.message}") from None


@models.get("/models", responses=responses(200, ModelList, 401, 403))
@requires(USER)
def list_models() -> tuple[Response, int]:
    """Every model, oldest first, with status, type, features, metrics, progress and interruption (no history)."""
    return answer(ModelList(models=[_shown(model) for model in _store().list()]))


def _shown(model: ModelRecord) -> ModelRecord:
    """A stored model as the user sees it: with its progress and, while a fault holds it up, why."""
    shown = with_progress(model)
    interruption = _trainer().interruption(model.model_id) if model.status in ("pending", "running") else None
    return shown if interruption is None else shown.model_copy(update={"interrupted": interruption})


@models.get("/model/<model_id>", responses=responses(200, ModelRecord, 400, 401, 403, 404))
@requires(USER)
def show_model(path: ModelPath) -> tuple[Response, int]:
    """A model with its history of rounds, its progress and, once finished, its coefficients.

    ``expected_rounds`` is d + 1 for the exact solver and d coefficients (plus the statistics
    round when training on standardised features) and ``max_rounds`` otherwise;
    ``fraction_done`` is the rounds taken over it (capped at 0.99 until the job ends);
    ``seconds_left`` the mean round time so far times the
    rounds still expected. While a transient fault (a storage fault here or at the coordinator, a
    coordinator that cannot be reached) holds a job in flight up, ``interrupted`` says what
    failed, since when and how often, that it is retried, and that the job can be cancelled.
    """
    return answer(_shown(_store().get(path.model_id)))


@models.post("/model/<model_id>/cancel", responses=responses(202, ModelCancelling, 400, 401, 403, 404, 409))
@requires(USER)
def cancel_model(path: ModelPath) -> tuple[Response, int]:
    """Stop a job in flight: it ends ``cancelled`` and the coordinator closes it at every owner.

    A model that has already ended is a 409, and is left as it is.
    """
    model = _store().get(path.model_id)
    if model.status not in ("pending", "running"):
        raise Conflict(f"model {path.model_id} is {model.status}; only a pending or running model can be cancelled")
    try:
        _trainer().cancel(path.model_id, "cancelled by the user")
    except NotFound:
        raise Conflict(f"model {path.model_id} has just ended; it was not cancelled") from None
    return answer(ModelCancelling(model_id=path.model_id, status="cancelling"), 202)


@models.delete("/model/<model_id>", responses=responses(200, ModelDeleted, 400, 401, 403, 404, 409))
@requires(USER)
def delete_model(path: ModelPath) -> tuple[Response, int]:
    """Delete a model that has ended (finished, failed or cancelled) and its history.

    A model in flight is a 409: cancel it first. No other model is touched.
    """
    model = _store().get(path.model_id)
    if model.status in ("pending", "running"):
        raise Conflict(f"model {path.model_id} is {model.status}; cancel it first (POST /model/{path.model_id}/cancel)")
    _store().delete(path.model_id)
    logger.info("model %s deleted", path.model_id)
    return answer(ModelDeleted(model_id=path.model_id, status="deleted"))


@models.get("/model/<model_id>/export", responses=responses(200, ExportedModel, 400, 401, 403, 404, 409))
@requires(USER)
def export_model(path: ModelPath) -> tuple[Response, int]:
    """A finished model as self-contained JSON, loadable by ``POST /models/import`` anywhere."""
    model = _finished(path.model_id)
    assert model.coefficients is not None
    training = ImportedTraining.model_validate(
        {
            "request": model.request,
            "stop_reason": model.stop_reason,
            "data_owners": model.data_owners or [],
            "metrics": model.metrics,
            "rounds": model.round,
            "created_at": model.created_at,
            "finished_at": model.updated_at,
            **({} if model.privacy is None else {"privacy": model.privacy}),
        }
    )
    optional: dict[str, Any] = {}
    if model.scaling is not None:
        optional["scaling"] = model.scaling.model_dump()
    if model.standardized_coefficients is not None:
        optional["standardized_coefficients"] = model.standardized_coefficients
    exported = ExportedModel(
        format=EXPORT_FORMAT,
        model_id=model.model_id,
        model=model.model,
        features=model.features,
        label=model.label,
        coefficients=model.coefficients,
        training=training,
        **optional,
    )
    return answer(exported)


@models.post("/models/import", responses=responses(201, ModelImported, 400, 401, 403))
@requires(USER)
def import_model(body: ExportedModel) -> tuple[Response, int]:
    """Store an exported model as a new finished model, ready for predictions."""
    names = ["intercept", *body.features]
    result: dict[str, Any] = {
        "coefficients": {name: float(body.coefficients[name]) for name in names},
        "stop_reason": body.training.stop_reason,
        "data_owners": body.training.data_owners,
        "metrics": body.training.metrics,
        "imported_from": body.model_id,
    }
    if body.scaling is not None:
        result["scaling"] = body.scaling
    if body.standardized_coefficients is not None:
        result["standardized_coefficients"] = body.standardized_coefficients
    request_record = {
        "model": body.model,
        "features": list(body.features),
        "label": body.label,
        "optimizer": body.training.request.get("optimizer", "imported"),
    }
    model_id = _store().import_finished(request_record, result)
    return answer(ModelImported(model_id=model_id, status="finished"), 201)


# --- Predictions ----------------------------------------------------------------------------


@predictions.get("/prediction", responses=responses(200, Prediction, 400, 401, 403, 404, 409, 422))
@requires(USER)
def prediction(query: ModelQuery) -> tuple[Response, int]:
    """Metrics and predictions of the latest finished model (or ``?model_id=``) on the test data."""
    model = _finished_or_latest(query.model_id)
    test_data = _settings().test_data
    if test_data is None:
        raise Conflict("the model creator has no test data (start it with --test-data CSV)")
    try:
        features, labels = load_columns(test_data, model.features, model.label)
    except DataError as exc:
        # The message names the file; the answer names what the user asked for, never a server path.
        logger.warning("GET /prediction: %s", exc.message)
        problem = exc.message.removeprefix(f"{test_data}: ")
        raise DataError(f"the test data cannot score model {model.model_id}: {problem}", exc.code, exc.column) from None
    return answer(_predict(model, features, labels))


@predictions.post(
    "/prediction",
    responses=responses(200, Prediction, 400, 401, 403, 404, 409, 422),
    openapi_extensions=_prediction_body(),
)
@requires(USER)
@documents(PredictionRows)
def predict_rows(query: ModelQuery) -> tuple[Response, int]:
    """Predictions for rows given as JSON ``{"model_id", "rows": [{feature: value}]}`` or as CSV.

    CSV comes as a ``text/csv`` body (``?model_id=`` optional) or a multipart upload in the field
    ``file``; a column with the model's label, if present, adds the metrics on those rows.
    """
    if request.mimetype in CSV_TYPES:
        return _predict_csv(query)
    body = parse(PredictionRows, request.get_json(force=True, silent=True))
    model = _finished_or_latest(body.model_id)
    table = np.empty((len(body.rows), len(model.features)))
    for index, row in enumerate(body.rows):
        missing = [f for f in model.features if f not in row]
        if missing:
            # Any feature names fit the document; only the stored model says which: a 422.
            raise ProtocolViolation(f"body.rows[{index}]: missing feature(s) {', '.join(map(repr, missing))}")
        # Columns the model does not use are ignored, as in GET /prediction and at the owners.
        table[index] = [row[feature] for feature in model.features]
    return answer(_predict(model, table, None))


def _predict_csv(query: ModelQuery) -> tuple[Response, int]:
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise SchemaError("form.file: expected a CSV file upload")
        model_id = parse(ModelQuery, {"model_id": request.form.get("model_id") or None}, "form").model_id
        raw, source = upload.read(), upload.filename or "upload"
    else:
        raw, model_id, source = request.get_data(), query.model_id, "body"
    model = _finished_or_latest(model_id)
    # The document takes any file (any text for text/csv); what the CSV must hold (UTF-8 text, the
    # model's columns, numbers) it cannot say, so a CSV that cannot serve the model is a 422.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: CSV is not UTF-8 text", "no_data") from exc
    header = next(csv.reader(io.StringIO(text)), [])
    label = model.label if model.label in [h.strip() for h in header] else None
    features, labels = read_columns(io.StringIO(text), model.features, label, source)
    return answer(_predict(model, features, labels))


def _predict(
    model: ModelRecord, features: npt.NDArray[np.float64], labels: npt.NDArray[np.float64] | None
) -> Prediction:
    """Predictions (and metrics when labels are given).

    Raises
    ------
    DataError
        When a prediction or metric is beyond the range of floating point: a wrong number is
        never answered.
    """
    kind = MODELS[model.model]
    coefficients = model.coefficients or {}
    weights = [coefficients["intercept"], *(coefficients[f] for f in model.features)]
    values: dict[str, Any] = {"model_id": model.model_id, "model": model.model, "rows": int(len(features))}
    with np.errstate(over="ignore", invalid="ignore"):
        if labels is not None:
            values.update(kind.score(weights, features, labels))
        values.update(kind.predictions(weights, features))
    if labels is not None:
        values["labels"] = [float(v) for v in labels]
    numbers = [v for v in values.values() if isinstance(v, float)] + [
        x for v in values.values() if isinstance(v, list) for x in v
    ]
    if not all(math.isfinite(x) for x in numbers if isinstance(x, float)):
        raise DataError(f"model {model.model_id}: predictions for these rows exceed the range of floating point")
    return Prediction(**values)


def _finished_or_latest(model_id: str | None) -> ModelRecord:
    return _finished(model_id) if model_id else _store().latest_finished()


def _finished(model_id: str) -> ModelRecord:
    model = _store().get(model_id)
    if model.status != "finished":
        raise Conflict(f"model {model.model_id} is {model.status}, not finished")
    return model


# --- The coordinator's callbacks ------------------------------------------------------------


@callbacks.post(
    "/jobs/<job_id>/aggregates",
    responses=responses(202, Accepted, 400, 401, 403, 404, 409, 422),
)
@requires(COORDINATOR)
def receive_aggregate(path: JobPath, body: Aggregate) -> tuple[Response, int]:
    """The coordinator's aggregate of a round: checked here against the job's key, decrypted in the worker.

    The ciphertexts must be as many as a reply of the round's kind packs into, each one a valid
    ciphertext under the job's key; an aggregate of another round than the awaited one, or a
    repeated delivery, is a 409 that changes nothing.
    """
    trainer = _trainer()
    run = trainer.run(path.job_id)
    public_key = run.private_key.public_key
    public_key.check_fingerprint(body.key_fingerprint, "body.key_fingerprint")
    ciphertexts = ciphertexts_under(
        body.ciphertexts, public_key, "body.ciphertexts", run.spec.reply_ciphertexts(body.kind)
    )
    trainer.accept_aggregate(
        path.job_id, body.round, body.kind, ciphertexts, list(body.contributors), dict(body.failures), body.privacy
    )
    return answer(Accepted(status="accepted"), 202)


@callbacks.post("/jobs/<job_id>/failure", responses=responses(202, Accepted, 400, 401, 403, 404))
@requires(COORDINATOR)
def receive_failure(path: JobPath, body: JobFailure) -> tuple[Response, int]:
    """The coordinator cannot go on with the job: the model fails with its reason."""
    _trainer().accept_failure(path.job_id, f"coordinator: {body.error}")
    return answer(Accepted(status="accepted"), 202)
