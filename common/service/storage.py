"""SQLite storage shared by the services: one file per service under its state directory.

Each call opens its own connection (sqlite3 connections must not cross threads, and request
handlers and background workers both write), with WAL journaling so readers never wait for the
worker.

A database is private to its party (the coordinator's holds the tokens it presents to each data
owner): it is created with mode 0600 and an existing one is tightened to 0600, with its ``-wal``,
``-shm`` and ``-journal`` files; SQLite gives the files it creates later the database's mode.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.service.files import private_file, tighten

#: The files SQLite keeps beside a database, by suffix.
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")


class SQLiteStore:
    """Base class: owns the database file and its schema."""

    schema = ""

    def __init__(self, path: str | Path) -> None:
        self.path = private_file(Path(path))
        for suffix in COMPANION_SUFFIXES:
            companion = self.path.with_name(self.path.name + suffix)
            if companion.exists():
                tighten(companion)
        with self.connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(self.schema)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction: committed on success, rolled back on error."""
        connection = sqlite3.connect(self.path, timeout=30)
        connection.row_factory = sqlite3.Row
        try:
            with connection:
                yield connection
        finally:
            connection.close()
