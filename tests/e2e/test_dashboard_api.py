"""What the dashboards read from real parties: an owner's audit against its traffic log, the coordinator's operator views.

Each data owner runs with ``--traffic-log`` (a record of every byte it exchanges, written by a
WSGI middleware and its HTTP client, independently of the audit) while a job trains. Its audit
(``GET /audit``) must list exactly the messages that left it in that log: every request it sent
(``sent`` records) and every answer it gave on the coordinator's endpoints (``answered``
records of ``/jobs/...``), in the same order, with equal bodies. The log redacts secrets
(``common/service/audit.py``): a body holding a secret key is logged re-serialised with the value
``[redacted]``, so for those the audit's exact bytes, redacted the same way, must equal the logged
text; every other body must be byte-equal, size and SHA-256 included. Left out of the comparison,
as out of the audit: the health checks, the operator's own calls (``/status``, ``/audit``) and
what the owner received (requests to it, replies to its requests).

The coordinator's side: the operator (its own token) lists the job, reads it with per-round
member sets, timings and sizes, and the contribution sizes it reports equal the sizes of the
contributions the owners' audits recorded as sent. The offline marking survives a restart of
the coordinator.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
from e2e_support import get_json, running_federation, traffic_records, wait_coordinator_job
from support import SHIPPED, SHIPPED_OWNERS

from common.service.audit import REDACTED, redact
from local_federation.cluster import LocalFederation

pytestmark = pytest.mark.e2e

JOB = {"features": ["age", "bmi", "bp"], "label": "progression", "min_data_owners": 2}
# What the owner serves for itself or for everyone alike: not messages to another party.
NOT_AUDITED = ("/health", "/status", "/audit", "/openapi.json", "/docs", "/assets/")


def _operator(federation: LocalFederation, party: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {federation.operator_token(party)}"}


def _audit(federation: LocalFederation, name: str, limit: int = 7) -> list[dict[str, Any]]:
    """The owner's whole audit, oldest first, read page by page (``limit`` per page) as a page would."""
    url, headers = f"{federation.data_owner(name).url}/audit", _operator(federation, f"data_owner:{name}")
    entries: list[dict[str, Any]] = []
    before = None
    while True:
        page = get_json(federation, f"{url}?limit={limit}" + (f"&before={before}" if before else ""), headers)
        assert len(page["entries"]) <= limit
        entries += page["entries"]
        before = page["next_before"]
        if before is None:
            return entries[::-1]


