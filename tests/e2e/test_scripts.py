"""The user-facing start scripts document their options."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from support import CHECKOUT

pytestmark = pytest.mark.e2e

SCRIPTS = {
    "run_federated_training.sh": ["--port", "--state-dir"],
    "run_data_owner.sh": ["--port", "--state-dir", "--data", "--name", "--coordinator"],
    "run_model_deployer.sh": ["--port", "--state-dir", "--coordinator", "--test-data"],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_exits_zero_and_names_the_options(script):
    result = subprocess.run([str(CHECKOUT / script), "--help"], cwd=CHECKOUT, capture_output=True, text=True,
                            timeout=180, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{script} --help exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    for option in SCRIPTS[script]:
        assert option in result.stdout, f"{script} --help does not mention {option}:\n{result.stdout}"


def _start(script: str, *args: str, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECKOUT / script), *args], cwd=CHECKOUT, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(environment or {})})


def test_a_port_in_use_stops_the_service_at_once_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _start("run_federated_training.sh", "--port", str(port), "--state-dir", str(tmp_path / "tc"),
                        environment={"FT_COORDINATOR_SECRETS_DIR": str(tmp_path / "secrets")})
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr, result.stderr


@pytest.mark.parametrize(("script", "args", "environment", "named"), [
    ("run_federated_training.sh", [], {"FT_COORDINATOR_ROUND_TIMEOUT": "-3"}, "FT_COORDINATOR_ROUND_TIMEOUT"),
    ("run_federated_training.sh", [], {"FT_COORDINATOR_ROUND_RETRIES": "many"}, "FT_COORDINATOR_ROUND_RETRIES"),
    ("run_data_owner.sh", ["--data", "/nonexistent/owner.csv"], {}, "DATA"),
    ("run_model_deployer.sh", ["--key-bits", "1024"], {}, "KEY_BITS"),
], ids=["negative-timeout", "retries-not-a-number", "missing-data-file", "small-key-without-test-flag"])
def test_a_bad_setting_stops_the_service_at_once_naming_it(tmp_path, script, args, environment, named):
    secrets = {f"FT_{party}_SECRETS_DIR": str(tmp_path / "secrets") for party in ("COORDINATOR", "DATA_OWNER",
                                                                                  "MODEL_CREATOR")}
    result = _start(script, "--port", "0", "--state-dir", str(tmp_path / "state"), *args,
                    environment={**secrets, **environment})
    assert result.returncode != 0, result.stdout
    assert "bad setting" in result.stderr and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
