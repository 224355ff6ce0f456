"""HTTP endpoints of a data owner: join a job, answer rounds, leave a job."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify

from common.service.auth import COORDINATOR, requires
from common.protocol.errors import SchemaError
from common.crypto.paillier import PublicKey
from common.protocol.spec import GRADIENT, JobSpec, require_round_kind
from common.service.app import json_body
from common.protocol.wire import decode_ciphertexts, require_int

logger = logging.getLogger(__name__)

jobs = Blueprint("jobs", __name__)


@jobs.put("/jobs/<job_id>")
@requires(COORDINATOR)
def join_job(job_id: str) -> tuple[Any, int]:
    """Join a job if this owner's data can serve it; the error names file, column and row if not.

    The answer says nothing about the data (not even the row count): the coordinator learns only
    that this owner takes part.
    """
    body = json_body()
    spec = JobSpec.from_json(body.get("spec"))
    if spec.job_id != job_id:
        raise SchemaError(f"spec.job_id: {spec.job_id!r} does not match the URL's job {job_id!r}")
    public_key = PublicKey.from_json(body.get("public_key"))
    spec.check_key(public_key)
    current_app.extensions["job_book"].join(spec, public_key)
    logger.info("joined job %s (%s on %d features)", job_id, spec.model, len(spec.features))
    return jsonify(job_id=job_id, status="joined"), 200


@jobs.post("/jobs/<job_id>/rounds")
@requires(COORDINATOR)
def answer_round(job_id: str) -> tuple[Any, int]:
    """Accept a round; the encrypted reply is computed in the worker and sent to the coordinator.

    A gradient round brings encrypted weights and is answered with E(A_i w − b_i); a statistics
    round is answered with the encrypted feature sums precomputed at join time.
    """
    joined = current_app.extensions["job_book"].get(job_id)
    body = json_body()
    joined.public_key.check_fingerprint(body.get("key_fingerprint"), "body.key_fingerprint")
    round_number = require_int(body, "round", maximum=1_000_000)
    attempt = require_int(body, "attempt", minimum=1, maximum=1000)
    kind = require_round_kind(body)
    weights = None
    if kind == GRADIENT:
        weights = decode_ciphertexts(
            body.get("encrypted_weights"), joined.public_key, "body.encrypted_weights", joined.spec.dimension
        )
    current_app.extensions["worker"].submit(
        current_app.extensions["responder"].reply, joined, round_number, attempt, kind, weights
    )
    return jsonify(job_id=job_id, round=round_number, status="accepted"), 202


@jobs.delete("/jobs/<job_id>")
@requires(COORDINATOR)
def leave_job(job_id: str) -> tuple[Any, int]:
    current_app.extensions["job_book"].forget(job_id)
    return jsonify(job_id=job_id, status="left"), 200
