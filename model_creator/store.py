"""The model creator's persistent state.

Every model (its request, status, result and run state) and the history of its rounds, in
SQLite under the state directory. A model's status is the persisted part of its job's state
(:mod:`model_creator.job`): ``pending``, then ``running`` (with the round it awaits), then
``finished``, ``failed`` or ``cancelled``. A model in a final state is ``closed`` once the
coordinator has closed its job too; until then the trainer tells the coordinator again, so their
views of a job cannot disagree for good.

Schema versions: 1 is the first (0 when made before versions were recorded); 2 adds ``closed``
(models of older files count as closed, as they were closed or abandoned under the old rules).
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

from common.protocol.errors import NotFound
from common.protocol.messages import ModelRecord, RoundHistory
from common.service.storage import SQLiteStore


@dataclass(frozen=True)
class Unfinished:
    """A pending or running model as a restart finds it: its request and its saved run state."""

    model_id: str
    status: str
    request: dict[str, Any]
    state: dict[str, Any] | None


class ModelStore(SQLiteStore):
    schema = """
    CREATE TABLE IF NOT EXISTS models (
        model_id TEXT PRIMARY KEY, status TEXT NOT NULL, request TEXT NOT NULL,
        key_fingerprint TEXT, round INTEGER NOT NULL DEFAULT 0, error TEXT, result TEXT, state TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, closed INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE IF NOT EXISTS history (
        model_id TEXT NOT NULL, round INTEGER NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (model_id, round)
    );
    """
    version = 2

    def migrate(self, connection: sqlite3.Connection, from_version: int) -> None:
        """Schema 0 is schema 1; schema 2 adds ``closed``."""
        if from_version == 1:
            connection.execute("ALTER TABLE models ADD COLUMN closed INTEGER NOT NULL DEFAULT 1")

    def create(self, request: dict[str, Any]) -> str:
        """Record a new pending model, not yet closed at the coordinator; returns its id."""
        model_id = uuid.uuid4().hex[:16]
        now = time.time()
        with self.connect() as db:
            db.execute(
                "INSERT INTO models (model_id, status, request, created_at, updated_at, closed)"
                " VALUES (?, 'pending', ?, ?, ?, 0)",
                (model_id, json.dumps(request), now, now),
            )
        return model_id

    def unclosed(self) -> list[tuple[str, str, str | None]]:
        """Models in a final state whose job the coordinator has not closed yet: (id, status, error)."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT model_id, status, error FROM models"
                " WHERE closed = 0 AND status IN ('finished', 'failed', 'cancelled') ORDER BY rowid"
            ).fetchall()
        return [(row["model_id"], row["status"], row["error"]) for row in rows]

    def set_closed(self, model_id: str) -> None:
        """The coordinator has closed the model's job."""
        with self.connect() as db:
            db.execute("UPDATE models SET closed = 1 WHERE model_id = ?", (model_id,))

    def import_finished(self, request: dict[str, Any], result: dict[str, Any]) -> str:
        """Store an exported model as a new finished model; returns its new id."""
        model_id = uuid.uuid4().hex[:16]
        now = time.time()
        with self.connect() as db:
            db.execute(
                "INSERT INTO models (model_id, status, request, result, created_at, updated_at)"
                " VALUES (?, 'finished', ?, ?, ?, ?)",
                (model_id, json.dumps(request), json.dumps(result), now, now),
            )
        return model_id

    def set_running(self, model_id: str, key_fingerprint: str, state: dict[str, Any] | None) -> None:
        self._update(model_id, status="running", key_fingerprint=key_fingerprint, state=json.dumps(state))

    def record_round(self, model_id: str, record: RoundHistory, state: dict[str, Any] | None) -> None:
        """Append a round's history entry and the run's new state, atomically.

        A restart therefore finds either the round before it (and asks for it again) or the
        round after it, never half of one: no round is counted twice.
        """
        with self.connect() as db:
            self._record(db, model_id, record)
            db.execute(
                "UPDATE models SET round = ?, state = ?, updated_at = ? WHERE model_id = ?",
                (record.round + 1, json.dumps(state), time.time(), model_id),
            )

    def unfinished(self) -> list[Unfinished]:
        """Pending and running models with their request and saved run state, oldest first."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT model_id, status, request, state FROM models WHERE status IN ('pending', 'running')"
                " ORDER BY rowid"
            ).fetchall()
        return [
            Unfinished(
                model_id=r["model_id"],
                status=r["status"],
                request=json.loads(r["request"]),
                state=json.loads(r["state"]) if r["state"] else None,
            )
            for r in rows
        ]

    def finish(self, model_id: str, result: dict[str, Any], last_round: RoundHistory | None = None) -> None:
        """Store a finished model's result: coefficients, stop reason, owners, metrics, scaling.

        With ``last_round``, the round that finished the model is recorded in the same transaction.
        """
        with self.connect() as db:
            if last_round is not None:
                self._record(db, model_id, last_round)
            db.execute(
                "UPDATE models SET status = 'finished', result = ?, state = NULL, round = COALESCE(?, round),"
                " updated_at = ? WHERE model_id = ?",
                (json.dumps(result), None if last_round is None else last_round.round + 1, time.time(), model_id),
            )

    def fail(self, model_id: str, error: str) -> None:
        self._update(model_id, status="failed", error=error)

    def cancel(self, model_id: str, reason: str) -> None:
        self._update(model_id, status="cancelled", error=reason)

    def delete(self, model_id: str) -> None:
        """Remove a model and its history (the caller has checked it is not in flight)."""
        with self.connect() as db:
            db.execute("DELETE FROM history WHERE model_id = ?", (model_id,))
            if db.execute("DELETE FROM models WHERE model_id = ?", (model_id,)).rowcount == 0:
                raise NotFound(f"model {model_id} does not exist")

    def get(self, model_id: str) -> ModelRecord:
        with self.connect() as db:
            row = db.execute("SELECT rowid AS version, * FROM models WHERE model_id = ?", (model_id,)).fetchone()
            if row is None:
                raise NotFound(f"model {model_id} does not exist")
            history = [
                json.loads(r["record"])
                for r in db.execute("SELECT record FROM history WHERE model_id = ? ORDER BY round", (model_id,))
            ]
        return _model(row, history)

    def latest_finished(self) -> ModelRecord:
        with self.connect() as db:
            row = db.execute(
                "SELECT model_id FROM models WHERE status = 'finished' ORDER BY updated_at DESC LIMIT 1"
            ).fetchone()
        if row is None:
            raise NotFound("no model has finished training yet; POST /model starts one")
        return self.get(row["model_id"])

    def list(self) -> list[ModelRecord]:
        with self.connect() as db:
            rows = db.execute("SELECT rowid AS version, * FROM models ORDER BY rowid").fetchall()
        return [_model(row, None) for row in rows]

    @staticmethod
    def _record(db: Any, model_id: str, record: RoundHistory) -> None:
        db.execute(
            "INSERT INTO history VALUES (?, ?, ?)",
            (model_id, record.round, json.dumps(record.model_dump(mode="json"))),
        )

    def _update(self, model_id: str, **fields: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.connect() as db:
            db.execute(
                f"UPDATE models SET {assignments}, updated_at = ? WHERE model_id = ?",
                (*fields.values(), time.time(), model_id),
            )


def _model(row: Any, history: list[dict[str, Any]] | None) -> ModelRecord:
    request = json.loads(row["request"])
    model: dict[str, Any] = {
        "model_id": row["model_id"],
        "version": row["version"],
        "status": row["status"],
        "name": request.get("name"),
        "model": request["model"],
        "features": request["features"],
        "label": request["label"],
        "optimizer": request["optimizer"],
        "request": request,
        "round": row["round"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
    if row["error"]:
        model["error"] = row["error"]
    if row["result"]:
        model.update(json.loads(row["result"]))
    if history is not None:
        model["history"] = history
    return ModelRecord.model_validate(model)
