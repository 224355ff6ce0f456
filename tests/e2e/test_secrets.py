"""Secrets at rest, with the real parties as processes.

Each party holds only its own secrets, in a file of mode 0600; a data owner's file does not let
it act as the model creator; the coordinator's traffic log and every database are 0600 and the
log holds no credential or token of anybody; and the parties of one checkout, started with no
set-up at the default secrets location, provision matching secrets for one another and train.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from e2e_support import post_model, running_federation, traffic_records
from support import SHIPPED, SHIPPED_OWNERS, file_mode

from common.service.cli import CHECKOUT
from local_federation.cluster import LocalFederation, Party, free_port

pytestmark = pytest.mark.e2e

OWN_SECRETS = {
    "coordinator": {"enrolment_secret", "model_creator_token", "coordinator_token"},
    "model_creator": {"model_creator_token", "coordinator_token"},
    "data_owner": {"enrolment_secret"},
}


def read_json(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return values


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Two shipped owners, a coordinator traffic log and one finished job."""
    directory = tmp_path_factory.mktemp("secrets")
    log = directory / "coordinator.jsonl"
    with running_federation(
        directory / "federation", SHIPPED_OWNERS[:2], SHIPPED / "test.csv", coordinator_traffic_log=log
    ) as federation:
        model = post_model(federation, None)
        assert model["status"] == "finished", model.get("error")
        yield {"federation": federation, "log": log, "workdir": directory / "federation"}


@pytest.mark.parametrize("party", sorted(OWN_SECRETS))
def test_each_party_has_a_private_file_of_its_own_secrets_only(trained, party):
    federation: LocalFederation = trained["federation"]
    path = federation.secrets_file(party)
    assert file_mode(path) == 0o600
    held = read_json(path)
    assert set(held) == OWN_SECRETS[party]
    assert held == {name: federation.secrets[name] for name in OWN_SECRETS[party]}
    # ... and it is the one file of secrets the party is given.
    for name, running in federation.parties.items():
        kind = name.split(":")[0]
        given = running.arguments[running.arguments.index("--secrets-file") + 1]
        assert given == str(federation.secrets_file(kind))


def test_a_data_owner_s_secrets_do_not_open_the_model_creator_s_endpoints(trained):
    federation: LocalFederation = trained["federation"]
    owner_file = read_json(federation.secrets_file("data_owner"))
    assert not {"model_creator_token", "coordinator_token"} & set(owner_file)
    session = federation.session
    for value in owner_file.values():
        headers = {"Authorization": f"Bearer {value}"}
        # The model creator's calls at the coordinator: open a job, list the owners.
        opened = session.post(f"{federation.coordinator.url}/jobs", json={}, headers=headers, timeout=30)
        assert opened.status_code in (401, 403), opened.text
        listed = session.get(f"{federation.coordinator.url}/data_owners", headers=headers, timeout=30)
        assert listed.status_code in (401, 403), listed.text
        # The coordinator's calls at the model creator: deliver an aggregate, fail a job.
        delivered = session.post(
            f"{federation.model_creator.url}/jobs/any/failure", json={"error": "forged"}, headers=headers, timeout=30
        )
        assert delivered.status_code in (401, 403), delivered.text
    # The real model-creator token does open them (so the refusals above are about the token).
    listed = session.get(
        f"{federation.coordinator.url}/data_owners", headers=federation.bearer("model_creator_token"), timeout=30
    )
    assert listed.status_code == 200


def test_the_traffic_log_is_private_and_holds_no_secret_of_any_party(trained):
    federation: LocalFederation = trained["federation"]
    log: Path = trained["log"]
    assert file_mode(log) == 0o600
    text = log.read_text(encoding="utf-8")
    records = traffic_records(log)
    # The per-owner tokens the coordinator issued at enrolment (kept in its database to call the owners).
    with sqlite3.connect(trained["workdir"] / "coordinator" / "coordinator.sqlite3") as database:
        issued = [row[0] for row in database.execute("SELECT coordinator_token FROM data_owners")]
    database.close()
    assert len(issued) == 2
    secrets = {**federation.secrets, **{f"coordinator token of owner {i}": token for i, token in enumerate(issued)}}
    leaks = [name for name, value in secrets.items() if value in text]
    assert not leaks, f"the traffic log holds {leaks}"
    # The enrolment answers were logged, with their credentials redacted.
    enrolments = [
        json.loads(record["body"])
        for record in records
        if record["direction"] == "answered" and record["peer"] == "/data_owners" and record["body"]
    ]
    enrolled = [answer for answer in enrolments if "credential" in answer]
    assert len(enrolled) >= 2
    assert all(answer["credential"] == answer["coordinator_token"] == "[redacted]" for answer in enrolled)


def test_every_database_is_private(trained):
    workdir: Path = trained["workdir"]
    databases = sorted(path for path in workdir.rglob("*.sqlite3*") if not path.name.endswith(".lock"))
    names = {path.name for path in databases}
    assert {"coordinator.sqlite3", "model_creator.sqlite3"} <= names
    assert {path.relative_to(workdir).as_posix(): file_mode(path) for path in databases} == {
        path.relative_to(workdir).as_posix(): 0o600 for path in databases
    }


