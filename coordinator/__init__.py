"""The Training Coordinator: registry of data owners, relay and aggregator of ciphertexts.

It never holds a private key and never sees a plaintext weight, gradient or data value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from common.http import PeerClient
from common.service import Worker, create_base_app
from coordinator.config import DEFAULTS, ENV_PREFIX
from coordinator.rounds import RoundRegistry
from coordinator.runner import RoundRunner
from coordinator.store import CoordinatorStore
from coordinator.views import data_owners, jobs


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the coordinator app; nothing touches the network until a request arrives."""
    app = create_base_app("coordinator", DEFAULTS, ENV_PREFIX, config)
    store = CoordinatorStore(Path(app.config["STATE_DIR"]) / "coordinator.sqlite3")
    traffic_log = app.extensions.get("traffic_log")
    client = PeerClient(float(app.config["REQUEST_TIMEOUT"]), recorder=traffic_log.recorder() if traffic_log else None)
    registry = RoundRegistry()
    app.extensions.update(
        coordinator_store=store,
        round_registry=registry,
        round_runner=RoundRunner(store, client, registry, app.config),
        worker=Worker("coordinator-rounds", threads=8),
    )
    app.register_blueprint(data_owners)
    app.register_blueprint(jobs)
    return app
