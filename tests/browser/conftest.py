"""Fixtures of the browser tests: one Chromium for the session, one real federation for the module.

The federation's parties are separate processes on free loopback ports: a coordinator, the three shipped
owners, a fourth owner protecting its rows with differential privacy (it refuses every job
without bounds), each owner with its traffic log, and a model creator with a user API token.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from browser_support import CHROMIUM, CHROMIUM_FLAGS, chromium_missing
from support import SHIPPED, SHIPPED_OWNERS

from local_federation.cluster import LocalFederation

#: The owner that runs differential privacy, on the third shard, and its options.
PRIVATE_OWNER = "private_d"
PRIVATE_OPTIONS = ["--dp-epsilon", "1", "--dp-delta", "1e-5", "--privacy-budget", "3"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (never Playwright's own download)."""
    chromium_missing()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Federation:
    """A running federation and what its users hold.

    The model creator's API token, each operator's token, and every owner's traffic log.
    """

    local: LocalFederation
    api_token: str
    traffic_logs: dict[str, Path] = field(default_factory=dict)

    @property
    def model_creator(self) -> str:
        return self.local.model_creator.url

    @property
    def coordinator(self) -> str:
        return self.local.coordinator.url

    def owner(self, name: str) -> str:
        return self.local.data_owner(name).url

    def operator_token(self, party: str) -> str:
        """The operator token of ``coordinator`` or of a data owner ``data_owner_<name>`` (its state directory)."""
        return (self.local.workdir / party / "operator_token").read_text().strip()

    def api(self, method: str, path: str, **options: Any) -> requests.Response:
        """A call to the model creator's user API with its token."""
        headers = {"Authorization": f"Bearer {self.api_token}"}
        return self.local.session.request(method, f"{self.model_creator}{path}", headers=headers, timeout=30, **options)

    def model(self, model_id: str) -> dict[str, Any]:
        response = self.api("GET", f"/model/{model_id}")
        assert response.status_code == 200, response.text
        model: dict[str, Any] = response.json()
        return model

    def wait_ended(self, model_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            model = self.model(model_id)
            if model["status"] in ("finished", "failed", "cancelled") or time.monotonic() > deadline:
                return model
            time.sleep(0.2)

    def train(self, body: dict[str, Any]) -> dict[str, Any]:
        """A job started through the API, waited for until it ends."""
        response = self.api("POST", "/model", json=body)
        assert response.status_code == 202, response.text
        return self.wait_ended(response.json()["model_id"])

    def wait_idle(self, timeout: float = 120) -> list[dict[str, Any]]:
        """Every model, once none is in flight."""
        deadline = time.monotonic() + timeout
        while True:
            models: list[dict[str, Any]] = self.api("GET", "/models").json()["models"]
            if all(m["status"] not in ("pending", "running") for m in models) or time.monotonic() > deadline:
                return models
            time.sleep(0.2)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    workdir = tmp_path_factory.mktemp("browser")
    api_token = secrets.token_urlsafe(24)
    local = LocalFederation(
        workdir,
        [],
        test_data=SHIPPED / "test.csv",
        key_bits=1024,
        environment={"FT_MODEL_CREATOR_API_TOKEN": api_token},
    )
    running = Federation(local, api_token)
    try:
        local.start()
        owners = [
            *((name, data, []) for name, data in SHIPPED_OWNERS),
            (PRIVATE_OWNER, SHIPPED_OWNERS[2][1], PRIVATE_OPTIONS),
        ]
        for name, data, options in owners:
            log = workdir / f"{name}.traffic.jsonl"
            local.add_data_owner(name, data, options=[*options, "--traffic-log", str(log)])
            running.traffic_logs[name] = log
        yield running
    finally:
        local.stop()


@pytest.fixture(scope="module")
def finished_model(federation: Federation) -> dict[str, Any]:
    """One exact job on four features, finished through the API."""
    model = federation.train({"features": ["age", "bmi", "bp", "s5"], "label": "progression", "name": "exact four"})
    assert model["status"] == "finished", model
    return model