def _body(federation: LocalFederation, name: str, entry_id: int) -> bytes:
    response = federation.session.get(
        f"{federation.data_owner(name).url}/audit/{entry_id}",
        headers=_operator(federation, f"data_owner:{name}"),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Content-Type"] == "application/octet-stream"
    return response.content


def _logged_messages(federation: LocalFederation, name: str) -> list[tuple[str, str, str]]:
    """(direction, peer, body) of every message that left the owner, as its traffic log has them."""
    left = []
    for record in traffic_records(federation.owner_traffic_log(name)):
        if record["direction"] == "sent":
            left.append(("sent", record["peer"], record["body"]))
        elif record["direction"] == "answered" and not record["peer"].startswith(NOT_AUDITED) and record["peer"] != "/":
            left.append(("answered", record["peer"], record["body"]))
    return left


def _wait_for_leave(federation: LocalFederation, name: str, job_id: str) -> list[dict[str, Any]]:
    """The audit once the coordinator has released the job at the owner (the last message of a job)."""
    deadline = time.monotonic() + 60
    while True:
        entries = _audit(federation, name)
        left = [entry for entry in entries if entry["kind"] == "leave" and entry["path"] == f"/jobs/{job_id}"]
        if left and len(_logged_messages(federation, name)) == len(entries):
            return entries
        assert time.monotonic() < deadline, f"{name}: no leave of job {job_id} in its audit: {entries[-3:]}"
        time.sleep(0.2)


def test_the_audit_lists_exactly_what_the_traffic_log_saw_leave_and_the_coordinator_counts_the_same_bytes(tmp_path):
    with running_federation(tmp_path / "federation", SHIPPED_OWNERS[:2], SHIPPED / "test.csv",
                            owner_traffic_logs=True) as federation:
        model = federation.train(JOB)
        assert model["status"] == "finished", model
        job = wait_coordinator_job(federation, model["model_id"])
        audits = {name: _wait_for_leave(federation, name, model["model_id"]) for name, _ in SHIPPED_OWNERS[:2]}

        for name, entries in audits.items():
            logged = _logged_messages(federation, name)
            assert [(entry["direction"], entry["peer"] if entry["direction"] == "sent" else entry["path"])
                    for entry in entries] == [(direction, peer) for direction, peer, _ in logged]
            redacted = 0
            for entry, (_, _, logged_body) in zip(entries, logged, strict=True):
                body = _body(federation, name, entry["id"])
                assert len(body) == entry["size"] and hashlib.sha256(body).hexdigest() == entry["sha256"]
                assert redact(body.decode()) == logged_body
                if REDACTED in logged_body:
                    redacted += 1
                else:
                    assert logged_body.encode() == body, f"{name} audit entry {entry['id']} differs from the log"
            # The owner's messages carry no secret key (its credentials travel in headers): all compared whole.
            assert redacted == 0
            kinds = [entry["kind"] for entry in entries]
            assert kinds[0] == "enrolment" and kinds[-1] == "leave"
            rounds = len(job["rounds"])
            assert kinds.count("join") == 1
            assert kinds.count("round_acceptance") == rounds and kinds.count("contribution") == rounds
            assert all(entry["status"] in (200, 201, 202) for entry in entries), entries
            contribution = json.loads(_body(federation, name, next(e["id"] for e in entries
                                                                    if e["kind"] == "contribution")))
            assert contribution["data_owner"] == name and contribution["ciphertexts"]

        # The coordinator's operator: the job in its list, and per round who was asked, when, how many bytes.
        coordinator = federation.coordinator.url
        listed = get_json(federation, f"{coordinator}/jobs", _operator(federation, "coordinator"))["jobs"]
        assert listed[0]["job_id"] == model["model_id"] and listed[0]["rounds"] == len(job["rounds"])
        assert listed[0]["status"] == "finished" and listed[0]["features"] == JOB["features"]
        shown = get_json(federation, f"{coordinator}/jobs/{model['model_id']}", _operator(federation, "coordinator"))
        sent_sizes = {name: [entry["size"] for entry in entries if entry["kind"] == "contribution"]
                      for name, entries in audits.items()}
        for index, summary in enumerate(shown["rounds"]):
            assert summary["members"] == ["owner_a", "owner_b"]
            assert summary["started_at"] <= summary["finished_at"]
            assert summary["aggregate_bytes"] > 0
            assert summary["contribution_bytes"] == {name: sizes[index] for name, sizes in sent_sizes.items()}
        owners = get_json(federation, f"{coordinator}/data_owners", _operator(federation, "coordinator"))
        assert [owner["name"] for owner in owners["data_owners"]] == ["owner_a", "owner_b"]


def test_an_owner_marked_offline_is_still_offline_after_the_coordinator_restarts(tmp_path):
    with running_federation(tmp_path / "federation", SHIPPED_OWNERS, SHIPPED / "test.csv") as federation:
        federation.data_owner("owner_c").stop()
        model = federation.train({**JOB, "min_data_owners": 2})
        assert model["status"] == "finished", model
        url = f"{federation.coordinator.url}/data_owners"
        before = {owner["name"]: owner for owner in get_json(federation, url, _operator(federation, "coordinator"))
                  ["data_owners"]}
        assert before["owner_c"]["online"] is False and before["owner_c"]["offline_since"] is not None
        assert before["owner_a"]["online"] is True and before["owner_a"]["offline_since"] is None

        federation.restart(federation.coordinator)
        after = {owner["name"]: owner for owner in get_json(federation, url, _operator(federation, "coordinator"))
                 ["data_owners"]}
        for field in ("online", "offline_reason", "offline_since"):
            assert after["owner_c"][field] == before["owner_c"][field], field
        assert after["owner_a"]["online"] is True
        # The model creator's user sees the same, with the reason (GET /federation, its page's table).
        shown = {owner["name"]: owner for owner in get_json(federation, f"{federation.model_creator.url}/federation")
                 ["data_owners"]}
        assert shown["owner_c"]["online"] is False and shown["owner_c"]["offline_reason"] == before["owner_c"]["offline_reason"]
        assert before["owner_c"]["offline_reason"].startswith("not reached "), before["owner_c"]
        assert shown["owner_a"]["online"] is True and shown["owner_a"]["offline_reason"] is None
