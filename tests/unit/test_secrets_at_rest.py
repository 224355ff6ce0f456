"""Secrets at rest: per-party secrets files, traffic logs and databases.

Per-party secrets files and their provisioning (common/service/settings.py), the redacting,
private traffic log (common/service/audit.py) and private databases (common/service/storage.py).
Every file is written under tmp_path, never into the checkout.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import file_mode

from common.service.audit import TrafficLog, redact
from common.service.cli import CHECKOUT, base_config, base_parser
from common.service.settings import (
    SECRET_NAMES,
    SECRETS_OF,
    SettingsError,
    load_or_create_token,
    load_settings,
    provision_secrets,
    with_secrets,
)
from common.service.storage import SQLiteStore
from coordinator.config import CoordinatorSettings
from data_owner.config import DataOwnerSettings
from model_creator.config import ModelCreatorSettings

SETTINGS_OF = {
    "coordinator": CoordinatorSettings,
    "model_creator": ModelCreatorSettings,
    "data_owner": DataOwnerSettings,
}


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common umask 022, under which a file made without care is 0644 (so the tests can fail)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture(autouse=True)
def no_party_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets or secrets locations from the environment of whoever runs the tests play no part."""
    for name in list(os.environ):
        if name.startswith(("FT_COORDINATOR_", "FT_MODEL_CREATOR_", "FT_DATA_OWNER_")):
            monkeypatch.delenv(name)


def settings_of(party: str, tmp_path: Path, **overrides: object):
    """A party's settings with its state under tmp_path, and its secrets in tmp_path/secrets by default."""
    given = {"STATE_DIR": str(tmp_path / party), "SECRETS_DIR": str(tmp_path / "secrets"), **overrides}
    return load_settings(SETTINGS_OF[party], given)


# --------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    sorted(
        {"credential", "coordinator_token", "enrolment_secret", "model_creator_token", "api_token", "token", "secret"}
    ),
)
def test_every_secret_key_is_redacted(key):
    body = json.dumps({key: "s3cr3t-value", "name": "alice"})
    assert json.loads(redact(body)) == {key: "[redacted]", "name": "alice"}


def test_redaction_reaches_any_depth_and_lists():
    body = json.dumps(
        {
            "job": {
                "members": [{"name": "a", "token": "t-1"}, {"name": "b", "secret": {"k": "t-2"}}],
                "deep": [[{"credential": "t-3"}]],
            },
            "rounds": 3,
            "token_count": 7,
        }
    )
    redacted = redact(body)
    for value in ("t-1", "t-2", "t-3"):
        assert value not in redacted
    assert json.loads(redacted) == {
        "job": {
            "members": [{"name": "a", "token": "[redacted]"}, {"name": "b", "secret": "[redacted]"}],
            "deep": [[{"credential": "[redacted]"}]],
        },
        "rounds": 3,
        "token_count": 7,
    }


def test_a_top_level_list_is_redacted():
    assert json.loads(redact('[{"coordinator_token": "x"}, 5, "token"]')) == [
        {"coordinator_token": "[redacted]"},
        5,
        "token",
    ]


def test_the_enrolment_answer_keeps_nothing_of_either_credential():
    answer = json.dumps(
        {"name": "owner_a", "credential": "owner-own-credential", "coordinator_token": "coordinator-token-for-owner"}
    )
    redacted = redact(answer)
    assert "owner-own-credential" not in redacted and "coordinator-token-for-owner" not in redacted
    assert json.loads(redacted)["name"] == "owner_a"


@pytest.mark.parametrize(
    "body",
    ["", "plain text with a token=abc in it", '{not json, "token": "x"', "<html>secret</html>", "12345", '"token"'],
)
def test_a_body_that_is_not_a_json_container_is_left_as_it_is(body):
    assert redact(body) == body


def test_json_without_secrets_is_kept_byte_for_byte():
    body = '{ "weights" : [1.50, 2e-06],\n "rounds": 3 }'
    assert redact(body) == body


