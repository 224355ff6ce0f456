"""HTTP endpoints of a data owner: join a job, answer rounds, leave a job."""

from __future__ import annotations

import logging

from flask import Response, current_app
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel

from common.protocol.errors import SchemaError
from common.protocol.messages import JobJoined, JobLeft, JoinJob, RoundAccepted, RoundRequest, ciphertexts_under
from common.protocol.spec import GRADIENT, JobId
from common.service.app import answer, responses, secured
from common.service.auth import COORDINATOR, requires

logger = logging.getLogger(__name__)

jobs = APIBlueprint("jobs", __name__, abp_tags=[Tag(name="jobs", description="Jobs this owner takes part in.")])


class JobPath(BaseModel):
    job_id: JobId


@jobs.put("/jobs/<job_id>", responses=responses(200, JobJoined, 400, 401, 403, 422), security=secured(COORDINATOR))
@requires(COORDINATOR)
def join_job(path: JobPath, body: JoinJob) -> tuple[Response, int]:
    """Join a job if this owner's data can serve it; the error names file, column and row if not.

    The answer says nothing about the data (not even the row count): the coordinator learns only
    that this owner takes part.
    """
    spec = body.spec
    if spec.job_id != path.job_id:
        raise SchemaError(f"body.spec.job_id: {spec.job_id!r} does not match the URL's job {path.job_id!r}")
    current_app.extensions["job_book"].join(spec, body.public_key.key())
    logger.info("joined job %s (%s on %d features)", path.job_id, spec.model, len(spec.features))
    return answer(JobJoined(job_id=path.job_id, status="joined"))


@jobs.post(
    "/jobs/<job_id>/rounds", responses=responses(202, RoundAccepted, 400, 401, 403, 404), security=secured(COORDINATOR)
)
@requires(COORDINATOR)
def answer_round(path: JobPath, body: RoundRequest) -> tuple[Response, int]:
    """Accept a round; the encrypted reply is computed in the worker and sent to the coordinator.

    A gradient round brings encrypted weights and is answered with E(A_i w − b_i); a statistics
    round is answered with the encrypted feature sums precomputed at join time.
    """
    joined = current_app.extensions["job_book"].get(path.job_id)
    joined.public_key.check_fingerprint(body.key_fingerprint, "body.key_fingerprint")
    weights = None
    if body.kind == GRADIENT and body.encrypted_weights is not None:
        weights = ciphertexts_under(
            body.encrypted_weights, joined.public_key, "body.encrypted_weights", joined.spec.dimension
        )
    current_app.extensions["responder"].submit(joined, body.round, body.attempt, body.kind, weights)
    return answer(RoundAccepted(job_id=path.job_id, round=body.round, status="accepted"), 202)


@jobs.delete("/jobs/<job_id>", responses=responses(200, JobLeft, 400, 401, 403), security=secured(COORDINATOR))
@requires(COORDINATOR)
def leave_job(path: JobPath) -> tuple[Response, int]:
    """Forget a job: its precomputed statistics and randomness are dropped."""
    current_app.extensions["job_book"].forget(path.job_id)
    return answer(JobLeft(job_id=path.job_id, status="left"))
