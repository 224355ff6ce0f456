"""Schema versions and migrations of the state databases, and what a store refuses to open."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from common.service.storage import StateError
from model_creator.store import ModelStore

# The model creator's first schema, as files made before schema versions were recorded hold it.
FIRST_MODELS_SCHEMA = """
CREATE TABLE models (
    model_id TEXT PRIMARY KEY, status TEXT NOT NULL, request TEXT NOT NULL,
    key_fingerprint TEXT, round INTEGER NOT NULL DEFAULT 0, error TEXT, result TEXT, state TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE history (model_id TEXT NOT NULL, round INTEGER NOT NULL, record TEXT NOT NULL,
                      PRIMARY KEY (model_id, round));
INSERT INTO models (model_id, status, request, created_at, updated_at)
    VALUES ('m1', 'failed', '{}', 1.0, 1.0);
"""


def test_a_new_database_carries_the_current_version(tmp_path):
    store = ModelStore(tmp_path / "models.sqlite3")
    with closing(sqlite3.connect(store.path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == ModelStore.version == 2
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("marked", [0, 1], ids=["before-versions", "version-1"])
def test_an_older_model_database_is_migrated_keeping_its_rows(tmp_path, marked):
    path = tmp_path / "models.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(FIRST_MODELS_SCHEMA)
        db.execute(f"PRAGMA user_version = {marked}")
    store = ModelStore(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("SELECT model_id, status, closed FROM models").fetchall() == [("m1", "failed", 1)]
    # A model of the old file counts as closed at the coordinator; a new one is not until it is.
    assert store.unclosed() == []
    new = store.create({"model": "linear_regression"})
    store.fail(new, "stopped")
    assert store.unclosed() == [(new, "failed", "stopped")]
    store.set_closed(new)
    assert store.unclosed() == []


def test_a_database_of_a_newer_version_is_refused_naming_it(tmp_path):
    path = tmp_path / "models.sqlite3"
    ModelStore(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 3")
    with pytest.raises(StateError, match=r"models\.sqlite3: made by a newer version \(schema 3; this one knows"
                                         r" schema 2 and older\); restore it from a backup"):
        ModelStore(path)


def test_a_database_without_tables_is_refused(tmp_path):
    path = tmp_path / "models.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 1")
        db.execute("CREATE TABLE t (x)")
        db.execute("DROP TABLE t")
    with pytest.raises(StateError, match="holds no table"):
        ModelStore(path)
