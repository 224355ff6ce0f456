"""What a data owner remembers to enforce its policy across jobs and restarts.

One SQLite file in the owner's state directory (``ledger.sqlite3``):

* the model creator key it trusts: pinned by its operator, or the first one it saw (trust on
  first use, logged and shown on its status page);
* the identity key of each peer owner, as first seen in a round's member list: a coordinator
  that later presents another key under the same name is refused (``policy:identity``);
* the distinct round requests it answered per job, which its ``max_rounds`` bounds;
* every member set it contributed to, per model creator key: the differencing guard of
  PROTOCOL.md section 9 compares each new set against them. A set is recorded *before* the
  contribution leaves, since a coordinator may keep a contribution it says never arrived;
* the jobs it joined and refused, with the local details its refusal codes hide from others;
* when it protects its rows with differential privacy, the release of each job (its noisy
  statistics) and what it cost: the privacy budget is charged, and the release stored, in one
  durable transaction before anything computed from it can leave, and a job joined again gets
  its stored release back, uncharged, so its noise can never be drawn twice.

The ledger is written with ``synchronous=FULL``: a member set it forgot would let a second sum
through that isolates an owner, and a charge it forgot would let the budget be spent twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from common.service.storage import SQLiteStore


class Ledger(SQLiteStore):
    schema = """
    CREATE TABLE IF NOT EXISTS trusted_key (
        id INTEGER PRIMARY KEY CHECK (id = 1), fingerprint TEXT NOT NULL, bits INTEGER NOT NULL,
        source TEXT NOT NULL, since REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS peers (
        name TEXT PRIMARY KEY, identity_key TEXT NOT NULL, since REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS member_sets (
        key_fingerprint TEXT NOT NULL, members TEXT NOT NULL, job_id TEXT NOT NULL, round INTEGER NOT NULL,
        served_at REAL NOT NULL, PRIMARY KEY (key_fingerprint, members)
    );
    CREATE TABLE IF NOT EXISTS answered (
        job_id TEXT NOT NULL, request TEXT NOT NULL, PRIMARY KEY (job_id, request)
    );
    CREATE TABLE IF NOT EXISTS releases (
        job_id TEXT NOT NULL, spec_digest TEXT NOT NULL, key_fingerprint TEXT NOT NULL,
        epsilon REAL NOT NULL, delta REAL NOT NULL, rho REAL NOT NULL, release TEXT NOT NULL,
        charged_at REAL NOT NULL, PRIMARY KEY (job_id, spec_digest)
    );
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, job_id TEXT NOT NULL, round INTEGER,
        outcome TEXT NOT NULL, code TEXT, column_name TEXT, detail TEXT
    );
    """

    @contextmanager
    def connect(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection; ``durable`` ones (the trusted key, peers, member sets) sync every commit.

        Events are only the owner's record for its status page, so they are written with
        ``synchronous=NORMAL``: a crash may lose the last ones, never a member set.
        """
        with super().connect() as connection:
            connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            yield connection

    def trusted_key(self) -> dict[str, Any] | None:
        """The model creator key this owner trusts: fingerprint, bits, source, since."""
        with self.connect() as db:
            row = db.execute("SELECT fingerprint, bits, source, since FROM trusted_key WHERE id = 1").fetchone()
        return dict(row) if row else None

    def trust(self, fingerprint: str, bits: int, source: str) -> str:
        """Trust ``fingerprint`` unless a key is trusted already; returns the trusted fingerprint."""
        with self.connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO trusted_key VALUES (1, ?, ?, ?, ?)", (fingerprint, bits, source, time.time())
            )
            row = db.execute("SELECT fingerprint FROM trusted_key WHERE id = 1").fetchone()
        return str(row["fingerprint"])

    def peer_identities(self, names: list[str]) -> dict[str, str]:
        """The identity keys first seen for ``names`` (those not seen yet are absent)."""
        with self.connect() as db:
            rows = db.execute(
                f"SELECT name, identity_key FROM peers WHERE name IN ({','.join('?' * len(names))})", names
            ).fetchall()
        return {row["name"]: row["identity_key"] for row in rows}

    def remember_peers(self, identities: dict[str, str]) -> None:
        with self.connect() as db:
            db.executemany(
                "INSERT OR IGNORE INTO peers VALUES (?, ?, ?)",
                [(name, key, time.time()) for name, key in identities.items()],
            )

    def served_sets(self, key_fingerprint: str) -> list[frozenset[str]]:
        """Every member set this owner contributed to under the model creator key."""
        with self.connect() as db:
            rows = db.execute("SELECT members FROM member_sets WHERE key_fingerprint = ?", (key_fingerprint,))
            return [frozenset(json.loads(row["members"])) for row in rows]

    def admit(
        self, job_id: str, request: str, limit: int, key_fingerprint: str, members: frozenset[str], round_number: int
    ) -> bool:
        """Count a round request and record its member set, in one durable transaction.

        A request asked again (a retry with the same weights, a repeated delivery) counts once;
        past ``limit`` distinct requests of a job nothing is recorded and the answer is False. The
        owner's ``max_rounds`` bounds these, not the round numbers the coordinator chooses. The
        member set is recorded before the contribution can leave.
        """
        with self.connect() as db:
            known = db.execute("SELECT 1 FROM answered WHERE job_id = ? AND request = ?", (job_id, request)).fetchone()
            if not known:
                (count,) = db.execute("SELECT COUNT(*) FROM answered WHERE job_id = ?", (job_id,)).fetchone()
                if count >= limit:
                    return False
                db.execute("INSERT INTO answered VALUES (?, ?)", (job_id, request))
            db.execute(
                "INSERT OR IGNORE INTO member_sets VALUES (?, ?, ?, ?, ?)",
                (key_fingerprint, json.dumps(sorted(members)), job_id, round_number, time.time()),
            )
            return True

    def release(
        self,
        job_id: str,
        spec_digest: str,
        key_fingerprint: str,
        budget_rho: float,
        draw: Callable[[], tuple[float, float, float, dict[str, Any]]],
    ) -> tuple[dict[str, Any], bool] | None:
        """The job's stored release, or a new one from ``draw`` charged to the budget.

        ``draw`` returns (ε, δ, ρ, release). The answer is the release and whether it is new;
        ``None`` when a new one would take the ρ spent past ``budget_rho`` (nothing is then
        recorded). The check, the charge and the stored release are one immediate transaction,
        so two joins at once cannot both spend the last of the budget.
        """
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            stored = db.execute(
                "SELECT release FROM releases WHERE job_id = ? AND spec_digest = ?", (job_id, spec_digest)
            ).fetchone()
            if stored is not None:
                return json.loads(stored["release"]), False
            (spent,) = db.execute("SELECT COALESCE(SUM(rho), 0) FROM releases").fetchone()
            epsilon, delta, rho, release = draw()
            if spent + rho > budget_rho:
                return None
            db.execute(
                "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, spec_digest, key_fingerprint, epsilon, delta, rho, json.dumps(release), time.time()),
            )
            return release, True

    def charges(self) -> list[dict[str, Any]]:
        """Every job's privacy charge, oldest first: job, model creator key, ε, δ, ρ, when."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT job_id, key_fingerprint, epsilon, delta, rho, charged_at FROM releases ORDER BY charged_at"
            ).fetchall()
        return [dict(row) for row in rows]

    def record_event(
        self,
        job_id: str,
        outcome: str,
        round_number: int | None = None,
        code: str | None = None,
        column: str | None = None,
        detail: str | None = None,
    ) -> None:
        """A join, a refusal or a contribution, with the details only this owner may see."""
        with self.connect(durable=False) as db:
            db.execute(
                "INSERT INTO events (at, job_id, round, outcome, code, column_name, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), job_id, round_number, outcome, code, column, detail),
            )

    def events(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest events, newest first."""
        with self.connect() as db:
            rows = db.execute(
                'SELECT at, job_id, round, outcome, code, column_name AS "column", detail FROM events'
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [dict(row) for row in rows]

    def member_sets(self) -> list[dict[str, Any]]:
        with self.connect() as db:
            rows = db.execute(
                "SELECT key_fingerprint, members, job_id, round, served_at FROM member_sets ORDER BY served_at"
            ).fetchall()
        return [{**dict(row), "members": json.loads(row["members"])} for row in rows]
