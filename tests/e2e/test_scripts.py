"""The user-facing start scripts document their options."""

from __future__ import annotations

import subprocess

import pytest

from e2e_support import CHECKOUT

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
