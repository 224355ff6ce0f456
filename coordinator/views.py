"""HTTP endpoints of the coordinator: thin parsing around the store and the round runner."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, current_app, g, jsonify

from common.service.auth import DATA_OWNER, ENROLMENT, MODEL_CREATOR, new_token, requires, token_digest
from common.protocol.errors import Conflict, FederatedError, Forbidden, SchemaError
from common.crypto.paillier import PublicKey
from common.protocol.spec import GRADIENT, JobSpec, require_round_kind
from common.service.app import json_body
from common.protocol.wire import decode_ciphertexts, require_int, require_str
from coordinator.rounds import RoundCollector

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

data_owners = Blueprint("data_owners", __name__)
jobs = Blueprint("jobs", __name__)


def _store():
    return current_app.extensions["coordinator_store"]


def _runner():
    return current_app.extensions["round_runner"]


@data_owners.post("/data_owners")
@requires(ENROLMENT)
def register_data_owner() -> tuple[Any, int]:
    """Enrol a data owner (with the enrolment secret): its name and the URL it serves rounds on.

    The answer carries the owner's own credential for calling the coordinator and the token the
    coordinator will present to it; enrolling again under the same name replaces both.
    """
    body = json_body()
    name = require_str(body, "name", max_length=64)
    if not NAME_PATTERN.fullmatch(name):
        raise SchemaError("body.name: letters, digits, '.', '-' and '_' only")
    url = require_str(body, "url", max_length=500)
    if not url.startswith(("http://", "https://")):
        raise SchemaError("body.url: expected an http:// or https:// URL")
    credential, coordinator_token = new_token(), new_token()
    created = _store().register_data_owner(name, url.rstrip("/"), token_digest(credential), coordinator_token)
    return jsonify(name=name, credential=credential, coordinator_token=coordinator_token), 201 if created else 200


@data_owners.get("/data_owners")
@requires(MODEL_CREATOR)
def list_data_owners() -> tuple[Any, int]:
    return jsonify(data_owners=[{"name": n, "url": a.url} for n, a in _store().data_owners().items()]), 200


@jobs.post("/jobs")
@requires(MODEL_CREATOR)
def create_job() -> tuple[Any, int]:
    """The model creator opens a job: its spec, public key and where aggregates go."""
    body = json_body()
    spec = JobSpec.from_json(body.get("spec"))
    public_key = PublicKey.from_json(body.get("public_key"))
    spec.check_key(public_key)
    callback_url = require_str(body, "callback_url", max_length=500).rstrip("/")
    if not callback_url.startswith(("http://", "https://")):
        raise SchemaError("body.callback_url: expected an http:// or https:// URL")
    _store().create_job(spec.job_id, spec.to_json(), public_key.to_json(), callback_url)
    return jsonify(job_id=spec.job_id, status="running"), 201


@jobs.get("/jobs/<job_id>")
@requires(MODEL_CREATOR)
def show_job(job_id: str) -> tuple[Any, int]:
    job = _store().job(job_id)
    return jsonify(
        job_id=job_id, status=job["status"], error=job["error"], spec=job["spec"], rounds=_store().rounds(job_id)
    ), 200


@jobs.post("/jobs/<job_id>/rounds")
@requires(MODEL_CREATOR)
def start_round(job_id: str) -> tuple[Any, int]:
    """The model creator hands over the encrypted weights of the next round."""
    job = _store().job(job_id)
    if job["status"] != "running":
        raise Conflict(f"job {job_id} is {job['status']}")
    body = json_body()
    spec, public_key = _runner().job_keys(job_id)
    public_key.check_fingerprint(body.get("key_fingerprint"), "body.key_fingerprint")
    round_number = require_int(body, "round", maximum=1_000_000)
    kind = require_round_kind(body)
    weights = body.get("encrypted_weights") if kind == GRADIENT else None
    if kind == GRADIENT:
        decode_ciphertexts(weights, public_key, "body.encrypted_weights", spec.dimension)
    outcome = _runner().request_round(job_id, round_number, kind, weights)
    return jsonify(job_id=job_id, round=round_number, status=outcome), 202


@jobs.post("/jobs/<job_id>/rounds/<int:round_number>/contributions")
@requires(DATA_OWNER)
def contribute(job_id: str, round_number: int) -> tuple[Any, int]:
    """A data owner's packed, encrypted reply to a round it was asked for."""
    body = json_body()
    owner, collector = _callers_round(body, job_id, round_number)
    spec, public_key = _runner().job_keys(job_id)
    try:
        public_key.check_fingerprint(body.get("key_fingerprint"), "body.key_fingerprint")
        ciphertexts = decode_ciphertexts(
            body.get("ciphertexts"), public_key, "body.ciphertexts", spec.reply_ciphertexts(collector.kind)
        )
    except FederatedError as exc:
        # A bad reply is that owner's failure for this round; the round and the job go on.
        collector.fail(owner, f"invalid reply: {exc.message}")
        raise
    collector.add(owner, ciphertexts)
    return jsonify(status="accepted"), 202


@jobs.post("/jobs/<job_id>/rounds/<int:round_number>/refusals")
@requires(DATA_OWNER)
def refuse(job_id: str, round_number: int) -> tuple[Any, int]:
    """A data owner that cannot reply to a round says so, so the round need not wait for it."""
    body = json_body()
    owner, collector = _callers_round(body, job_id, round_number)
    error = require_str(body, "error", max_length=2000)
    collector.fail(owner, f"could not reply: {error}")
    return jsonify(status="accepted"), 202


def _callers_round(body: dict[str, Any], job_id: str, round_number: int) -> tuple[str, RoundCollector]:
    """The calling data owner's name (it may speak only for itself) and the open attempt it names."""
    owner = require_str(body, "data_owner", max_length=64)
    if owner != g.caller.name:
        raise Forbidden(f"data owner {g.caller.name!r} may not speak for {owner!r}")
    attempt = require_int(body, "attempt", minimum=1, maximum=1000)
    return owner, current_app.extensions["round_registry"].get(job_id, round_number, attempt)


@jobs.post("/jobs/<job_id>/finish")
@requires(MODEL_CREATOR)
def finish_job(job_id: str) -> tuple[Any, int]:
    """The model creator closes a job, finished or failed; owners drop their state for it."""
    _store().job(job_id)
    body = json_body()
    status = require_str(body, "status", max_length=20)
    if status not in ("finished", "failed"):
        raise SchemaError("body.status: expected 'finished' or 'failed'")
    error = body.get("error") if isinstance(body.get("error"), str) else None
    _store().set_job_status(job_id, status, error)
    _runner().worker.submit(_runner().forget_job, job_id)
    return jsonify(job_id=job_id, status=status), 200
