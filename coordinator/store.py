"""The coordinator's persistent state: the data-owner registry, who is offline, jobs, who takes part, rounds.

The store owns the typed record of each job (:class:`Job`) and each round (:class:`RoundState`);
everything else reads them from here and hands changed copies back. Nothing here is secret:
ciphertexts in transit live only in memory for the length of a round, and what is kept of a
round's aggregate is ciphertexts under the model creator's key.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, cast

from common.crypto.paillier import PublicKey
from common.protocol.errors import Conflict, Forbidden, NotFound
from common.protocol.messages import (
    Aggregate,
    AttemptRecord,
    JobSummary,
    MemberKey,
    PublicKeyMessage,
    RoundSummary,
)
from common.protocol.spec import JobSpec, RoundKind
from common.service.storage import SQLiteStore

JobStatus = Literal["running", "finished", "failed"]
RoundStatus = Literal["running", "aggregated", "failed"]


class DataOwnerAddress(NamedTuple):
    """Where a data owner serves rounds, and the token the coordinator presents to it."""

    url: str
    token: str


@dataclass(frozen=True)
class Job:
    """A job as the coordinator keeps it: spec and key (fixed at creation), callback, status."""

    job_id: str
    spec: JobSpec
    public_key: PublicKey
    callback_url: str
    status: JobStatus
    error: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class RoundState:
    """Everything the coordinator knows of one round of one job.

    Attributes
    ----------
    attempt
        Attempts made at the round so far (0 before the first is sent out).
    weights
        The encrypted weights the round evaluates (none in a statistics round), kept so that a
        restarted coordinator can run the round again.
    aggregate
        The message delivered to the model creator, kept until it surely has it.
    started_at, finished_at, seconds
        When the round started and ended (epoch seconds; ``finished_at`` None while it runs) and
        how long it took to aggregate or fail.
    attempt_log
        Every attempt made: the member set asked, when, and the bytes of each contribution.
    aggregate_bytes
        Bytes of the aggregate message sent to the model creator (None before there is one).
    """

    job_id: str
    round: int
    kind: RoundKind
    attempt: int = 0
    status: RoundStatus = "running"
    weights: tuple[str, ...] | None = None
    contributors: tuple[str, ...] = ()
    failures: Mapping[str, str] = field(default_factory=dict)
    aggregate: Aggregate | None = None
    delivered: bool = False
    started_at: float = 0.0
    finished_at: float | None = None
    seconds: float | None = None
    attempt_log: tuple[AttemptRecord, ...] = ()
    aggregate_bytes: int | None = None

    def replace(self, **changes: object) -> RoundState:
        """A copy with ``changes``, to hand back to :meth:`CoordinatorStore.save_round`."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def summary(self) -> RoundSummary:
        """What the model creator and the operator are shown of the round: membership, timing, sizes; never a value."""
        latest = self.attempt_log[-1] if self.attempt_log else None
        return RoundSummary(
            round=self.round,
            kind=self.kind,
            status=self.status,
            attempts=self.attempt,
            contributors=list(self.contributors),
            failures=dict(self.failures),
            seconds=self.seconds,
            started_at=self.started_at,
            finished_at=self.finished_at,
            members=list(latest.members) if latest else [],
            contribution_bytes=dict(latest.contribution_bytes) if latest else {},
            aggregate_bytes=self.aggregate_bytes,
            attempt_log=list(self.attempt_log),
        )


#: Columns added since the first schema: (table, column, declaration). A database made before them
#: gets them by ``ALTER TABLE ... ADD COLUMN`` when it is opened; their rows hold NULL there, which
#: means an owner enrolled before identity keys (bound at its next enrolment), an owner that
#: joined a job before job keys (joined again before its next round), and a round recorded before
#: schema 4, whose end, attempts and sizes were not kept (shown as unknown).
_ADDED_COLUMNS = (
    ("data_owners", "identity_key", "TEXT"),
    ("data_owners", "signed_at", "REAL"),
    ("members", "member_key", "TEXT"),
    ("data_owners", "columns", "TEXT"),
    ("rounds", "finished_at", "REAL"),
    ("rounds", "attempt_log", "TEXT"),
    ("rounds", "aggregate_bytes", "INTEGER"),
)


