"""Parties on separate hosts: network namespaces with their own addresses, joined by a bridge.

Each party runs in its own namespace (made and removed by the test), talks HTTPS to the others
with a certificate made here, and one owner's link is cut mid-job and later restored. The job must
finish with the exact model of the owners of its final rounds, and say which those are.
Skipped, with the reason, where the test cannot create namespaces (not root, no iproute2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import DIABETES_FEATURES, DIABETES_LABEL, SHIPPED, SHIPPED_OWNERS_ABC

from common.dataset import load_columns
from local_federation.cluster import LocalFederation

pytestmark = pytest.mark.e2e

SUBNET = "10.231.7"
HOSTS = {"tester": 1, "coordinator": 2, "model_creator": 3, "data_owner:a": 4, "data_owner:b": 5, "data_owner:c": 6}


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def _can_make_namespaces() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2 ('ip') is not installed"
    if shutil.which("openssl") is None:
        return "openssl is not installed (needed for the test certificate)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"ftprobe{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture(scope="module")
def network() -> Iterator[dict[str, str]]:
    """One namespace per party plus a switch namespace with a bridge; the tester gets a leg too.

    Yields party name → namespace (the tester's leg stays in the test's own namespace).
    """
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(f"multi-host test skipped: {reason}")
    tag = f"ft{os.getpid() % 100000}"
    switch = f"{tag}sw"
    namespaces: dict[str, str] = {}
    _run("ip", "netns", "add", switch)
    try:
        _run("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", switch, "link", "set", "br0", "up")
        for index, (party, octet) in enumerate(HOSTS.items()):
            outside, inside = f"{tag}p{index}", f"{tag}h{index}"
            _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            _run("ip", "link", "set", outside, "netns", switch)
            _run("ip", "-n", switch, "link", "set", outside, "master", "br0", "up")
            if party == "tester":
                _run("ip", "addr", "add", f"{SUBNET}.{octet}/24", "dev", inside)
                _run("ip", "link", "set", inside, "up")
                continue
            namespace = f"{tag}n{index}"
            _run("ip", "netns", "add", namespace)
            namespaces[party] = namespace
            _run("ip", "link", "set", inside, "netns", namespace)
            _run("ip", "-n", namespace, "addr", "add", f"{SUBNET}.{octet}/24", "dev", inside)
            _run("ip", "-n", namespace, "link", "set", inside, "up")
            _run("ip", "-n", namespace, "link", "set", "lo", "up")
        namespaces["switch"] = switch
        namespaces["tag"] = tag
        yield namespaces
    finally:
        for index, party in enumerate(HOSTS):
            subprocess.run(["ip", "link", "del", f"{tag}h{index}"], capture_output=True)
        for namespace in [*[n for k, n in namespaces.items() if k not in ("switch", "tag")], switch]:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for every party address, which is also its own authority."""
    certificate, key = directory / "tls.crt", directory / "tls.key"
    names = ",".join(f"IP:{SUBNET}.{octet}" for octet in HOSTS.values())
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=federated-test",
         "-keyout", str(key), "-out", str(certificate), "-addext", f"subjectAltName={names}",
         "-addext", "basicConstraints=critical,CA:TRUE")
    return certificate, key


def _wait_for_round(federation: LocalFederation, model_id: str, round_number: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = federation.session.get(f"{federation.model_creator.url}/model/{model_id}", timeout=10).json()
        if model["round"] >= round_number or model["status"] in ("finished", "failed"):
            return
        time.sleep(0.05)
    raise TimeoutError(f"round {round_number} not reached")


def _least_squares(names: list[str]) -> np.ndarray:
    parts = [load_columns(SHIPPED / f"owner_{name}.csv", DIABETES_FEATURES, DIABETES_LABEL) for name in names]
    features = np.vstack([x for x, _ in parts])
    design = np.hstack([np.ones((len(features), 1)), features])
    return np.linalg.lstsq(design, np.concatenate([y for _, y in parts]), rcond=None)[0]


def test_owner_cut_off_and_back_over_https_between_hosts(network, tmp_path):
    certificate, key = _certificate(tmp_path)
    placement = {party: (["ip", "netns", "exec", network[party]], f"{SUBNET}.{octet}")
                 for party, octet in HOSTS.items() if party != "tester"}
    owners = SHIPPED_OWNERS_ABC
    environment = {"FT_COORDINATOR_ROUND_TIMEOUT": "3", "FT_COORDINATOR_REQUEST_TIMEOUT": "3",
                   "FT_COORDINATOR_RETRY_DELAY": "0.5"}
    federation = LocalFederation(tmp_path / "federation", owners, test_data=SHIPPED / "test.csv", key_bits=1024,
                                 environment=environment, tls_cert=certificate, tls_key=key, placement=placement)
    owner_c_link = f"{network['tag']}p{list(HOSTS).index('data_owner:c')}"
    with federation:
        assert federation.coordinator.url == f"https://{SUBNET}.2:{federation.coordinator.port}"
        answer = federation.session.post(f"{federation.model_creator.url}/model", json={"min_data_owners": 2},
                                         timeout=30)
        assert answer.status_code == 202
        model_id = answer.json()["model_id"]

        _wait_for_round(federation, model_id, 3)
        _run("ip", "-n", network["switch"], "link", "set", owner_c_link, "down")
        _wait_for_round(federation, model_id, 6)
        cut_model = federation.session.get(f"{federation.model_creator.url}/model/{model_id}", timeout=10).json()
        _run("ip", "-n", network["switch"], "link", "set", owner_c_link, "up")
        model = federation.wait_model(model_id, timeout=300)

    assert model["status"] == "finished", model.get("error")
    history = model["history"]
    assert any(entry["data_owners"] == ["a", "b"] and "c" in entry["failures"] for entry in cut_model["history"])
    assert any(entry["restarted"] for entry in history)
    assert model["data_owners"] == history[-1]["data_owners"]
    expected = _least_squares(model["data_owners"])
    got = np.array([model["coefficients"][name] for name in ["intercept", *DIABETES_FEATURES]])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    if model["data_owners"] == ["a", "b"]:
        # c came back too late for the final rounds; the model says so and is exact for a and b.
        assert not np.allclose(got, _least_squares(["a", "b", "c"]), rtol=1e-6)