def test_the_traffic_log_writes_redacted_bodies_and_raw_non_json(tmp_path):
    log = TrafficLog(tmp_path / "traffic.jsonl")
    log.record(
        "answered", "/data_owners", json.dumps({"credential": "c-value", "coordinator_token": "t-value"}).encode()
    )
    log.record("received", "/other", b"not json: c-value")
    text = (tmp_path / "traffic.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert json.loads(lines[0]["body"]) == {"credential": "[redacted]", "coordinator_token": "[redacted]"}
    assert "t-value" not in text
    assert lines[1]["body"] == "not json: c-value"


# --------------------------------------------------------------------------------------------
# File modes: traffic logs and databases
# --------------------------------------------------------------------------------------------


def test_a_new_traffic_log_is_0600(tmp_path):
    path = tmp_path / "logs" / "traffic.jsonl"
    TrafficLog(path).record("sent", "http://peer", b"{}")
    assert file_mode(path) == 0o600


def test_an_existing_traffic_log_is_tightened(tmp_path):
    path = tmp_path / "traffic.jsonl"
    path.write_text('{"direction": "sent", "peer": "x", "body": ""}\n')
    path.chmod(0o644)
    TrafficLog(path).record("sent", "http://peer", b"{}")
    assert file_mode(path) == 0o600
    assert len(path.read_text().splitlines()) == 2, "the existing lines are kept"


def test_a_traffic_log_removed_while_running_comes_back_0600(tmp_path):
    path = tmp_path / "traffic.jsonl"
    log = TrafficLog(path)
    path.unlink()
    log.record("sent", "http://peer", b"{}")
    assert file_mode(path) == 0o600


class Store(SQLiteStore):
    schema = "CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY, value TEXT NOT NULL);"


def test_a_new_database_and_its_wal_and_shm_files_are_0600(tmp_path):
    store = Store(tmp_path / "state" / "store.sqlite3")
    # A connection held open keeps the -wal and -shm files in place while another one writes.
    reader = sqlite3.connect(store.path)
    try:
        reader.execute("SELECT count(*) FROM items").fetchall()
        with store.connect() as connection:
            connection.execute("INSERT INTO items VALUES ('token', 'a-coordinator-token')")
        companions = [store.path.with_name(store.path.name + suffix) for suffix in ("-wal", "-shm")]
        assert all(path.exists() for path in companions), "WAL journaling makes -wal and -shm files"
        assert {path.name: file_mode(path) for path in [store.path, *companions]} == {
            path.name: 0o600 for path in [store.path, *companions]
        }
    finally:
        reader.close()


def test_an_existing_database_and_its_wal_and_shm_are_tightened(tmp_path):
    path = tmp_path / "store.sqlite3"
    path.touch(0o644)
    # An older version's database, in use: a connection held open keeps its -wal and -shm files,
    # which SQLite made with the database's mode 0644.
    holder = sqlite3.connect(path)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        with holder:
            holder.execute("CREATE TABLE items (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            holder.execute("INSERT INTO items VALUES ('kept', 'yes')")
        files = [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))]
        assert [file_mode(file) for file in files] == [0o644] * 3
        store = Store(path)
        assert [file_mode(file) for file in files] == [0o600] * 3
        with store.connect() as connection:
            assert connection.execute("SELECT value FROM items WHERE name = 'kept'").fetchone()[0] == "yes"
    finally:
        holder.close()


# --------------------------------------------------------------------------------------------
# Per-party secrets files
# --------------------------------------------------------------------------------------------


def read(path: Path) -> dict[str, str]:
    values: dict[str, str] = json.loads(path.read_text())
    return values


@pytest.mark.parametrize("first", sorted(SECRETS_OF))
def test_the_first_party_at_the_default_location_provisions_every_party(tmp_path, first):
    settings = with_secrets(settings_of(first, tmp_path))
    directory = tmp_path / "secrets"
    files = {party: directory / f"{party}.json" for party in SECRETS_OF}
    assert {party: file_mode(path) for party, path in files.items()} == dict.fromkeys(SECRETS_OF, 0o600)
    assert {party: set(read(path)) for party, path in files.items()} == {p: set(n) for p, n in SECRETS_OF.items()}
    shared = read(files["coordinator"])
    assert set(shared) == set(SECRET_NAMES)
    for party, path in files.items():
        assert read(path) == {name: shared[name] for name in SECRETS_OF[party]}
    assert {name: getattr(settings, name) for name in SECRETS_OF[first]} == read(files[first])
    assert len(set(shared.values())) == 3, "three different secrets"


def test_a_data_owner_file_holds_nothing_that_acts_as_the_model_creator(tmp_path):
    with_secrets(settings_of("data_owner", tmp_path))
    owner_file = read(tmp_path / "secrets" / "data_owner.json")
    assert set(owner_file) == {"enrolment_secret"}
    tokens = read(tmp_path / "secrets" / "model_creator.json")
    assert not set(tokens.values()) & set(owner_file.values())


def test_later_parties_read_only_their_own_file(tmp_path):
    coordinator = with_secrets(settings_of("coordinator", tmp_path))
    directory = tmp_path / "secrets"
    # Spoil the files of the other parties: a party that opened them would fail or get other values.
    (directory / "coordinator.json").write_text("not json")
    (directory / "data_owner.json").write_text("not json")
    creator = with_secrets(settings_of("model_creator", tmp_path))
    assert (creator.model_creator_token, creator.coordinator_token) == (
        coordinator.model_creator_token,
        coordinator.coordinator_token,
    )


def test_parties_starting_together_agree(tmp_path):
    results: dict[str, list[dict[str, str]]] = {party: [] for party in SECRETS_OF}
    errors: list[BaseException] = []

    def start(party: str) -> None:
        try:
            settings = with_secrets(settings_of(party, tmp_path))
            results[party].append({name: getattr(settings, name) for name in SECRETS_OF[party]})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(party,)) for party in [*SECRETS_OF] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    values = {name: {got[name] for party in results for got in results[party] if name in got} for name in SECRET_NAMES}
    assert all(len(seen) == 1 for seen in values.values()), values


def test_configured_secrets_need_no_file(tmp_path):
    settings = with_secrets(settings_of("data_owner", tmp_path, ENROLMENT_SECRET="given"))
    assert settings.enrolment_secret == "given"
    assert not (tmp_path / "secrets").exists()