# --------------------------------------------------------------------------------------------
# One checkout, no set-up: the parties provision their secrets at the default location
# --------------------------------------------------------------------------------------------


def party_environment(**extra: str) -> dict[str, str]:
    """The environment a party is started with: this one, without any party setting (secrets included)."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("FT_COORDINATOR_", "FT_DATA_OWNER_", "FT_MODEL_CREATOR_"))
    }
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), environment.get("PYTHONPATH")]))
    return {**environment, **extra}


def checkout_secrets() -> dict[str, float]:
    """The checkout's own provisioned secrets files and their modification times (a test must not touch them)."""
    directory = CHECKOUT / "var" / "secrets"
    return {path.name: path.stat().st_mtime for path in directory.iterdir()} if directory.exists() else {}


def wait_healthy(session: requests.Session, party: Party, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if party.process is not None and party.process.poll() is not None:
            raise AssertionError(f"{party.name} exited with {party.process.returncode}:\n{party.log_tail()}")
        try:
            if session.get(f"{party.url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{party.name} was not healthy within {timeout} s:\n{party.log_tail()}")


def test_parties_of_one_checkout_provision_their_secrets_and_train(tmp_path):
    """No --secrets-file and no secret anywhere: only the provisioning directory is moved out of the checkout."""
    secrets_dir = tmp_path / "secrets"
    environment = party_environment(**{f"FT_{party.upper()}_SECRETS_DIR": str(secrets_dir) for party in OWN_SECRETS})
    before = checkout_secrets()
    small_keys = ["--test-only-small-keys"]  # the test's 1024-bit key, accepted by every party
    coordinator = Party(
        "coordinator",
        "coordinator",
        free_port(),
        ["--state-dir", str(tmp_path / "coordinator"), *small_keys],
        tmp_path / "coordinator.log",
    )
    owner = Party(
        "data_owner",
        "data_owner",
        free_port(),
        [
            "--state-dir",
            str(tmp_path / "owner"),
            "--data",
            str(SHIPPED / "train.csv"),
            "--coordinator",
            coordinator.url,
            *small_keys,
        ],
        tmp_path / "data_owner.log",
    )
    creator = Party(
        "model_creator",
        "model_creator",
        free_port(),
        [
            "--state-dir",
            str(tmp_path / "model_creator"),
            "--coordinator",
            coordinator.url,
            "--key-bits",
            "1024",
            "--test-data",
            str(SHIPPED / "test.csv"),
            *small_keys,
        ],
        tmp_path / "model_creator.log",
    )
    parties = [owner, creator, coordinator]  # all at once: whichever comes first provisions for the others
    session = requests.Session()
    session.trust_env = False
    try:
        for party in parties:
            party.start(environment)
        for party in parties:
            wait_healthy(session, party)
        files = {party: secrets_dir / f"{party}.json" for party in OWN_SECRETS}
        assert {party: file_mode(path) for party, path in files.items()} == dict.fromkeys(OWN_SECRETS, 0o600)
        assert {party: set(read_json(path)) for party, path in files.items()} == OWN_SECRETS
        everything = read_json(files["coordinator"])
        for party, path in files.items():
            assert read_json(path) == {name: everything[name] for name in OWN_SECRETS[party]}
        bearer = {"Authorization": f"Bearer {read_json(files['model_creator'])['model_creator_token']}"}
        deadline = time.monotonic() + 60
        while not session.get(f"{coordinator.url}/data_owners", headers=bearer, timeout=5).json()["data_owners"]:
            assert time.monotonic() < deadline, f"the owner did not enrol:\n{owner.log_tail()}"
            time.sleep(0.2)
        started = session.post(f"{creator.url}/model", timeout=30)
        assert started.status_code == 202, started.text
        model_id = started.json()["model_id"]
        deadline = time.monotonic() + 300
        while (model := session.get(f"{creator.url}/model/{model_id}", timeout=30).json())["status"] not in (
            "finished",
            "failed",
        ):
            assert time.monotonic() < deadline, "the model did not finish"
            time.sleep(0.2)
        assert model["status"] == "finished", model.get("error")
    finally:
        for party in parties:
            party.stop()
        session.close()
    assert checkout_secrets() == before, "the test touched the checkout's secrets"


def test_a_data_owner_with_a_missing_secrets_file_elsewhere_stops_and_says_what_to_do(tmp_path):
    missing = tmp_path / "given" / "owner.json"
    owner = Party(
        "data_owner",
        "data_owner",
        free_port(),
        ["--state-dir", str(tmp_path / "owner"), "--data", str(SHIPPED / "train.csv"), "--secrets-file", str(missing)],
        tmp_path / "data_owner.log",
    )
    owner.start(party_environment())
    assert owner.process is not None
    assert owner.process.wait(60) != 0
    message = owner.log_path.read_text()
    assert str(missing) in message and "enrolment_secret" in message and "does not exist" in message
    assert not missing.exists()