class CoordinatorStore(SQLiteStore):
    schema = """
    CREATE TABLE IF NOT EXISTS data_owners (
        name TEXT PRIMARY KEY, url TEXT NOT NULL, credential_digest TEXT NOT NULL UNIQUE,
        coordinator_token TEXT NOT NULL, registered_at REAL NOT NULL, identity_key TEXT, signed_at REAL,
        columns TEXT
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
        finished_at REAL, attempt_log TEXT, aggregate_bytes INTEGER,
        PRIMARY KEY (job_id, round)
    );
    CREATE TABLE IF NOT EXISTS offline (
        name TEXT PRIMARY KEY, url TEXT NOT NULL, reason TEXT NOT NULL, since REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS members (
        job_id TEXT NOT NULL, data_owner TEXT NOT NULL, refusal TEXT, member_key TEXT,
        PRIMARY KEY (job_id, data_owner)
    );
    """

    #: 4: rounds keep their end, their attempts (member sets, contribution sizes) and the aggregate's
    #: size; the offline owners are kept (table ``offline``, made by :attr:`schema`).
    version = 4

    def __init__(self, path: str, reset: bool = False) -> None:
        super().__init__(path, reset)
        # A job's spec and key never change: parsed once, not on every contribution.
        self._keys: dict[str, tuple[JobSpec, PublicKey]] = {}

    def migrate(self, connection: sqlite3.Connection, from_version: int) -> None:
        """Older schemas lack the columns added since (:data:`_ADDED_COLUMNS`): they are added.

        Tables new since (``offline``) are made by :attr:`schema` at every opening.
        """
        for table, column, declaration in _ADDED_COLUMNS:
            present = {row["name"] for row in connection.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    # --- data owners ------------------------------------------------------------------------

    def register_data_owner(
        self,
        name: str,
        url: str,
        identity_key: str,
        signed_at: float,
        credential_digest: str,
        coordinator_token: str,
        columns: Sequence[str] = (),
    ) -> bool:
        """Enrol a data owner, or enrol it again with new credentials; True when it is new.

        The caller has checked the enrolment's signature by ``identity_key`` and its time. The
        first enrolment binds the name to ``identity_key`` for good; a later one replaces the
        credentials only when it is signed by that key and later than the last one accepted. The
        check and the change are one transaction, so two enrolments racing for a name cannot both
        pass it.

        Raises
        ------
        Forbidden
            When the name is bound to another identity key (someone else holding the enrolment
            secret would take over the owner's name and credentials), or when the enrolment was
            signed at or before the last one accepted for the name (a replay). Nothing changes.
        """
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            known = db.execute("SELECT identity_key, signed_at FROM data_owners WHERE name = ?", (name,)).fetchone()
            if known is not None and known["identity_key"] is not None and known["identity_key"] != identity_key:
                raise Forbidden(
                    f"data owner {name!r} is enrolled with another identity key; only that key can enrol it again"
                )
            if known is not None and known["signed_at"] is not None and signed_at <= known["signed_at"]:
                raise Forbidden(
                    f"data owner {name!r}: this enrolment was signed no later than the last one accepted"
                    " (a replay); sign a new one"
                )
            db.execute(
                "INSERT INTO data_owners (name, url, credential_digest, coordinator_token, registered_at,"
                " identity_key, signed_at, columns) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " url = excluded.url, credential_digest = excluded.credential_digest,"
                " coordinator_token = excluded.coordinator_token, registered_at = excluded.registered_at,"
                " identity_key = excluded.identity_key, signed_at = excluded.signed_at, columns = excluded.columns",
                (
                    name,
                    url,
                    credential_digest,
                    coordinator_token,
                    time.time(),
                    identity_key,
                    signed_at,
                    json.dumps(list(columns)),
                ),
            )
        return known is None

    def identity_key(self, name: str) -> str | None:
        """The identity key a data owner's name is bound to; None if it has none (or is unknown)."""
        with self.connect() as db:
            row = db.execute("SELECT identity_key FROM data_owners WHERE name = ?", (name,)).fetchone()
        return cast("str | None", row["identity_key"]) if row else None

    def data_owners(self) -> dict[str, DataOwnerAddress]:
        """Registered data owners: name → address."""
        with self.connect() as db:
            rows = db.execute("SELECT name, url, coordinator_token FROM data_owners ORDER BY name")
            return {row["name"]: DataOwnerAddress(row["url"], row["coordinator_token"]) for row in rows}

    def published_columns(self) -> dict[str, list[str]]:
        """The column names each registered owner publishes (none for one enrolled before schemas)."""
        with self.connect() as db:
            rows = db.execute("SELECT name, columns FROM data_owners ORDER BY name")
            return {row["name"]: json.loads(row["columns"]) if row["columns"] else [] for row in rows}

    def remove_data_owner(self, name: str) -> bool:
        """Forget a data owner: its credentials stop working and no job asks it again. True if known."""
        with self.connect() as db:
            db.execute("DELETE FROM offline WHERE name = ?", (name,))
            return db.execute("DELETE FROM data_owners WHERE name = ?", (name,)).rowcount > 0

    # --- who is offline ---------------------------------------------------------------------

    def offline_owners(self) -> dict[str, tuple[str, str, float]]:
        """The owners marked offline: name → (URL, why, since when)."""
        with self.connect() as db:
            rows = db.execute("SELECT name, url, reason, since FROM offline ORDER BY name").fetchall()
        return {row["name"]: (row["url"], row["reason"], row["since"]) for row in rows}

    def set_offline(self, name: str, url: str, reason: str, since: float) -> None:
        """Keep ``name`` as offline (an owner marked again keeps its first ``since``, with the new reason)."""
        with self.connect() as db:
            db.execute(
                "INSERT INTO offline (name, url, reason, since) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET url = excluded.url, reason = excluded.reason",
                (name, url, reason, since),
            )

    def set_online(self, name: str) -> None:
        """``name`` is online again."""
        with self.connect() as db:
            db.execute("DELETE FROM offline WHERE name = ?", (name,))

    def data_owner_by_credential(self, credential_digest: str) -> str | None:
        """The name of the data owner holding a credential, if any."""
        with self.connect() as db:
            row = db.execute(
                "SELECT name FROM data_owners WHERE credential_digest = ?", (credential_digest,)
            ).fetchone()
        return cast("str", row["name"]) if row else None

    # --- jobs -------------------------------------------------------------------------------

    def create_job(self, spec: JobSpec, public_key: PublicKey, callback_url: str) -> Job:
        """Record a new job, running.

        Raises
        ------
        Conflict
            When a job of that id exists already; it is left as it was.
        """
        now = time.time()
        key_json = PublicKeyMessage.of(public_key).model_dump(mode="json")
        with self.connect() as db:
            if db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (spec.job_id,)).fetchone():
                raise Conflict(f"job {spec.job_id} already exists")
            db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, 'running', NULL, ?, ?)",
                (spec.job_id, json.dumps(spec.model_dump(mode="json")), json.dumps(key_json), callback_url, now, now),
            )
        return Job(spec.job_id, spec, public_key, callback_url, "running", None, now, now)

    def job(self, job_id: str) -> Job:
        """A job's record.

        Raises
        ------
        NotFound
            When no job of that id was ever opened here.
        """
        with self.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} is unknown to the coordinator")
        keys = self._keys.get(job_id)
        if keys is None:
            public_key = PublicKeyMessage.model_validate(json.loads(row["public_key"])).key()
            keys = self._keys[job_id] = (JobSpec.model_validate(json.loads(row["spec"])), public_key)
        return Job(
            job_id,
            keys[0],
            keys[1],
            row["callback_url"],
            row["status"],
            row["error"],
            row["created_at"],
            row["updated_at"],
        )

    def job_summaries(self, limit: int) -> list[JobSummary]:
        """The newest ``limit`` jobs, newest first: status, what they train, rounds started."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT j.job_id, j.spec, j.status, j.error, j.created_at, j.updated_at,"
                " (SELECT COUNT(*) FROM rounds r WHERE r.job_id = j.job_id) AS round_count,"
                " (SELECT r.status FROM rounds r WHERE r.job_id = j.job_id ORDER BY r.round DESC LIMIT 1)"
                " AS last_round_status"
                " FROM jobs j ORDER BY j.created_at DESC, j.job_id LIMIT ?",
                (limit,),
            ).fetchall()
        summaries = []
        for row in rows:
            spec = JobSpec.model_validate(json.loads(row["spec"]))
            summaries.append(
                JobSummary(
                    job_id=row["job_id"],
                    status=row["status"],
                    error=row["error"],
                    created_at=row["created_at"],
                    updated_at=row["updated_at"],
                    model=spec.model,
                    features=list(spec.features),
                    label=spec.label,
                    protocol=spec.protocol,
                    randomness=spec.randomness,
                    min_data_owners=spec.min_data_owners,
                    rounds=row["round_count"],
                    last_round_status=row["last_round_status"],
                )
            )
        return summaries

    def set_job_status(self, job_id: str, status: JobStatus, error: str | None = None) -> None:
        with self.connect() as db:
            db.execute(
                "UPDATE jobs SET status = ?, error = ?, updated_at = ? WHERE job_id = ?",
                (status, error, time.time(), job_id),
            )

    # --- who takes part in a job ------------------------------------------------------------

    def set_joined(self, job_id: str, member: MemberKey) -> None:
        """``member.name`` joined the job with its signed job key (checked by the caller).

        Rounds are sent to it without joining again, and its key goes into the member lists; a
        re-join replaces the key (the owner made a new one, e.g. after a restart).
        """
        self._set_member(job_id, member.name, None, member.model_dump_json())

    def set_refused(self, job_id: str, name: str, reason: str) -> None:
        """``name`` refused the job: it is not asked for its rounds."""
        self._set_member(job_id, name, reason, None)

    def forget_member_key(self, job_id: str, name: str) -> None:
        """``name`` forgot the job (it restarted): it must join again before its next round."""
        with self.connect() as db:
            db.execute("UPDATE members SET member_key = NULL WHERE job_id = ? AND data_owner = ?", (job_id, name))

    def member_keys(self, job_id: str) -> dict[str, MemberKey]:
        """The owners that joined the job (and have not forgotten it): name → signed job key."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT data_owner, member_key FROM members"
                " WHERE job_id = ? AND refusal IS NULL AND member_key IS NOT NULL",
                (job_id,),
            ).fetchall()
        return {row["data_owner"]: MemberKey.model_validate_json(row["member_key"]) for row in rows}

    def joined(self, job_id: str) -> set[str]:
        """The owners that joined the job, whether or not they still know it."""
        with self.connect() as db:
            rows = db.execute("SELECT data_owner FROM members WHERE job_id = ? AND refusal IS NULL", (job_id,))
            return {row["data_owner"] for row in rows}

    def refused(self, job_id: str) -> dict[str, str]:
        """The owners that refused the job: name → why."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT data_owner, refusal FROM members WHERE job_id = ? AND refusal IS NOT NULL", (job_id,)
            )
            return {row["data_owner"]: row["refusal"] for row in rows}

    def forget_members(self, job_id: str) -> None:
        """Forget who took part in a job that is over, and its parsed keys."""
        self._keys.pop(job_id, None)
        with self.connect() as db:
            db.execute("DELETE FROM members WHERE job_id = ?", (job_id,))

    def _set_member(self, job_id: str, name: str, refusal: str | None, member_key: str | None) -> None:
        with self.connect() as db:
            db.execute(
                "INSERT INTO members (job_id, data_owner, refusal, member_key) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(job_id, data_owner) DO UPDATE"
                " SET refusal = excluded.refusal, member_key = excluded.member_key",
                (job_id, name, refusal, member_key),
            )

    # --- rounds -----------------------------------------------------------------------------

    def start_round(self, job_id: str, round_number: int, kind: RoundKind, weights: Sequence[str] | None) -> RoundState:
        """Record a round as started, with the encrypted weights it evaluates (to resume it).

        Raises
        ------
        Conflict
            When the round was started before.
        """
        state = RoundState(
            job_id, round_number, kind, weights=None if weights is None else tuple(weights), started_at=time.time()
        )
        with self.connect() as db:
            if db.execute("SELECT 1 FROM rounds WHERE job_id = ? AND round = ?", (job_id, round_number)).fetchone():
                raise Conflict(f"round {round_number} of job {job_id} was already started")
            db.execute(
                "INSERT INTO rounds (job_id, round, kind, attempts, status, contributors, failures, started_at,"
                " weights, delivered, attempt_log) VALUES (?, ?, ?, 0, 'running', '[]', '{}', ?, ?, 0, '[]')",
                (job_id, round_number, kind, state.started_at, json.dumps(weights)),
            )
        return state

    def save_round(self, state: RoundState) -> None:
        """Write a round's record back, as the runner changed it."""
        with self.connect() as db:
            db.execute(
                "UPDATE rounds SET attempts = ?, status = ?, contributors = ?, failures = ?, seconds = ?,"
                " aggregate = ?, delivered = ?, finished_at = ?, attempt_log = ?, aggregate_bytes = ?"
                " WHERE job_id = ? AND round = ?",
                (
                    state.attempt,
                    state.status,
                    json.dumps(list(state.contributors)),
                    json.dumps(dict(state.failures)),
                    state.seconds,
                    state.aggregate.model_dump_json() if state.aggregate else None,
                    int(state.delivered),
                    state.finished_at,
                    json.dumps([record.model_dump(mode="json") for record in state.attempt_log]),
                    state.aggregate_bytes,
                    state.job_id,
                    state.round,
                ),
            )

    def round(self, job_id: str, round_number: int) -> RoundState | None:
        """A round's record, or None if it was never started."""
        with self.connect() as db:
            row = db.execute("SELECT * FROM rounds WHERE job_id = ? AND round = ?", (job_id, round_number)).fetchone()
        return _round_state(row) if row else None

    def rounds(self, job_id: str) -> list[RoundState]:
        """Every round of a job, in order."""
        with self.connect() as db:
            rows = db.execute("SELECT * FROM rounds WHERE job_id = ? ORDER BY round", (job_id,)).fetchall()
        return [_round_state(row) for row in rows]

    def unfinished_rounds(self) -> list[RoundState]:
        """The rounds of running jobs that a restart must pick up, oldest first.

        Those still running, and those whose aggregate was not delivered yet.
        """
        with self.connect() as db:
            rows = db.execute(
                "SELECT r.* FROM rounds r JOIN jobs j ON j.job_id = r.job_id"
                " WHERE j.status = 'running' AND (r.status = 'running' OR (r.status = 'aggregated'"
                " AND r.delivered = 0)) ORDER BY r.started_at"
            ).fetchall()
        return [_round_state(row) for row in rows]


def _round_state(row: sqlite3.Row) -> RoundState:
    weights = json.loads(row["weights"]) if row["weights"] else None
    return RoundState(
        job_id=row["job_id"],
        round=row["round"],
        kind=row["kind"],
        attempt=row["attempts"],
        status=row["status"],
        weights=None if weights is None else tuple(weights),
        contributors=tuple(json.loads(row["contributors"])),
        failures=json.loads(row["failures"]),
        aggregate=Aggregate.model_validate_json(row["aggregate"]) if row["aggregate"] else None,
        delivered=bool(row["delivered"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        seconds=row["seconds"],
        attempt_log=tuple(AttemptRecord.model_validate(record) for record in json.loads(row["attempt_log"] or "[]")),
        aggregate_bytes=row["aggregate_bytes"],
    )