def test_no_file_means_every_secret_must_be_configured(tmp_path):
    with pytest.raises(SettingsError, match="FT_MODEL_CREATOR_MODEL_CREATOR_TOKEN"):
        with_secrets(settings_of("model_creator", tmp_path, SECRETS_FILE=None))


@pytest.mark.parametrize("party", ["data_owner", "model_creator"])
def test_a_missing_file_elsewhere_stops_a_data_owner_or_model_creator(tmp_path, party):
    path = tmp_path / "given" / f"{party}.json"
    with pytest.raises(SettingsError) as raised:
        with_secrets(settings_of(party, tmp_path, SECRETS_FILE=str(path)))
    message = str(raised.value)
    assert str(path) in message and "does not exist" in message
    for name in SECRETS_OF[party]:
        assert name in message
    assert not path.exists() and not (tmp_path / "secrets").exists()


def test_a_missing_file_elsewhere_is_created_by_the_coordinator_alone(tmp_path):
    path = tmp_path / "given" / "federation.json"
    settings = with_secrets(settings_of("coordinator", tmp_path, SECRETS_FILE=str(path)))
    assert file_mode(path) == 0o600
    assert read(path) == {name: getattr(settings, name) for name in SECRET_NAMES}
    assert not (tmp_path / "secrets").exists(), "no other party's file is made"


@pytest.mark.parametrize("party", ["data_owner", "model_creator"])
def test_a_file_with_another_party_s_secrets_is_refused(tmp_path, party):
    path = tmp_path / "shared.json"
    path.write_text(json.dumps({name: f"value-{name}" for name in SECRET_NAMES}))
    with pytest.raises(SettingsError, match="must not hold"):
        with_secrets(settings_of(party, tmp_path, SECRETS_FILE=str(path)))


def test_a_file_given_to_a_party_is_used_and_tightened(tmp_path):
    path = tmp_path / "owner.json"
    path.write_text(json.dumps({"enrolment_secret": "from-the-operator"}))
    path.chmod(0o644)
    settings = with_secrets(settings_of("data_owner", tmp_path, SECRETS_FILE=str(path)))
    assert settings.enrolment_secret == "from-the-operator"
    assert file_mode(path) == 0o600


def test_a_partly_provisioned_checkout_is_not_silently_reprovisioned(tmp_path):
    with_secrets(settings_of("coordinator", tmp_path))
    before = read(tmp_path / "secrets" / "coordinator.json")
    (tmp_path / "secrets" / "data_owner.json").unlink()
    with pytest.raises(SettingsError, match="only the secrets files of"):
        with_secrets(settings_of("data_owner", tmp_path))
    assert read(tmp_path / "secrets" / "coordinator.json") == before


def test_provision_secrets_reads_back_what_it_made(tmp_path):
    made = provision_secrets(tmp_path / "federation")
    assert set(made) == set(SECRET_NAMES)
    assert provision_secrets(tmp_path / "federation") == made


def test_the_default_secrets_file_is_the_party_s_own_in_the_checkout(tmp_path):
    for party, kind in SETTINGS_OF.items():
        settings = load_settings(kind, {"STATE_DIR": str(tmp_path)})
        assert settings.secrets_file == CHECKOUT / "var" / "secrets" / f"{party}.json"
        assert settings.provisions_secrets()
    assert not load_settings(
        DataOwnerSettings, {"STATE_DIR": str(tmp_path), "SECRETS_FILE": str(tmp_path / "x.json")}
    ).provisions_secrets()


def test_a_made_token_is_0600_and_kept(tmp_path):
    path = tmp_path / "state" / "operator_token"
    token = load_or_create_token(path)
    assert file_mode(path) == 0o600 and load_or_create_token(path) == token


# --------------------------------------------------------------------------------------------
# Data owners of one checkout have their own state directories
# --------------------------------------------------------------------------------------------


def test_a_data_owner_s_default_state_dir_is_named_after_it():
    assert load_settings(DataOwnerSettings, {"NAME": "alpha", "SECRETS_FILE": None}).state_dir == (
        CHECKOUT / "var" / "data_owner" / "alpha"
    )
    assert load_settings(DataOwnerSettings, {"SECRETS_FILE": None}).state_dir == (
        CHECKOUT / "var" / "data_owner" / "data-owner"
    )


def test_a_name_that_is_no_directory_needs_a_state_dir():
    with pytest.raises(SettingsError, match="STATE_DIR"):
        load_settings(DataOwnerSettings, {"NAME": "..", "SECRETS_FILE": None})


def test_the_command_line_leaves_the_defaults_to_the_settings():
    parser = base_parser("test", 5000, "data_owner", "var/data_owner/NAME")
    config = base_config(parser.parse_args(["--port", "5003"]))
    assert "STATE_DIR" not in config and "SECRETS_FILE" not in config
    config = base_config(parser.parse_args(["--state-dir", "/somewhere", "--secrets-file", "/s.json"]))
    assert (config["STATE_DIR"], config["SECRETS_FILE"]) == ("/somewhere", "/s.json")
