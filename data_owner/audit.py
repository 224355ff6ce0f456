"""The data owner's audit: every message that left it for another party, kept byte for byte.

Always on, in its own SQLite file in the owner's state directory (``audit.sqlite3``, mode 0600,
``synchronous=FULL`` as every state database): the owner's evidence of what it sent, for its
operator (``GET /audit``, ``GET /audit/<id>``). Two kinds of message leave an owner:

* **its requests** to the coordinator (enrolment, contributions, refusals, deregistration): each
  is recorded by its HTTP client (:class:`~common.service.http.OutboundAudit`) with the exact
  body bytes, *before* it is sent, and the answer's status once it came;
* **its answers** to the coordinator's calls (join answers carrying its job key, refusals, round
  acceptances, leave; and the error answers of those endpoints, whoever called), recorded after
  they are made and before they are returned (:func:`record_answer`, an ``after_request`` hook).

Not recorded: ``GET /health`` (a fixed answer), the operator's own endpoints, and the public
documents every party serves alike (the page, its assets, the API document): none carries
anything of the owner's.

Evidence must be complete, so a record that cannot be written (the disk is full, an I/O error)
stops the message: a request is not sent (the round goes on without this owner, as when any
reply fails; the contribution is not lost to an unaudited send), and an answer is replaced by a
503 with ``Retry-After``, whose fixed text carries nothing of the owner's. The audit only ever
grows; what it takes is the messages themselves (a gradient reply is a few kB per round).

Each record: when, direction, peer (the URL called, or the caller of an answer), method, path,
kind (:func:`kind_of`), HTTP status, size, SHA-256 and the body's exact bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from typing import Any
from urllib.parse import urlsplit

from common.protocol.errors import NotFound, StorageUnavailable
from common.service.storage import SQLiteStore

logger = logging.getLogger(__name__)

#: (method, path pattern, kind when accepted) of every message an owner sends or answers with.
_KINDS = (
    ("POST", re.compile(r"^/data_owners$"), "enrolment"),
    ("POST", re.compile(r"^/data_owners/[^/]+/deregistration$"), "deregistration"),
    ("POST", re.compile(r"^/jobs/[^/]+/rounds/[^/]+/contributions$"), "contribution"),
    ("POST", re.compile(r"^/jobs/[^/]+/rounds/[^/]+/refusals$"), "refusal"),
    ("PUT", re.compile(r"^/jobs/[^/]+$"), "join"),
    ("POST", re.compile(r"^/jobs/[^/]+/rounds$"), "round_acceptance"),
    ("DELETE", re.compile(r"^/jobs/[^/]+$"), "leave"),
)

AUDIT_COLUMNS = "id, at, direction, peer, method, path, kind, status, size, sha256"


def kind_of(direction: str, method: str, path: str, status: int | None, body: bytes) -> str:
    """What a message is, by the endpoint it travels on and, for an answer, how it answers.

    An answer that refuses (a :class:`~common.protocol.errors.Refused`, answered as 422 with
    ``"type": "Refused"``) is a ``refusal``; any other error answer is an ``error``. A request is
    named by its endpoint, whatever it was answered.
    """
    kind = next((name for verb, pattern, name in _KINDS if verb == method and pattern.match(path)), "other")
    if direction == "sent" or status is None or status < 400:
        return kind
    try:
        refused = json.loads(body).get("type") == "Refused"
    except (ValueError, AttributeError):
        refused = False
    return "refusal" if refused else "error"


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class AuditTrail(SQLiteStore):
    """The owner's audit database (see the module docstring); it implements ``OutboundAudit``."""

    schema = """
    CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, direction TEXT NOT NULL, peer TEXT NOT NULL,
        method TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, status INTEGER, size INTEGER NOT NULL,
        sha256 TEXT NOT NULL, body BLOB NOT NULL
    );
    """
    version = 1

    def sending(self, method: str, url: str, body: bytes) -> int:
        """Record a request about to leave for ``url``; returns its id.

        Raises
        ------
        StorageUnavailable
            When it cannot be recorded: the request must not be sent.
        """
        path = urlsplit(url).path or "/"
        return self._insert("sent", url, method, path, kind_of("sent", method, path, None, body), None, body)

    def answered(self, record: int, status: int | None) -> None:
        """The status a recorded request was answered with.

        The request has left and is recorded; a status that cannot be written is logged, and the
        record keeps no status (as a request that got no answer), rather than failing the call.
        """
        try:
            with self.connect() as db:
                db.execute("UPDATE messages SET status = ? WHERE id = ?", (status, record))
        except StorageUnavailable as exc:
            logger.error("audit entry %d: its answer's status %s is not recorded: %s", record, status, exc.message)

    def record_answer(self, peer: str, method: str, path: str, status: int, body: bytes) -> int:
        """Record an answer about to leave for ``peer``; returns its id.

        Raises
        ------
        StorageUnavailable
            When it cannot be recorded: the answer must not be given.
        """
        kind = kind_of("answered", method, path, status, body)
        return self._insert("answered", peer, method, path, kind, status, body)

    def entries(self, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` records without their bodies, newest first, older than id ``before`` if given."""
        with self.connect() as db:
            rows = db.execute(
                f"SELECT {AUDIT_COLUMNS} FROM messages WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before if before is not None else 2**63 - 1, limit),
            ).fetchall()
        return [dict(row) for row in rows]

    def entry(self, record: int) -> tuple[dict[str, Any], bytes]:
        """A record and its body's exact bytes.

        Raises
        ------
        NotFound
            When no record has that id.
        """
        with self.connect() as db:
            row = db.execute(f"SELECT {AUDIT_COLUMNS}, body FROM messages WHERE id = ?", (record,)).fetchone()
        if row is None:
            raise NotFound(f"audit entry {record} does not exist")
        entry = dict(row)
        return entry, bytes(entry.pop("body"))

    def _insert(
        self, direction: str, peer: str, method: str, path: str, kind: str, status: int | None, body: bytes
    ) -> int:
        with self.connect() as db:
            cursor = db.execute(
                "INSERT INTO messages (at, direction, peer, method, path, kind, status, size, sha256, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), direction, peer, method, path, kind, status, len(body), _sha256(body), body),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid
