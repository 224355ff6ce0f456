"""The coordinator's persistent state: the data-owner registry, jobs and the record of rounds.

Nothing here is secret: ciphertexts in transit live only in memory for the length of a round.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from common.protocol.errors import Conflict, NotFound
from common.service.storage import SQLiteStore


class DataOwnerAddress(NamedTuple):
    """Where a data owner serves rounds, and the token the coordinator presents to it."""

    url: str
    token: str


class CoordinatorStore(SQLiteStore):
    schema = """
    CREATE TABLE IF NOT EXISTS data_owners (
        name TEXT PRIMARY KEY, url TEXT NOT NULL, credential_digest TEXT NOT NULL UNIQUE,
        coordinator_token TEXT NOT NULL, registered_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY, spec TEXT NOT NULL, public_key TEXT NOT NULL,
        callback_url TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rounds (
        job_id TEXT NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL, attempts INTEGER NOT NULL,
        status TEXT NOT NULL, contributors TEXT NOT NULL, failures TEXT NOT NULL,
        started_at REAL NOT NULL, seconds REAL, weights TEXT, aggregate TEXT, delivered INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, round)
    );
    """

    def register_data_owner(self, name: str, url: str, credential_digest: str, coordinator_token: str) -> bool:
        """Add or re-enrol a data owner (new credentials replace old ones); True when it is new."""
        with self.connect() as db:
            known = db.execute("SELECT 1 FROM data_owners WHERE name = ?", (name,)).fetchone()
            db.execute(
                "INSERT INTO data_owners (name, url, credential_digest, coordinator_token, registered_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET url = excluded.url,"
                " credential_digest = excluded.credential_digest, coordinator_token = excluded.coordinator_token,"
                " registered_at = excluded.registered_at",
                (name, url, credential_digest, coordinator_token, time.time()),
            )
        return known is None

    def data_owners(self) -> dict[str, DataOwnerAddress]:
        """Registered data owners: name → address."""
        with self.connect() as db:
            rows = db.execute("SELECT name, url, coordinator_token FROM data_owners ORDER BY name")
            return {row["name"]: DataOwnerAddress(row["url"], row["coordinator_token"]) for row in rows}

    def data_owner_by_credential(self, credential_digest: str) -> str | None:
        """The name of the data owner holding a credential, if any."""
        with self.connect() as db:
            row = db.execute(
                "SELECT name FROM data_owners WHERE credential_digest = ?", (credential_digest,)
            ).fetchone()
        return row["name"] if row else None

    def create_job(self, job_id: str, spec: dict, public_key: dict, callback_url: str) -> None:
        now = time.time()
        with self.connect() as db:
            if db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone():
                raise Conflict(f"job {job_id} already exists")
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, 'running', NULL, ?, ?)",
                (job_id, json.dumps(spec), json.dumps(public_key), callback_url, now, now),
            )

    def job(self, job_id: str) -> dict[str, Any]:
        with self.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} is unknown to the coordinator")
        job = dict(row)
        job["spec"] = json.loads(job["spec"])
        job["public_key"] = json.loads(job["public_key"])
        return job

    def set_job_status(self, job_id: str, status: str, error: str | None = None) -> None:
        with self.connect() as db:
            db.execute(
                "UPDATE jobs SET status = ?, error = ?, updated_at = ? WHERE job_id = ?",
                (status, error, time.time(), job_id),
            )

    def start_round(self, job_id: str, round_number: int, kind: str, weights: list[str] | None) -> None:
        """Record a round as started, with the encrypted weights it evaluates (to resume it)."""
        with self.connect() as db:
            if db.execute("SELECT 1 FROM rounds WHERE job_id = ? AND round = ?", (job_id, round_number)).fetchone():
                raise Conflict(f"round {round_number} of job {job_id} was already started")
            db.execute(
                "INSERT INTO rounds VALUES (?, ?, ?, 0, 'running', '[]', '{}', ?, NULL, ?, NULL, 0)",
                (job_id, round_number, kind, time.time(), json.dumps(weights)),
            )

    def round(self, job_id: str, round_number: int) -> dict[str, Any] | None:
        """A round's full record (weights and aggregate included), or None."""
        with self.connect() as db:
            row = db.execute("SELECT * FROM rounds WHERE job_id = ? AND round = ?", (job_id, round_number)).fetchone()
        if row is None:
            return None
        record = dict(row)
        record["weights"] = json.loads(record["weights"]) if record["weights"] else None
        record["aggregate"] = json.loads(record["aggregate"]) if record["aggregate"] else None
        return record

    def unfinished_rounds(self) -> list[tuple[str, int, str]]:
        """(job, round, status) of the rounds of running jobs that a restart must pick up.

        Those still running, and those whose aggregate was not delivered yet.
        """
        with self.connect() as db:
            rows = db.execute(
                "SELECT r.job_id, r.round, r.status FROM rounds r JOIN jobs j ON j.job_id = r.job_id"
                " WHERE j.status = 'running' AND (r.status = 'running' OR (r.status = 'aggregated'"
                " AND r.delivered = 0)) ORDER BY r.started_at"
            ).fetchall()
        return [(row["job_id"], row["round"], row["status"]) for row in rows]

    def set_delivered(self, job_id: str, round_number: int) -> None:
        with self.connect() as db:
            db.execute("UPDATE rounds SET delivered = 1 WHERE job_id = ? AND round = ?", (job_id, round_number))

    def set_attempts(self, job_id: str, round_number: int, attempts: int) -> None:
        with self.connect() as db:
            db.execute(
                "UPDATE rounds SET attempts = ? WHERE job_id = ? AND round = ?", (attempts, job_id, round_number)
            )

    def finish_round(
        self,
        job_id: str,
        round_number: int,
        status: str,
        attempts: int,
        contributors: list[str],
        failures: dict[str, str],
        seconds: float,
        aggregate: dict[str, Any] | None = None,
    ) -> None:
        """Close a round, keeping its aggregate message until the model creator has it for sure."""
        with self.connect() as db:
            db.execute(
                "UPDATE rounds SET status = ?, attempts = ?, contributors = ?, failures = ?, seconds = ?,"
                " aggregate = ? WHERE job_id = ? AND round = ?",
                (
                    status,
                    attempts,
                    json.dumps(contributors),
                    json.dumps(failures),
                    seconds,
                    json.dumps(aggregate) if aggregate else None,
                    job_id,
                    round_number,
                ),
            )

    def rounds(self, job_id: str) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute("SELECT * FROM rounds WHERE job_id = ? ORDER BY round", (job_id,)).fetchall()
        return [
            {
                "round": r["round"],
                "kind": r["kind"],
                "status": r["status"],
                "attempts": r["attempts"],
                "contributors": json.loads(r["contributors"]),
                "failures": json.loads(r["failures"]),
                "seconds": r["seconds"],
            }
            for r in rows
        ]
