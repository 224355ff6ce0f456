"""A data owner's OpenAPI description: join a job, answer rounds, leave a job.

Every job endpoint is called by the coordinator only, with the token it issued for this owner at
enrolment; no answer says anything about the owner's data.
"""

from __future__ import annotations

from typing import Any

from common.service.auth import COORDINATOR
from common.service.openapi import (
    bearer_security,
    error_responses,
    job_id_parameter,
    json_request,
    json_response,
    object_schema,
    ref,
)
from common.service.openapi import document as service_document
from common.protocol.spec import GRADIENT


def document() -> dict[str, Any]:
    """The data owner's OpenAPI document, served at ``GET /openapi.json``."""
    return service_document(
        "Data Owner",
        "Keeps its rows and answers encrypted rounds with encrypted gradients. It never decrypts anything and"
        " never learns the weights.",
        tags={"jobs": "Jobs this owner takes part in, and their rounds (called by the coordinator)."},
        paths={
            "/jobs/{job_id}": {
                "parameters": [job_id_parameter("The job's id; must be the spec's job_id.")],
                "put": {
                    "operationId": "joinJob",
                    "tags": ["jobs"],
                    "summary": "Join a job if this owner's data can serve it.",
                    "description": "A 422 names the file, column and row that cannot serve the job. The answer"
                    " says nothing about the data, not even its row count.",
                    **bearer_security(COORDINATOR),
                    "requestBody": json_request(
                        object_schema(
                            {
                                "spec": ref("JobSpec"),
                                "public_key": ref("PublicKey"),
                            },
                            ["spec", "public_key"],
                        )
                    ),
                    "responses": {
                        "200": json_response(
                            "Joined (again, if it had already).",
                            object_schema(
                                {
                                    "job_id": ref("JobId"),
                                    "status": {"type": "string", "const": "joined"},
                                },
                                ["job_id", "status"],
                            ),
                        ),
                        **error_responses(400, 401, 413, 422),
                    },
                },
                "delete": {
                    "operationId": "leaveJob",
                    "tags": ["jobs"],
                    "summary": "Leave a job and drop everything kept for it; leaving an unknown job is not an error.",
                    **bearer_security(COORDINATOR),
                    "responses": {
                        "200": json_response(
                            "Left (or was never in it).",
                            object_schema(
                                {
                                    "job_id": {"type": "string", "description": "The id in the URL."},
                                    "status": {"type": "string", "const": "left"},
                                },
                                ["job_id", "status"],
                            ),
                        ),
                        **error_responses(401),
                    },
                },
            },
            "/jobs/{job_id}/rounds": {
                "parameters": [job_id_parameter("A job this owner has joined.")],
                "post": {
                    "operationId": "answerRound",
                    "tags": ["jobs"],
                    "summary": "Accept a round; the encrypted reply is computed and posted to the coordinator"
                    " in the background.",
                    "description": "A gradient round brings the encrypted weights and is answered with E(A_i w - b_i);"
                    " a statistics round is answered with the encrypted feature sums.",
                    **bearer_security(COORDINATOR),
                    "requestBody": json_request(
                        object_schema(
                            {
                                "round": ref("RoundNumber"),
                                "attempt": {"type": "integer", "minimum": 1, "maximum": 1000},
                                "kind": ref("RoundKind") | {"default": GRADIENT},
                                "key_fingerprint": ref("KeyFingerprint"),
                                "encrypted_weights": ref("Ciphertexts")
                                | {"description": "Required in a gradient round: one ciphertext per coefficient."},
                            },
                            ["round", "attempt", "key_fingerprint"],
                        )
                    ),
                    "responses": {
                        "202": json_response(
                            "The round is accepted.",
                            object_schema(
                                {
                                    "job_id": ref("JobId"),
                                    "round": ref("RoundNumber"),
                                    "status": {"type": "string", "const": "accepted"},
                                },
                                ["job_id", "round", "status"],
                            ),
                        ),
                        **error_responses(400, 401, 404, 413),
                    },
                },
            },
        },
    )
