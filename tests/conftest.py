"""Fixtures shared by every test: session-wide key pairs (two small ones, one of the real size),
app factories with test configuration for each service, and a factory for whole federations of
real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import SHIPPED, UNREACHABLE, secrets_for

from common.crypto.paillier import PrivateKey
from local_federation.cluster import LocalFederation


@pytest.fixture(scope="session")
def small_key() -> PrivateKey:
    """A 1024-bit key pair, generated once: fast enough for every unit test."""
    return PrivateKey.generate(1024)


@pytest.fixture(scope="session")
def other_small_key() -> PrivateKey:
    """A second, unrelated key pair, for wrong-key tests."""
    return PrivateKey.generate(1024)


@pytest.fixture(scope="session")
def real_key() -> PrivateKey:
    """A key pair of the default production size (2048 bits), for the few real-size checks."""
    return PrivateKey.generate(2048)


@pytest.fixture
def coordinator_app(tmp_path: Path):
    from coordinator import create_app

    return create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "coordinator"), "ROUND_TIMEOUT": 5,
                       "RETRY_DELAY": 0, "REQUEST_TIMEOUT": 5, "TEST_ONLY_SMALL_KEYS": True,
                       **secrets_for("ENROLMENT_SECRET", "MODEL_CREATOR_TOKEN", "COORDINATOR_TOKEN")})


@pytest.fixture
def data_owner_app(tmp_path: Path):
    from data_owner import create_app

    return create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "data_owner"), "NAME": "owner-under-test",
                       "DATA": str(SHIPPED / "owner_a.csv"), "COORDINATOR_URL": UNREACHABLE,
                       "REQUEST_TIMEOUT": 5, "POLICY": {"test_only_small_keys": True},
                       **secrets_for("ENROLMENT_SECRET")})


@pytest.fixture
def model_creator_app(tmp_path: Path):
    from model_creator import create_app

    return create_app({"TESTING": True, "STATE_DIR": str(tmp_path / "model_creator"), "KEY_BITS": 1024, "TEST_ONLY_SMALL_KEYS": True,
                       "COORDINATOR_URL": UNREACHABLE, "TEST_DATA": str(SHIPPED / "test.csv"),
                       "REQUEST_TIMEOUT": 5, **secrets_for("MODEL_CREATOR_TOKEN", "COORDINATOR_TOKEN")})


@pytest.fixture
def federation(tmp_path: Path) -> Iterator:
    """Call with owners (name → CSV path) and options; every federation started is stopped after the test."""
    started: list[LocalFederation] = []

    def start(owners, test_data=SHIPPED / "test.csv", key_bits=1024, **options) -> LocalFederation:
        instance = LocalFederation(tmp_path / f"federation{len(started)}", list(owners), test_data=test_data,
                                   key_bits=key_bits, **options)
        started.append(instance)
        return instance.start()

    yield start
    for instance in started:
        instance.stop()
