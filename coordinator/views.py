"""HTTP endpoints of the coordinator: typed messages around the store and the round runner.

Three blueprints, one per resource and caller: the data-owner registry (enrolment with the
enrolment secret, the list for the model creator), jobs and their rounds (the model creator's),
and the data owners' contributions and refusals to a round they were asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from flask import Response, current_app, g, request
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag
from pydantic import BaseModel, Field

from common.crypto.paillier import SECURE_KEY_BITS
from common.protocol.errors import Conflict, FederatedError, Forbidden, NotFound, ProtocolViolation
from common.protocol.messages import (
    MAX_ROUND,
    Accepted,
    Contribution,
    DataOwnerEntry,
    DataOwnerList,
    Deregistered,
    Deregistration,
    Enrolled,
    Enrolment,
    FinishJob,
    JobFinished,
    JobList,
    JobListQuery,
    JobOpened,
    JobRecord,
    OpenJob,
    OwnerName,
    Refusal,
    RoundOrder,
    RoundStarted,
    ciphertexts_under,
)
from common.protocol.spec import GRADIENT, JobId
from common.service.app import answer, responses, settings_of
from common.service.auth import (
    DATA_OWNER,
    ENROLMENT,
    MODEL_CREATOR,
    OPERATOR,
    new_token,
    requires,
    token_digest,
)
from coordinator.config import CoordinatorSettings
from coordinator.liveness import Liveness
from coordinator.policy import refusal_reason
from coordinator.rounds import RoundCollector, RoundRegistry
from coordinator.runner import RoundRunner
from coordinator.store import CoordinatorStore

logger = logging.getLogger(__name__)

data_owners = APIBlueprint(
    "data_owners",
    __name__,
    abp_tags=[Tag(name="data owners", description="Enrolment and the registry of data owners.")],
)
jobs = APIBlueprint(
    "jobs", __name__, abp_tags=[Tag(name="jobs", description="Jobs and their rounds, opened by the model creator.")]
)
contributions = APIBlueprint(
    "contributions",
    __name__,
    abp_tags=[Tag(name="contributions", description="Data owners' encrypted replies to a round.")],
)


class JobPath(BaseModel):
    job_id: JobId


class RoundPath(BaseModel):
    job_id: JobId
    # A path segment is text: the number is read from it (lax), then bounded as every round number.
    round_number: Annotated[int, Field(ge=0, le=MAX_ROUND)]


def _liveness() -> Liveness:
    runner: RoundRunner = current_app.extensions["round_runner"]
    return runner.liveness


def _store() -> CoordinatorStore:
    store: CoordinatorStore = current_app.extensions["coordinator_store"]
    return store


def _runner() -> RoundRunner:
    runner: RoundRunner = current_app.extensions["round_runner"]
    return runner


def _now() -> float:
    """The coordinator's wall clock, in seconds since 1970 (tests inject theirs through ``create_app``)."""
    clock: Callable[[], float] = current_app.extensions["clock"]
    return clock()


# --- the data-owner registry ----------------------------------------------------------------


@data_owners.post(
    "/data_owners",
    responses={**responses(201, Enrolled, 400, 401, 403), 200: Enrolled},
)
@requires(ENROLMENT)
def register_data_owner(body: Enrolment) -> tuple[Response, int]:
    """Enrol a data owner (with the enrolment secret): its name, the URL it serves rounds on, its identity key.

    The enrolment is signed by the owner's identity key, at most ``enrolment_window`` seconds
    from the coordinator's clock. The first enrolment binds the name to that key; enrolling again
    under the name needs a signature by the same key, made later than the last enrolment accepted
    (PROTOCOL.md section 9). The enrolment secret alone is shared by every owner: without the
    binding, any holder of it could take over another owner's name, and its place in the member
    sets other owners rely on.

    The answer carries the owner's own credential for calling the coordinator and the token the
    coordinator will present to it; enrolling again replaces both (201 for a new owner, 200 for
    one enrolled again). Only the credential's digest is stored. A refused enrolment (403) leaves
    the owner's credentials as they were.
    """
    body.verify()
    settings: CoordinatorSettings = current_app.extensions["settings"]
    window = settings.enrolment_window
    drift = body.signed_at - _now()
    if abs(drift) > window:
        raise Forbidden(
            f"body.signed_at: the enrolment was signed {abs(drift):.0f} s {'after' if drift > 0 else 'before'}"
            f" the coordinator's time; at most {window:g} s either way is accepted"
        )
    credential, coordinator_token = new_token(), new_token()
    created = _store().register_data_owner(
        body.name,
        body.url.rstrip("/"),
        body.identity_key,
        body.signed_at,
        token_digest(credential),
        coordinator_token,
        body.columns,
    )
    _liveness().seen(body.name)
    enrolled = Enrolled(name=body.name, credential=credential, coordinator_token=coordinator_token)
    return answer(enrolled, 201 if created else 200)


