"""HTTP endpoints of a data owner: join a job, answer rounds, leave a job; its status and audit.

The coordinator's endpoints (``jobs``) are answered through :func:`audit_answer`, which records
each answer in the owner's audit before it leaves; the operator's (``owner``) read the status
and that audit.
"""

from __future__ import annotations

import io
import logging
from typing import Annotated

from flask import Response, current_app, g, jsonify, request, send_file
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from common.protocol.errors import ProtocolViolation, StorageUnavailable
from common.protocol.messages import (
    AuditEntry,
    AuditList,
    AuditQuery,
    JobJoined,
    JobLeft,
    JoinJob,
    OwnerStatus,
    RoundAccepted,
    RoundRequest,
    TrustedKey,
)
from common.protocol.spec import JobId
from common.service.app import RETRY_AFTER_SECONDS, answer, responses
from common.service.auth import COORDINATOR, OPERATOR, requires
from data_owner.audit import AuditTrail
from data_owner.policy import policy_warnings

logger = logging.getLogger(__name__)

jobs = APIBlueprint("jobs", __name__, abp_tags=[Tag(name="jobs", description="Jobs this owner takes part in.")])


class JobPath(BaseModel):
    job_id: JobId


@jobs.put("/jobs/<job_id>", responses=responses(200, JobJoined, 400, 401, 403, 422))
@requires(COORDINATOR)
def join_job(path: JobPath, body: JoinJob) -> tuple[Response, int]:
    """Join a job if this owner's policy allows it and its data can serve it.

    The answer says nothing about the data (not even the row count): the coordinator learns only
    that this owner takes part, and its signed job key. A refusal is a 422 with a code and the
    job column concerned; the details (file, row, value) stay in this owner's log and status.
    """
    spec = body.spec
    if spec.job_id != path.job_id:
        # Both are well-formed job ids; no document can say they must agree: a 422, not a 400.
        raise ProtocolViolation(f"body.spec.job_id: {spec.job_id!r} does not match the URL's job {path.job_id!r}")
    joined = current_app.extensions["job_book"].join(spec, body.public_key.key())
    logger.info("joined job %s (%s on %d features)", path.job_id, spec.model, len(spec.features))
    return answer(JobJoined(job_id=path.job_id, status="joined", member=joined.member))


@jobs.post(
    "/jobs/<job_id>/rounds",
    responses=responses(202, RoundAccepted, 400, 401, 403, 404, 422),
)
@requires(COORDINATOR)
def answer_round(path: JobPath, body: RoundRequest) -> tuple[Response, int]:
    """Accept a round; the encrypted reply is computed in the worker and sent to the coordinator.

    A gradient round brings encrypted weights and is answered with E(A_i w − b_i); a statistics
    round is answered with the encrypted feature sums precomputed at join time. The weights are
    checked against the job's key (fingerprint, width, range, gcd, count), and the round and its
    member set against this owner's policy, first: a 422 naming the field, or a refusal's code.
    """
    responder = current_app.extensions["responder"]
    responder.submit(responder.admit(current_app.extensions["job_book"].get(path.job_id), body))
    return answer(RoundAccepted(job_id=path.job_id, round=body.round, status="accepted"), 202)


@jobs.delete("/jobs/<job_id>", responses=responses(200, JobLeft, 400, 401, 403))
@requires(COORDINATOR)
def leave_job(path: JobPath) -> tuple[Response, int]:
    """Forget a job: its precomputed statistics and randomness are dropped."""
    current_app.extensions["job_book"].forget(path.job_id)
    return answer(JobLeft(job_id=path.job_id, status="left"))


owner = APIBlueprint(
    "owner", __name__, abp_tags=[Tag(name="owner", description="The owner's own status, for its operator.")]
)


@owner.get("/status", responses=responses(200, OwnerStatus, 401, 403))
@requires(OPERATOR)
def status() -> tuple[Response, int]:
    """The owner's policy, the model creator key it trusts, what it joined, refused and served.

    With differential privacy on, also its privacy ledger: every job charged (job, model creator
    key, ε, δ, ρ), what all of them cost together and what remains of the budget.
    """
    book = current_app.extensions["job_book"]
    ledger = current_app.extensions["ledger"]
    policy = book.policy
    trusted = None
    if policy.model_creator_key is not None:
        trusted = TrustedKey(fingerprint=policy.model_creator_key, source="pinned by the operator")
    elif (stored := ledger.trusted_key()) is not None:
        trusted = TrustedKey(fingerprint=stored["fingerprint"], source=stored["source"], since=stored["since"])
    return answer(
        OwnerStatus(
            name=book.name,
            identity_key=book.identity.public_text,
            policy=policy.model_dump(mode="json"),
            warnings=policy_warnings(policy),
            trusted_key=trusted,
            jobs=book.job_ids(),
            events=ledger.events(),
            served_sets=ledger.member_sets(),
            privacy=None if book.privacy is None else book.privacy.status(),
        )
    )


class AuditPath(BaseModel):
    # A path segment is text: the number is read from it (lax), then bounded.
    audit_id: Annotated[int, Field(ge=1, le=2**63 - 1, description="An audit entry's id.")]


def _audit() -> AuditTrail:
    audit: AuditTrail = current_app.extensions["audit"]
    return audit


@owner.get("/audit", responses=responses(200, AuditList, 400, 401, 403))
@requires(OPERATOR)
def list_audit(query: AuditQuery) -> tuple[Response, int]:
    """Every message that left this owner for another party, newest first, without the bodies.

    Its requests to the coordinator (``direction`` ``sent``: enrolment, contributions, refusals,
    deregistration) and its answers to the coordinator's calls (``answered``: joins with its job
    key, refusals, round acceptances, leave, error answers), each with when, to whom, method,
    path, kind, HTTP status, size and the SHA-256 of its exact bytes. Pages of ``limit`` entries;
    ``before`` (the previous page's ``next_before``) gives the older ones. Health checks, the
    operator's own calls and the public documents (page, API document) are not in it.
    """
    rows = _audit().entries(query.limit + 1, query.before)
    page = [AuditEntry.model_validate(row) for row in rows[: query.limit]]
    next_before = page[-1].id if len(rows) > query.limit else None
    return answer(AuditList(entries=page, next_before=next_before))


AUDIT_BODY = {
    "description": "The message's exact body bytes, as a download; their SHA-256 is the entry's ``sha256``.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


@owner.get("/audit/<audit_id>", responses={**responses(200, None, 400, 401, 403, 404), 200: AUDIT_BODY})
@requires(OPERATOR)
def audit_body(path: AuditPath) -> Response:
    """The exact bytes of one message that left this owner, as an attachment (the ciphertexts, downloadable).

    The headers repeat the entry: ``X-Audit-Kind``, ``X-Audit-SHA256`` (of the bytes returned).
    An id no entry has is a 404 naming it.
    """
    entry, body = _audit().entry(path.audit_id)
    response = send_file(
        io.BytesIO(body),
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=f"audit-{entry['id']}-{entry['kind']}.json",
        etag=entry["sha256"],
        max_age=0,
    )
    response.headers["X-Audit-Kind"] = entry["kind"]
    response.headers["X-Audit-SHA256"] = entry["sha256"]
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def audit_answer(response: Response) -> Response:
    """After each request: an answer on one of the coordinator's endpoints is recorded before it leaves.

    An answer that cannot be recorded is not given: it is replaced by a 503 (``Retry-After``)
    whose fixed text carries nothing of this owner's, so the audit stays complete.
    """
    view = current_app.view_functions.get(request.endpoint or "")
    if COORDINATOR not in getattr(view, "required_roles", ()):
        return response
    caller = getattr(g, "caller", None)
    peer = f"{caller.role if caller else 'unauthenticated caller'} at {request.remote_addr}"
    try:
        _audit().record_answer(peer, request.method, request.path, response.status_code, response.get_data())
    except StorageUnavailable as exc:
        refused = jsonify(error=exc.message, type=type(exc).__name__)
        refused.status_code = 503
        refused.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return refused
    return response
