"""SQLite storage shared by the services: one file per service under its state directory.

Each use takes a connection of its own from a small pool (request handlers and background workers
both write; a connection serves one thread at a time), with WAL journaling so readers never wait
for the worker, and ``synchronous=FULL``: a commit is on disk before it returns, so a finished
model, a round or a privacy ledger entry that was answered for survives a power cut. Connections
are kept between uses because opening one costs more than the small transactions most uses are
(it reads the schema again, and closing the last one checkpoints the write-ahead log); one that
met an SQLite error is closed, never used again.

A database is private to its party (the coordinator's holds the tokens it presents to each data
owner): it is created with mode 0600 and an existing one is tightened to 0600, with its ``-wal``,
``-shm`` and ``-journal`` files; SQLite gives the files it creates later the database's mode.

Schema versions
    The schema's version is kept in SQLite's ``user_version``. A new database is made whole in a
    temporary file and moved into place, so a file at the database's path is never a half-made
    one. An existing file of an older version is brought up to date by the store's
    :meth:`SQLiteStore.migrate`, step by step, keeping its rows; version 0 is a file of the first
    schema, made before versions were recorded.

Refusing a database that cannot be used
    A database that exists but is empty (zero bytes), not an SQLite file, truncated or otherwise
    damaged (SQLite's ``quick_check``), without any table, or of a newer version, is never taken
    for a fresh install: the party stops with a :class:`StateError` naming the file and what to
    do (restore it from a backup, or start with ``--reset-state``, which moves the file aside and
    begins with an empty database on purpose).

Storage faults
    A read or write that SQLite cannot make (the disk is full, an I/O error, the file cannot be
    opened: on a full disk a new connection may need space for the shared-memory index, while a
    kept one still reads) is a
    :class:`~common.protocol.errors.StorageUnavailable`: the request answers 503 with
    ``Retry-After`` and the caller tries again later; nothing is half-written, since the
    transaction is rolled back.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from common.protocol.errors import StorageUnavailable
from common.service.files import PRIVATE_MODE, private_file, tighten

logger = logging.getLogger(__name__)

#: The files SQLite keeps beside a database, by suffix.
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")

#: SQLite's primary result codes of a fault of the storage rather than of the statement, with
#: their messages (Python before 3.11 gives only the message): busy or locked for too long, an I/O
#: error, the disk is full, the file cannot be opened.
TRANSIENT_CODES = {
    5: "database is locked",
    6: "database table is locked",
    10: "disk I/O error",
    13: "database or disk is full",
    14: "unable to open database file",
}

#: Connections a store keeps open between uses; more are opened while more threads use it at once.
IDLE_CONNECTIONS = 8

#: What to do with a database that is refused at start-up, for the message that refuses it.
REMEDY = (
    "restore it from a backup (README, section Reliability: backups), or start with --reset-state to move it"
    " aside and begin with an empty database"
)


class StateError(Exception):
    """A state database this party cannot start with; the message names the file and what to do."""


class SQLiteStore:
    """Base class: owns the database file, its schema and its version.

    Attributes
    ----------
    schema
        The current schema, as ``CREATE TABLE IF NOT EXISTS`` statements (run at every opening,
        which also adds tables that are new since an older version).
    version
        The current schema's version.
    """

    schema: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def __init__(self, path: str | Path, reset: bool = False) -> None:
        path = Path(path)
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        if path.exists():
            problem = unusable(path, self.version)
            if problem is not None and not reset:
                raise StateError(f"state database {path}: {problem}; {REMEDY}")
            if problem is not None:
                aside = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%dT%H%M%S')}")
                for suffix in ("", *COMPANION_SUFFIXES):
                    companion = path.with_name(path.name + suffix)
                    if companion.exists():
                        companion.rename(aside.with_name(aside.name + suffix))
                logger.warning("state database %s: %s; moved aside to %s (--reset-state)", path, problem, aside)
        if not path.exists():
            self._create(path)
        self.path = private_file(path)
        for suffix in COMPANION_SUFFIXES:
            companion = self.path.with_name(self.path.name + suffix)
            if companion.exists():
                tighten(companion)
        with self.connect() as connection:
            connection.executescript(self.schema)
        self._upgrade()

    def migrate(self, connection: sqlite3.Connection, from_version: int) -> None:
        """Bring a database of schema ``from_version`` to ``from_version + 1``, keeping its rows.

        Nothing by default: the tables new since an older version are made by :attr:`schema`.
        """

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction: committed on success, rolled back on error.

        Raises
        ------
        StorageUnavailable
            When SQLite cannot read or write the file for a fault of the storage (disk full, I/O
            error, cannot open, busy): the transaction is rolled back, and a later try may succeed.
        """
        try:
            connection = self._take()
            spoiled = False
            try:
                connection.execute("PRAGMA synchronous=FULL")
                with connection:
                    yield connection
            except sqlite3.Error:
                spoiled = True
                raise
            finally:
                self._give_back(connection, spoiled)
        except sqlite3.OperationalError as exc:
            if not _transient(exc):
                raise
            logger.error("state database %s: %s", self.path, exc)
            message = f"this party cannot use its state storage right now ({exc}); try again later"
            raise StorageUnavailable(message) from None

    def _take(self) -> sqlite3.Connection:
        """An idle connection, or a new one (``check_same_thread`` off: the pool hands each to one thread at a time)."""
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        connection = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        return connection

    def _give_back(self, connection: sqlite3.Connection, spoiled: bool) -> None:
        """Keep a connection for the next use (up to :data:`IDLE_CONNECTIONS`) unless an SQLite error spoiled it."""
        if not spoiled and not connection.in_transaction:
            with self._idle_lock:
                if len(self._idle) < IDLE_CONNECTIONS:
                    self._idle.append(connection)
                    return
        connection.close()

    def _create(self, path: Path) -> None:
        """Make a new database of the current schema and version, whole, then move it into place."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
        temporary.unlink(missing_ok=True)
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
        try:
            connection = sqlite3.connect(temporary)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(self.schema)
                connection.execute(f"PRAGMA user_version = {self.version}")
                connection.commit()
            finally:
                connection.close()
            os.replace(temporary, path)
        finally:
            for suffix in ("", *COMPANION_SUFFIXES):
                temporary.with_name(temporary.name + suffix).unlink(missing_ok=True)

    def _upgrade(self) -> None:
        with self.connect() as connection:
            found = int(connection.execute("PRAGMA user_version").fetchone()[0])
            for from_version in range(found, self.version):
                logger.info("state database %s: migrating schema %d to %d", self.path, from_version, from_version + 1)
                self.migrate(connection, from_version)
            if found < self.version:
                connection.execute(f"PRAGMA user_version = {self.version}")


def _transient(error: sqlite3.OperationalError) -> bool:
    """Whether ``error`` is a fault of the storage: by its code, or its message before Python 3.11."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in TRANSIENT_CODES
    return str(error) in TRANSIENT_CODES.values()


def unusable(path: Path, version: int) -> str | None:
    """Why the database at ``path`` cannot be used by a store of schema ``version``; ``None`` if it can."""
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes); an empty file is not a database, nor a fresh install"
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            found = int(connection.execute("PRAGMA user_version").fetchone()[0])
            checks = [row[0] for row in connection.execute("PRAGMA quick_check")]
            tables = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        return f"not a readable SQLite database ({exc})"
    if checks != ["ok"]:
        return f"damaged (SQLite's integrity check: {'; '.join(checks[:3])})"
    if not tables:
        return "holds no table; it is not a database this party made"
    if found > version:
        return f"made by a newer version (schema {found}; this one knows schema {version} and older)"
    return None


def backup(source: Path, destination: Path) -> None:
    """Copy the database ``source`` to ``destination`` (mode 0600) with SQLite's online backup.

    Safe while the party runs: the copy is one consistent state of the database, whatever is
    being written meanwhile. An existing ``destination`` is replaced.
    """
    destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.new")
    temporary.unlink(missing_ok=True)
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    writer = sqlite3.connect(temporary)
    try:
        reader.backup(writer)
    finally:
        writer.close()
        reader.close()
    os.replace(temporary, destination)