@data_owners.get("/data_owners", responses=responses(200, DataOwnerList, 401, 403))
@requires(MODEL_CREATOR, OPERATOR)
def list_data_owners() -> tuple[Response, int]:
    """The registered data owners: URL, published columns, liveness (never a credential).

    For the model creator and the federation's operator. ``online`` is false for an owner marked
    offline (silent in a round, not reached to join), since ``offline_since``: no attempt asks it
    until it answers its health check again, also after a restart of the coordinator, which keeps
    the marking. ``last_seen`` is when it last enrolled, replied or answered a health check, since
    this coordinator started (``None``: not since).
    """
    store = _store()
    columns = store.published_columns()
    liveness = _liveness()
    offline, since, seen = liveness.offline(), liveness.offline_since(), liveness.last_seen()
    entries = [
        DataOwnerEntry(
            name=name,
            url=address.url,
            columns=columns.get(name, []),
            online=name not in offline,
            offline_reason=offline.get(name),
            offline_since=since.get(name),
            last_seen=seen.get(name),
        )
        for name, address in store.data_owners().items()
    ]
    return answer(DataOwnerList(data_owners=entries))


class OwnerPath(BaseModel):
    name: OwnerName


@data_owners.delete("/data_owners/<name>", responses=responses(200, Deregistered, 400, 401, 403, 404))
@requires(OPERATOR)
def remove_data_owner(path: OwnerPath) -> tuple[Response, int]:
    """Remove a data owner from the federation (the federation operator's credential).

    Its credentials stop working, no later attempt of any job asks it, and it must enrol again to
    come back (under the identity key its name was bound to, which the coordinator forgets too).
    """
    if not _store().remove_data_owner(path.name):
        raise NotFound(f"data owner {path.name!r} is not registered")
    _liveness().forget(path.name)
    logger.info("data owner %s removed by the operator", path.name)
    return answer(Deregistered(name=path.name, status="removed"))


@data_owners.post("/data_owners/<name>/deregistration", responses=responses(200, Deregistered, 400, 401, 403, 404))
@requires(DATA_OWNER)
def deregister_data_owner(path: OwnerPath, body: Deregistration) -> tuple[Response, int]:
    """A data owner leaves the federation: with its own credential, signed with its identity key."""
    if g.caller.name != path.name:
        raise Forbidden(f"data owner {g.caller.name!r} may not deregister {path.name!r}")
    identity_key = _store().identity_key(path.name)
    if identity_key is None:
        raise Forbidden(f"data owner {path.name!r} has no identity key bound; it cannot sign its deregistration")
    body.verify(path.name, identity_key)
    window = current_app.extensions["settings"].enrolment_window
    if abs(body.signed_at - _now()) > window:
        raise Forbidden(f"body.signed_at: the deregistration was not signed within {window:g} s of now")
    _store().remove_data_owner(path.name)
    _liveness().forget(path.name)
    logger.info("data owner %s deregistered itself", path.name)
    return answer(Deregistered(name=path.name, status="removed"))


# --- jobs and rounds ------------------------------------------------------------------------


@jobs.before_request
def known_job() -> None:
    """A call about an unknown job is a 404 before its body is looked at."""
    job_id = (request.view_args or {}).get("job_id")
    if job_id is not None:
        _store().job(str(job_id))


@jobs.post("/jobs", responses=responses(201, JobOpened, 400, 401, 403, 409))
@requires(MODEL_CREATOR)
def create_job(body: OpenJob) -> tuple[Response, int]:
    """Open a job: its spec, the public key it is computed under and where aggregates go.

    The spec and key are checked against each other; a key under 2048 bits is a 422; a job id
    used before is a 409 and leaves the first job as it was.
    """
    public_key = body.public_key.key()
    settings = settings_of(current_app, CoordinatorSettings)
    if public_key.bits < SECURE_KEY_BITS and not settings.test_only_small_keys:
        raise ProtocolViolation(
            f"body.public_key.n: a key of {public_key.bits} bits; jobs need {SECURE_KEY_BITS} or more"
            " (smaller keys only behind the coordinator's test-only flag)"
        )
    job = _store().create_job(body.spec, public_key, body.callback_url.rstrip("/"))
    return answer(JobOpened(job_id=job.job_id, status="running"), 201)


@jobs.get("/jobs", responses=responses(200, JobList, 400, 401, 403))
@requires(MODEL_CREATOR, OPERATOR)
def list_jobs(query: JobListQuery) -> tuple[Response, int]:
    """The jobs, newest first (at most ``limit``): status, what each trains, how many rounds it started.

    For the federation's operator and the model creator. Nothing in it is a value of any party's
    data: the coordinator never has one.
    """
    return answer(JobList(jobs=_store().job_summaries(query.limit)))


@jobs.get("/jobs/<job_id>", responses=responses(200, JobRecord, 400, 401, 403, 404))
@requires(MODEL_CREATOR, OPERATOR)
def show_job(path: JobPath) -> tuple[Response, int]:
    """A job's status, spec and the record of its rounds, for the model creator and the operator.

    Per round: who was asked in each attempt (``attempt_log``, and ``members`` for the latest),
    who contributed, who failed and why, when it started and ended, and the sizes of what moved
    (``contribution_bytes`` of each member's reply received, ``aggregate_bytes`` of the aggregate
    sent to the model creator). Ciphertexts and metadata only, as everything the coordinator has.
    """
    job = _store().job(path.job_id)
    rounds = [state.summary() for state in _store().rounds(path.job_id)]
    record = JobRecord(
        job_id=job.job_id,
        status=job.status,
        error=job.error,
        spec=job.spec,
        rounds=rounds,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )
    return answer(record)


