"""Schema versions and migrations of the state databases, and what a store refuses to open."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from common.service.storage import StateError
from coordinator.store import CoordinatorStore
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


# The coordinator's schema 3, as databases made before round timings, sizes and the offline table hold it,
# with one owner, one finished job and one aggregated round.
COORDINATOR_SCHEMA_3 = """
CREATE TABLE data_owners (
    name TEXT PRIMARY KEY, url TEXT NOT NULL, credential_digest TEXT NOT NULL UNIQUE,
    coordinator_token TEXT NOT NULL, registered_at REAL NOT NULL, identity_key TEXT, signed_at REAL,
    columns TEXT
);
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, spec TEXT NOT NULL, public_key TEXT NOT NULL,
    callback_url TEXT NOT NULL, status TEXT NOT NULL, error TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE rounds (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, kind TEXT NOT NULL, attempts INTEGER NOT NULL,
    status TEXT NOT NULL, contributors TEXT NOT NULL, failures TEXT NOT NULL,
    started_at REAL NOT NULL, seconds REAL, weights TEXT, aggregate TEXT, delivered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, round)
);
CREATE TABLE members (
    job_id TEXT NOT NULL, data_owner TEXT NOT NULL, refusal TEXT, member_key TEXT,
    PRIMARY KEY (job_id, data_owner)
);
INSERT INTO data_owners VALUES ('owner-a', 'http://127.0.0.1:5001', 'digest', 'token', 5.0, NULL, NULL, '["age"]');
INSERT INTO rounds VALUES ('job-1', 0, 'gradient', 2, 'aggregated', '["owner-a"]', '{"owner-b": "no reply"}',
                           10.0, 1.5, NULL, NULL, 1);
PRAGMA user_version = 3;
"""


def test_a_coordinator_database_of_schema_3_is_migrated_keeping_its_rows(tmp_path):
    path = tmp_path / "coordinator.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(COORDINATOR_SCHEMA_3)
    store = CoordinatorStore(str(path))
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == CoordinatorStore.version == 4
    assert store.data_owners()["owner-a"].url == "http://127.0.0.1:5001"
    assert store.published_columns() == {"owner-a": ["age"]}
    (state,) = store.rounds("job-1")
    assert (state.status, state.attempt, state.contributors, state.seconds) == ("aggregated", 2, ("owner-a",), 1.5)
    summary = state.summary()
    # What schema 3 did not keep is unknown, not invented.
    assert summary.finished_at is None and summary.aggregate_bytes is None
    assert summary.members == [] and summary.contribution_bytes == {} and summary.attempt_log == []
    assert summary.started_at == 10.0 and summary.failures == {"owner-b": "no reply"}
    # The offline table is new: empty, and it works.
    assert store.offline_owners() == {}
    store.set_offline("owner-a", "http://127.0.0.1:5001", "missed round 0 of job job-1", 20.0)
    assert CoordinatorStore(str(path)).offline_owners() == {
        "owner-a": ("http://127.0.0.1:5001", "missed round 0 of job job-1", 20.0)
    }
