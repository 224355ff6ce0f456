"""Start, use and stop the three kinds of party as real processes on loopback."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from common.crypto.paillier import SECURE_KEY_BITS
from common.service.cli import CHECKOUT
from common.service.settings import provision_secrets

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Party:
    """One running service."""

    name: str
    module: str
    port: int
    arguments: list[str]
    log_path: Path
    scheme: str = "http"
    host: str = "127.0.0.1"
    prefix: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, environment: dict[str, str]) -> None:
        command = [
            *self.prefix,
            sys.executable,
            "-m",
            self.module,
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.arguments,
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=CHECKOUT, start_new_session=True
        )
        log.close()

    def stop(self, timeout: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class LocalFederation:
    """A coordinator, data owners (name → CSV) and a model creator under one work directory.

    ``environment`` adds variables to every party's environment (e.g. ``FT_COORDINATOR_ROUND_TIMEOUT``);
    ``coordinator_traffic_log`` records every byte the coordinator receives and sends, and
    ``owner_traffic_logs`` every byte each data owner does (:meth:`owner_traffic_log`); with
    ``tls_cert`` and ``tls_key`` (a certificate for 127.0.0.1 that is also its own authority) every
    party serves and calls over HTTPS. ``placement`` puts parties on other hosts: party name
    (``coordinator``, ``model_creator``, ``data_owner:NAME``) → (command prefix, address), e.g.
    ``(["ip", "netns", "exec", "ns1"], "10.231.7.2")`` for a network namespace of a test.
    Each party gets only its own secrets file, from ``workdir/secrets`` (one per kind of party).
    """

    workdir: Path
    owners: Sequence[tuple[str, Path]]
    test_data: Path | str | None = None  # "none": a model creator with no test data
    key_bits: int = 2048
    environment: dict[str, str] = field(default_factory=dict)
    coordinator_traffic_log: Path | None = None
    owner_traffic_logs: bool = False
    startup_timeout: float = 60.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    placement: dict[str, tuple[list[str], str]] = field(default_factory=dict)
    owner_options: list[str] = field(default_factory=list)
    parties: dict[str, Party] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # One secrets file per party, each passed only to its own party; the federation keeps every
        # value in memory so that tests can present them as the parties would.
        self.secrets_dir = self.workdir / "secrets"
        self.secrets = provision_secrets(self.secrets_dir)
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only: no proxies, and no CA bundle from the environment
        if self.tls_cert:
            self.session.verify = str(self.tls_cert)

    @property
    def coordinator(self) -> Party:
        return self.parties["coordinator"]

    @property
    def model_creator(self) -> Party:
        return self.parties["model_creator"]

    def start(self) -> LocalFederation:
        """Start every party and wait until all are healthy and every owner is registered."""
        coordinator_args = ["--state-dir", str(self.workdir / "coordinator")]
        if self.coordinator_traffic_log:
            coordinator_args += ["--traffic-log", str(self.coordinator_traffic_log)]
        self._add("coordinator", "coordinator", coordinator_args + self._small_keys())
        for name, data in self.owners:
            self.add_data_owner(name, data, start=False)
        creator_args = [
            "--state-dir",
            str(self.workdir / "model_creator"),
            "--coordinator",
            self.coordinator.url,
            "--key-bits",
            str(self.key_bits),
        ]
        if self.test_data:
            creator_args += ["--test-data", str(self.test_data)]
        self._add("model_creator", "model_creator", creator_args + self._small_keys())
        for party in self.parties.values():
            party.start(self._environment())
        for party in self.parties.values():
            self.wait_healthy(party)
        self.wait_registered([name for name, _ in self.owners])
        return self

    def add_data_owner(self, name: str, data: Path, start: bool = True, options: Sequence[str] = ()) -> Party:
        """Add (and by default start) a data owner serving ``data``, with ``options`` after ``owner_options``."""
        party = self._add(
            f"data_owner:{name}",
            "data_owner",
            [
                "--name",
                name,
                "--data",
                str(data),
                "--coordinator",
                self.coordinator.url,
                "--state-dir",
                str(self.workdir / f"data_owner_{name}"),
                *(["--traffic-log", str(self.owner_traffic_log(name))] if self.owner_traffic_logs else []),
                *self.owner_options,
                *options,
                *self._small_keys(),
            ],
        )
        if start:
            party.start(self._environment())
            self.wait_healthy(party)
            self.wait_registered([name])
        return party

    def _small_keys(self) -> list[str]:
        """The test-only flag every party needs to accept a key under 2048 bits (tests use 1024)."""
        return ["--test-only-small-keys"] if self.key_bits < SECURE_KEY_BITS else []

    def data_owner(self, name: str) -> Party:
        return self.parties[f"data_owner:{name}"]

    def owner_traffic_log(self, name: str) -> Path:
        """Where data owner ``name`` records its traffic, with ``owner_traffic_logs``."""
        return self.workdir / f"traffic_{name}.jsonl"

    def operator_token(self, party: str) -> str:
        """The operator token a party made at its first start: ``coordinator`` or ``data_owner:NAME``."""
        directory = "coordinator" if party == "coordinator" else f"data_owner_{party.removeprefix('data_owner:')}"
        return (self.workdir / directory / "operator_token").read_text().strip()

    def owner_status(self, name: str) -> dict[str, Any]:
        """A data owner's ``GET /status``, as its operator sees it (with the owner's operator token)."""
        token = self.operator_token(f"data_owner:{name}")
        response = self.session.get(
            f"{self.data_owner(name).url}/status", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        response.raise_for_status()
        status: dict[str, Any] = response.json()
        return status

    def start_party(self, party: Party, environment: dict[str, str] | None = None) -> None:
        """Start a stopped party again on its port (``environment`` added to its own only) and wait until healthy."""
        party.start({**self._environment(), **(environment or {})})
        self.wait_healthy(party)

    def restart(self, party: Party, down_seconds: float = 0.0) -> None:
        """Stop a party, leave it down for ``down_seconds``, start it again on the same port."""
        party.stop()
        time.sleep(down_seconds)
        self.start_party(party)

    def stop(self) -> None:
        for party in reversed(list(self.parties.values())):
            party.stop()
        self.session.close()

    def __enter__(self) -> LocalFederation:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_healthy(self, party: Party) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if party.process is not None and party.process.poll() is not None:
                raise RuntimeError(f"{party.name} exited with {party.process.returncode}:\n{party.log_tail()}")
            try:
                if self.session.get(f"{party.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{party.name} was not healthy within {self.startup_timeout} s:\n{party.log_tail()}")

    def wait_registered(self, names: Sequence[str]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            answer = self.session.get(
                f"{self.coordinator.url}/data_owners", timeout=5, headers=self.bearer("model_creator_token")
            ).json()
            if set(names) <= {owner["name"] for owner in answer["data_owners"]}:
                return
            time.sleep(0.1)
        raise TimeoutError(f"data owners {list(names)} did not register within {self.startup_timeout} s")

    def train(self, body: dict[str, Any] | None = None, timeout: float = 600.0) -> dict[str, Any]:
        """Start a job at the model creator and wait until it has finished or failed."""
        response = self.session.post(f"{self.model_creator.url}/model", json=body, timeout=30)
        if response.status_code != 202:
            raise RuntimeError(f"POST /model answered {response.status_code}: {response.text}")
        return self.wait_model(response.json()["model_id"], timeout)

    def wait_model(self, model_id: str, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model: dict[str, Any] = self.session.get(f"{self.model_creator.url}/model/{model_id}", timeout=30).json()
            if model["status"] in ("finished", "failed"):
                return model
            time.sleep(0.1)
        raise TimeoutError(f"model {model_id} did not finish within {timeout} s")

    def prediction(self, model_id: str | None = None) -> dict[str, Any]:
        params = {"model_id": model_id} if model_id else None
        response = self.session.get(f"{self.model_creator.url}/prediction", params=params, timeout=30)
        response.raise_for_status()
        prediction: dict[str, Any] = response.json()
        return prediction

    def bearer(self, secret: str) -> dict[str, str]:
        """The Authorization header with one of the federation's secrets, as a party sends it."""
        return {"Authorization": f"Bearer {self.secrets[secret]}"}

    def secrets_file(self, module: str) -> Path:
        """The secrets file of the party kind ``module`` (``coordinator``, ``data_owner``, ``model_creator``)."""
        return self.secrets_dir / f"{module}.json"

    def _add(self, name: str, module: str, arguments: list[str]) -> Party:
        arguments = [*arguments, "--secrets-file", str(self.secrets_file(module))]
        if self.tls_cert:
            arguments += [
                "--tls-cert",
                str(self.tls_cert),
                "--tls-key",
                str(self.tls_key),
                "--ca-bundle",
                str(self.tls_cert),
            ]
        prefix, host = self.placement.get(name, ([], "127.0.0.1"))
        if host != "127.0.0.1" and not self.tls_cert:
            arguments.append("--allow-insecure-http")
        # Two probes may be handed the same free port while neither party listens yet: a port is
        # never given to two parties of one federation.
        taken = {other.port for other in self.parties.values()}
        port = free_port()
        while port in taken:
            port = free_port()
        party = Party(
            name,
            module,
            port,
            arguments,
            self.workdir / f"{name.replace(':', '_')}.log",
            "https" if self.tls_cert else "http",
            host,
            list(prefix),
        )
        self.parties[name] = party
        return party

    def _environment(self) -> dict[str, str]:
        environment = {**os.environ, **self.environment}
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), environment.get("PYTHONPATH")]))
        return environment
