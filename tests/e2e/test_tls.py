"""Every party over HTTPS on loopback, with a self-signed certificate made by the test."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import requests
from support import SHIPPED

from local_federation.cluster import LocalFederation

pytestmark = pytest.mark.e2e


@pytest.fixture
def certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (needed to make the test certificate)")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_training_over_https(tmp_path, certificate):
    cert, key = certificate
    owners = [(name, SHIPPED / f"owner_{name}.csv") for name in "ab"]
    with LocalFederation(tmp_path / "federation", owners, test_data=SHIPPED / "test.csv", key_bits=1024,
                         tls_cert=cert, tls_key=key) as federation:
        assert all(party.url.startswith("https://127.0.0.1:") for party in federation.parties.values())
        model = federation.train()
        assert model["status"] == "finished", model.get("error")
        assert model["data_owners"] == ["a", "b"]

        plain = federation.coordinator.url.replace("https://", "http://")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{plain}/health", timeout=5)
        untrusted = requests.Session()
        untrusted.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            untrusted.get(f"{federation.coordinator.url}/health", timeout=5)
