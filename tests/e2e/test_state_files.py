"""State databases that cannot be used are refused at start-up, never taken for a fresh install.

Issue 12, defect 5: a zero-length model database made the model creator start with no models,
losing the finished ones, and other corruptions stopped it with a bare ``sqlite3.DatabaseError``
naming no file. Each party now refuses an empty, truncated or damaged database, naming the file
and what to do; ``--reset-state`` moves the file aside (every byte kept) and starts empty on
purpose. A backup taken with ``python -m common.service.backup`` while the party runs restores
every finished model.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import requests
from support import CHECKOUT, SHIPPED, UNREACHABLE

from local_federation.cluster import free_port

pytestmark = pytest.mark.e2e

SCRIPTS = {"coordinator": "run_federated_training.sh", "data_owner": "run_data_owner.sh",
           "model_creator": "run_model_deployer.sh"}
DATABASES = {"coordinator": "coordinator.sqlite3", "data_owner": "ledger.sqlite3",
             "model_creator": "model_creator.sqlite3"}
ARGUMENTS = {"coordinator": ["--test-only-small-keys"],
             "data_owner": ["--data", str(SHIPPED / "owner_a.csv"), "--coordinator", UNREACHABLE],
             "model_creator": ["--key-bits", "1024", "--test-only-small-keys", "--coordinator", UNREACHABLE]}


def _command(party: str, state, port: int, *extra: str) -> list[str]:
    return [str(CHECKOUT / SCRIPTS[party]), "--port", str(port), "--state-dir", str(state), *ARGUMENTS[party], *extra]


def _environment(tmp_path) -> dict[str, str]:
    return {**os.environ, **{f"FT_{party.upper()}_SECRETS_DIR": str(tmp_path / "secrets") for party in SCRIPTS}}


def _run_until_healthy(command: list[str], environment: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log = Path(environment["FT_COORDINATOR_SECRETS_DIR"]).parent / f"party-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=CHECKOUT, env=environment, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"{command[0]} was not healthy within 60 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(15)


def _make_state(tmp_path, party: str):
    """A state directory whose database was made by the party itself, with its schema and version."""
    state = tmp_path / "state"
    port = free_port()
    _stop(_run_until_healthy(_command(party, state, port), _environment(tmp_path), port))
    return state


DAMAGES = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "header-overwritten": lambda data: b"\x00" * 100 + data[100:],
}


@pytest.mark.parametrize(("party", "damage"), [
    *(("model_creator", damage) for damage in DAMAGES),
    ("coordinator", "empty"), ("coordinator", "truncated"),
    ("data_owner", "empty"), ("data_owner", "header-overwritten"),
])
def test_a_damaged_database_stops_the_party_naming_the_file_and_reset_state_starts_it_empty(tmp_path, party, damage):
    state = _make_state(tmp_path, party)
    database = state / DATABASES[party]
    for suffix in ("-wal", "-shm"):
        (state / (database.name + suffix)).unlink(missing_ok=True)
    damaged = DAMAGES[damage](database.read_bytes())
    database.write_bytes(damaged)

    result = subprocess.run(_command(party, state, free_port()), cwd=CHECKOUT, env=_environment(tmp_path),
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert f"state database {database}" in result.stderr, result.stderr
    assert "restore it from a backup" in result.stderr and "--reset-state" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert database.read_bytes() == damaged, "a refused database is left as it was"

    port = free_port()
    process = _run_until_healthy(_command(party, state, port, "--reset-state"), _environment(tmp_path), port)
    _stop(process)
    (aside,) = state.glob(f"{database.name}.unusable-*[0-9]")
    assert aside.read_bytes() == damaged, "--reset-state moves the database aside, every byte kept"
    with closing(sqlite3.connect(database)) as fresh:
        assert fresh.execute("PRAGMA quick_check").fetchone() == ("ok",)


def test_finished_models_survive_a_lost_database_through_a_backup_taken_while_running(tmp_path):
    state = tmp_path / "state"
    port = free_port()
    process = _run_until_healthy(_command("model_creator", state, port), _environment(tmp_path), port)
    try:
        exported = {"format": "federated_trainer.model/1", "model": "linear_regression", "features": ["age", "bmi"],
                    "label": "progression",
                    "coefficients": {"intercept": 152.0, "age": 0.5, "bmi": 9.25}}
        imported = [requests.post(f"http://127.0.0.1:{port}/models/import", json=exported, timeout=30) for _ in range(2)]
        assert [answer.status_code for answer in imported] == [201, 201], [answer.text for answer in imported]
        listed = requests.get(f"http://127.0.0.1:{port}/models", timeout=30).json()
        backup = subprocess.run([sys.executable, "-m", "common.service.backup", str(state), str(tmp_path / "backup")],
                                cwd=CHECKOUT, capture_output=True, text=True, timeout=60)
        assert backup.returncode == 0, backup.stderr
    finally:
        _stop(process)
    database = state / DATABASES["model_creator"]
    database.write_bytes(b"")
    result = subprocess.run(_command("model_creator", state, free_port()), cwd=CHECKOUT, env=_environment(tmp_path),
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and "the file is empty" in result.stderr, result.stderr

    for suffix in ("-wal", "-shm"):
        (state / (database.name + suffix)).unlink(missing_ok=True)
    shutil.copyfile(tmp_path / "backup" / database.name, database)
    port = free_port()
    process = _run_until_healthy(_command("model_creator", state, port), _environment(tmp_path), port)
    try:
        assert requests.get(f"http://127.0.0.1:{port}/models", timeout=30).json() == listed
    finally:
        _stop(process)
