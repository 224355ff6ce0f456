"""The coordinator's OpenAPI description: the data-owner registry, jobs, rounds and contributions."""

from __future__ import annotations

from typing import Any

from common.service.auth import DATA_OWNER, ENROLMENT, MODEL_CREATOR
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
from common.protocol.spec import GRADIENT
from coordinator.views import NAME_PATTERN

JOB_STATUSES = ["running", "finished", "failed"]
ROUND_OUTCOMES = ["started", "in progress", "resumed", "delivering again"]


def document() -> dict[str, Any]:
    """The coordinator's OpenAPI document, served at ``GET /openapi.json``."""
    return service_document(
        "Training Coordinator",
        "Registry of data owners, relay and aggregator of ciphertexts. It never holds a private key and never"
        " sees a plaintext weight, gradient or data value.",
        tags={
            "data owners": "Enrolment and the registry of data owners.",
            "jobs": "Jobs and their rounds, opened by the model creator.",
            "contributions": "Data owners' encrypted replies to a round.",
        },
        schemas={
            "DataOwnerName": {
                "type": "string",
                "pattern": NAME_PATTERN.pattern,
                "minLength": 1,
                "maxLength": 64,
                "description": "Letters, digits, '.', '-' and '_'.",
            },
            "Enrolment": object_schema(
                {
                    "name": ref("DataOwnerName"),
                    "credential": {
                        "type": "string",
                        "description": "The owner's own bearer token for calling the coordinator.",
                    },
                    "coordinator_token": {
                        "type": "string",
                        "description": "The token the coordinator will present to the owner.",
                    },
                },
                ["name", "credential", "coordinator_token"],
            ),
            "RoundRecord": object_schema(
                {
                    "round": ref("RoundNumber"),
                    "kind": ref("RoundKind"),
                    "status": {"type": "string", "description": "running, aggregated or failed."},
                    "attempts": {"type": "integer", "minimum": 0},
                    "contributors": {"type": "array", "items": {"type": "string"}},
                    "failures": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "Data owner → why it did not contribute.",
                    },
                    "seconds": {"type": ["number", "null"]},
                },
                ["round", "kind", "status", "attempts", "contributors", "failures", "seconds"],
            ),
        },
        paths={
            "/data_owners": {
                "post": {
                    "operationId": "registerDataOwner",
                    "tags": ["data owners"],
                    "summary": "Enrol a data owner with the enrolment secret.",
                    "description": "Enrolling again under the same name replaces its URL and both credentials"
                    " (200 instead of 201).",
                    **bearer_security(ENROLMENT),
                    "requestBody": json_request(
                        object_schema(
                            {
                                "name": ref("DataOwnerName"),
                                "url": {
                                    "type": "string",
                                    "pattern": "^https?://",
                                    "maxLength": 500,
                                    "description": "Where the data owner serves rounds.",
                                },
                            },
                            ["name", "url"],
                        )
                    ),
                    "responses": {
                        "201": json_response("Enrolled.", ref("Enrolment")),
                        "200": json_response(
                            "Enrolled again; the previous credentials no longer work.", ref("Enrolment")
                        ),
                        **error_responses(400, 401, 403, 413),
                    },
                },
                "get": {
                    "operationId": "listDataOwners",
                    "tags": ["data owners"],
                    "summary": "The enrolled data owners, for the model creator.",
                    **bearer_security(MODEL_CREATOR),
                    "responses": {
                        "200": json_response(
                            "The registry.",
                            object_schema(
                                {
                                    "data_owners": {
                                        "type": "array",
                                        "items": object_schema(
                                            {"name": ref("DataOwnerName"), "url": {"type": "string"}}, ["name", "url"]
                                        ),
                                    },
                                },
                                ["data_owners"],
                            ),
                        ),
                        **error_responses(401, 403),
                    },
                },
            },
            "/jobs": {
                "post": {
                    "operationId": "createJob",
                    "tags": ["jobs"],
                    "summary": "Open a job: its spec, the model creator's public key and where aggregates go.",
                    **bearer_security(MODEL_CREATOR),
                    "requestBody": json_request(
                        object_schema(
                            {
                                "spec": ref("JobSpec"),
                                "public_key": ref("PublicKey"),
                                "callback_url": {
                                    "type": "string",
                                    "pattern": "^https?://",
                                    "maxLength": 500,
                                    "description": "The model creator's base URL for aggregates.",
                                },
                            },
                            ["spec", "public_key", "callback_url"],
                        )
                    ),
                    "responses": {
                        "201": json_response(
                            "The job is open.",
                            object_schema(
                                {
                                    "job_id": ref("JobId"),
                                    "status": {"type": "string", "const": "running"},
                                },
                                ["job_id", "status"],
                            ),
                        ),
                        **error_responses(400, 401, 403, 409, 413),
                    },
                },
            },
            "/jobs/{job_id}": {
                "parameters": [job_id_parameter()],
                "get": {
                    "operationId": "showJob",
                    "tags": ["jobs"],
                    "summary": "A job's status, spec and rounds.",
                    **bearer_security(MODEL_CREATOR),
                    "responses": {
                        "200": json_response(
                            "The job.",
                            object_schema(
                                {
                                    "job_id": ref("JobId"),
                                    "status": {"type": "string", "enum": JOB_STATUSES},
                                    "error": {"type": ["string", "null"]},
                                    "spec": ref("JobSpec"),
                                    "rounds": {"type": "array", "items": ref("RoundRecord")},
                                },
                                ["job_id", "status", "error", "spec", "rounds"],
                            ),
                        ),
                        **error_responses(401, 403, 404),
                    },
                },
            },
            "/jobs/{job_id}/rounds": {
                "parameters": [job_id_parameter()],
                "post": {
                    "operationId": "startRound",
                    "tags": ["jobs"],
                    "summary": "Hand over the next round: the encrypted weights of a gradient round.",
                    "description": "The round is fanned out to the data owners in the background; its aggregate"
                    " goes to the job's callback URL. Asking again for a round is how a restarted"
                    " model creator resumes: a running round goes on (or is resumed), an aggregated"
                    " one is delivered again, a failed one is a 409.",
                    **bearer_security(MODEL_CREATOR),
                    "requestBody": json_request(
                        object_schema(
                            {
                                "round": ref("RoundNumber"),
                                "kind": ref("RoundKind") | {"default": GRADIENT},
                                "key_fingerprint": ref("KeyFingerprint"),
                                "encrypted_weights": ref("Ciphertexts")
                                | {"description": "Required in a gradient round: one ciphertext per coefficient."},
                            },
                            ["round", "key_fingerprint"],
                        )
                    ),
                    "responses": {
                        "202": json_response(
                            "The round is started, or picked up again.",
                            object_schema(
                                {
                                    "job_id": ref("JobId"),
                                    "round": ref("RoundNumber"),
                                    "status": {"type": "string", "enum": ROUND_OUTCOMES},
                                },
                                ["job_id", "round", "status"],
                            ),
                        ),
                        **error_responses(400, 401, 403, 404, 409, 413),
                    },
                },
            },
            "/jobs/{job_id}/rounds/{round_number}/contributions": {
                "parameters": [
                    job_id_parameter(),
                    path_parameter("round_number", ref("RoundNumber"), "The round replied to."),
                ],
                "post": {
                    "operationId": "contribute",
                    "tags": ["contributions"],
                    "summary": "A data owner's packed, encrypted reply to a round it was asked for.",
                    **bearer_security(DATA_OWNER),
                    "requestBody": json_request(
                        object_schema(
                            {
                                "data_owner": ref("DataOwnerName")
                                | {"description": "Must be the name the credential was issued to."},
                                "attempt": {"type": "integer", "minimum": 1, "maximum": 1000},
                                "key_fingerprint": ref("KeyFingerprint"),
                                "ciphertexts": ref("Ciphertexts"),
                            },
                            ["data_owner", "attempt", "key_fingerprint", "ciphertexts"],
                        )
                    ),
                    "responses": {
                        "202": json_response(
                            "The reply is accepted.",
                            object_schema({"status": {"type": "string", "const": "accepted"}}, ["status"]),
                        ),
                        **error_responses(400, 401, 403, 404, 409, 413),
                    },
                },
            },
            "/jobs/{job_id}/rounds/{round_number}/refusals": {
                "parameters": [
                    job_id_parameter(),
                    path_parameter("round_number", ref("RoundNumber"), "The round the owner cannot reply to."),
                ],
                "post": {
                    "operationId": "refuse",
                    "tags": ["contributions"],
                    "summary": "A data owner that cannot reply to a round says why, so the round need not wait.",
                    **bearer_security(DATA_OWNER),
                    "requestBody": json_request(
                        object_schema(
                            {
                                "data_owner": ref("DataOwnerName")
                                | {"description": "Must be the name the credential was issued to."},
                                "attempt": {"type": "integer", "minimum": 1, "maximum": 1000},
                                "error": {"type": "string", "minLength": 1, "maxLength": 2000},
                            },
                            ["data_owner", "attempt", "error"],
                        )
                    ),
                    "responses": {
                        "202": json_response(
                            "The refusal is recorded as the owner's failure for the round.",
                            object_schema({"status": {"type": "string", "const": "accepted"}}, ["status"]),
                        ),
                        **error_responses(400, 401, 403, 404, 409, 413),
                    },
                },
            },
            "/jobs/{job_id}/finish": {
                "parameters": [job_id_parameter()],
                "post": {
                    "operationId": "finishJob",
                    "tags": ["jobs"],
                    "summary": "Close a job, finished or failed; data owners drop their state for it.",
                    **bearer_security(MODEL_CREATOR),
                    "requestBody": json_request(
                        object_schema(
                            {
                                "status": {"type": "string", "enum": ["finished", "failed"]},
                                "error": {"type": "string", "description": "Why the job failed."},
                            },
                            ["status"],
                        )
                    ),
                    "responses": {
                        "200": json_response(
                            "The job is closed.",
                            object_schema(
                                {
                                    "job_id": ref("JobId"),
                                    "status": {"type": "string", "enum": ["finished", "failed"]},
                                },
                                ["job_id", "status"],
                            ),
                        ),
                        **error_responses(400, 401, 403, 404, 413),
                    },
                },
            },
        },
    )
