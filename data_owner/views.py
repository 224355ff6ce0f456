"""HTTP endpoints of a data owner: join a job, answer rounds, leave a job."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify

from common.auth import COORDINATOR, requires
from common.errors import FederatedError, SchemaError, UpstreamError
from common.paillier import PublicKey
from common.protocol import GRADIENT, ROUND_KINDS, STATISTICS, JobSpec
from common.service import json_body
from common.statistics import encrypt_statistics
from common.wire import decode_ciphertexts, encode_ciphertexts, require_int

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
    public_key.check_fingerprint(spec.key_fingerprint, "spec.key_fingerprint")
    if not spec.layout.fits(public_key.bits):
        raise SchemaError("spec.layout: the slots do not fit the key's plaintext space")
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
    kind = body.get("kind", GRADIENT)
    if kind not in ROUND_KINDS:
        raise SchemaError(f"body.kind: expected one of {', '.join(ROUND_KINDS)}")
    weights = None
    if kind == GRADIENT:
        weights = decode_ciphertexts(
            body.get("encrypted_weights"), joined.public_key, "body.encrypted_weights", joined.spec.dimension
        )
    current_app.extensions["worker"].submit(
        _contribute_or_refuse,
        current_app.config,
        current_app.extensions["client"],
        current_app.extensions["processes"],
        current_app.extensions["enrolment"].credential,
        joined,
        round_number,
        attempt,
        kind,
        weights,
    )
    return jsonify(job_id=job_id, round=round_number, status="accepted"), 202


@jobs.delete("/jobs/<job_id>")
@requires(COORDINATOR)
def leave_job(job_id: str) -> tuple[Any, int]:
    current_app.extensions["job_book"].forget(job_id)
    return jsonify(job_id=job_id, status="left"), 200


def _contribute_or_refuse(
    config, client, processes, credential: str, joined, round_number: int, attempt: int, kind: str, weights: list | None
) -> None:
    """Reply to a round; if no reply can be computed, tell the coordinator why at once."""
    try:
        _contribute(config, client, processes, credential, joined, round_number, attempt, kind, weights)
    except UpstreamError:
        raise
    except Exception as exc:
        reason = exc.message if isinstance(exc, FederatedError) else f"internal error ({type(exc).__name__})"
        logger.exception("job %s round %d: no reply: %s", joined.spec.job_id, round_number, reason)
        client.post(
            f"{config['COORDINATOR_URL'].rstrip('/')}/jobs/{joined.spec.job_id}/rounds/{round_number}/refusals",
            {"data_owner": config["NAME"], "attempt": attempt, "error": reason},
            token=credential,
        )


def _contribute(
    config, client, processes, credential: str, joined, round_number: int, attempt: int, kind: str, weights: list | None
) -> None:
    """Compute the encrypted reply and post it to the coordinator (runs in the worker)."""
    if kind == STATISTICS:
        ciphertexts = encrypt_statistics(joined.public_key, joined.feature_sums, joined.spec, joined.pool)
    else:
        ciphertexts = joined.statistics.evaluate(
            joined.public_key, weights, joined.spec, joined.pool, processes.executor(), processes.parts
        )
    client.post(
        f"{config['COORDINATOR_URL'].rstrip('/')}/jobs/{joined.spec.job_id}/rounds/{round_number}/contributions",
        {
            "data_owner": config["NAME"],
            "attempt": attempt,
            "key_fingerprint": joined.public_key.fingerprint,
            "ciphertexts": encode_ciphertexts(ciphertexts, joined.public_key),
        },
        token=credential,
    )