@jobs.post(
    "/jobs/<job_id>/rounds",
    responses=responses(202, RoundStarted, 400, 401, 403, 404, 409, 422),
)
@requires(MODEL_CREATOR)
def start_round(path: JobPath, body: RoundOrder) -> tuple[Response, int]:
    """Run a round with the encrypted weights it evaluates (none in a statistics round).

    Asking again for a round picks it up: one still running goes on, an aggregated one is
    delivered again, a failed one is a 409. The weights are checked against the job's key
    (fingerprint, width, range, gcd with n) and its dimension before any owner sees them; what
    fails there is a 422, since no document can tell which values fit the job.
    """
    job = _store().job(path.job_id)
    if job.status != "running":
        raise Conflict(f"job {job.job_id} is {job.status}")
    job.public_key.check_fingerprint(body.key_fingerprint, "body.key_fingerprint")
    job.spec.check_round_kind(body.kind, "body.kind")
    weights = None
    if body.kind == GRADIENT and body.encrypted_weights is not None:
        ciphertexts_under(body.encrypted_weights, job.public_key, "body.encrypted_weights", job.spec.dimension)
        weights = list(body.encrypted_weights)
    outcome = _runner().request_round(job.job_id, body.round, body.kind, weights)
    started = RoundStarted(job_id=job.job_id, round=body.round, status=outcome)
    if outcome == "resumed" and (fault := _runner().take_fault(job.job_id, body.round)) is not None:
        started = RoundStarted(job_id=job.job_id, round=body.round, status=outcome, interrupted_by=fault)
    return answer(started, 202)


@jobs.post("/jobs/<job_id>/finish", responses=responses(200, JobFinished, 400, 401, 403, 404))
@requires(MODEL_CREATOR)
def finish_job(path: JobPath, body: FinishJob) -> tuple[Response, int]:
    """Close a job, finished or failed; the owners that joined it drop their state for it."""
    _store().set_job_status(path.job_id, body.status, body.error)
    _runner().worker.submit(_runner().forget_job, path.job_id)
    return answer(JobFinished(job_id=path.job_id, status=body.status))


# --- contributions --------------------------------------------------------------------------


@contributions.post(
    "/jobs/<job_id>/rounds/<round_number>/contributions",
    responses=responses(202, Accepted, 400, 401, 403, 409, 422),
)
@requires(DATA_OWNER)
def contribute(path: RoundPath, body: Contribution) -> tuple[Response, int]:
    """A data owner's packed, encrypted reply to a round it was asked for.

    A reply that fails a check of the job's key (fingerprint, width, range, gcd, count) is that
    owner's failure for the round, which goes on without it.
    """
    collector = _callers_round(path, body.data_owner, body.attempt)
    job = _store().job(path.job_id)
    try:
        job.public_key.check_fingerprint(body.key_fingerprint, "body.key_fingerprint")
        ciphertexts = ciphertexts_under(
            body.ciphertexts, job.public_key, "body.ciphertexts", job.spec.reply_ciphertexts(collector.kind)
        )
    except FederatedError as exc:
        collector.fail(body.data_owner, f"invalid reply: {exc.message}")
        raise
    collector.add(body.data_owner, ciphertexts, request.content_length or len(request.get_data()))
    return answer(Accepted(status="accepted"), 202)


@contributions.post(
    "/jobs/<job_id>/rounds/<round_number>/refusals",
    responses=responses(202, Accepted, 400, 401, 403, 409),
)
@requires(DATA_OWNER)
def refuse(path: RoundPath, body: Refusal) -> tuple[Response, int]:
    """A data owner that will not reply to a round says so, so the round need not wait for it.

    The refusal is a fixed code and, optionally, the job column concerned; that is all that is
    recorded of it, and the attempt, which needs every member's reply, is over.
    """
    collector = _callers_round(path, body.data_owner, body.attempt)
    collector.fail(body.data_owner, refusal_reason(body.code, body.column))
    return answer(Accepted(status="accepted"), 202)


def _callers_round(path: RoundPath, data_owner: str, attempt: int) -> RoundCollector:
    """The open attempt a data owner names; it may speak only for itself.

    Raises
    ------
    Forbidden
        When the calling owner names another owner.
    Conflict
        When the attempt is not open (late, unknown, or of another round or job).
    """
    if data_owner != g.caller.name:
        raise Forbidden(f"data owner {g.caller.name!r} may not speak for {data_owner!r}")
    registry: RoundRegistry = current_app.extensions["round_registry"]
    collector = registry.get(path.job_id, path.round_number, attempt)
    _liveness().seen(data_owner)
    return collector
