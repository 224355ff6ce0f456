"""The Training Coordinator: registry of data owners, relay and aggregator of ciphertexts.

It never holds a private key and never sees a plaintext weight, gradient or data value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from common.service.auth import DATA_OWNER, ENROLMENT, MODEL_CREATOR, Authenticator, Caller, resolve_secrets, token_digest
from common.service.openapi import openapi_blueprint
from common.service.app import Worker, create_base_app, peer_client
from coordinator.config import DEFAULTS, ENV_PREFIX
from coordinator.openapi import document as openapi_document
from coordinator.rounds import RoundRegistry
from coordinator.runner import RoundRunner
from coordinator.store import CoordinatorStore
from coordinator.views import data_owners, jobs


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the coordinator app; nothing touches the network until a request arrives."""
    app = create_base_app("coordinator", DEFAULTS, ENV_PREFIX, config)
    resolve_secrets(app.config, ["enrolment_secret", "model_creator_token", "coordinator_token"])
    store = CoordinatorStore(Path(app.config["STATE_DIR"]) / "coordinator.sqlite3")
    client = peer_client(app, app.config["COORDINATOR_TOKEN"])
    registry = RoundRegistry()
    worker = Worker("coordinator-rounds", threads=8)

    def owner_with_credential(token: str) -> Caller | None:
        name = store.data_owner_by_credential(token_digest(token))
        return Caller(DATA_OWNER, name) if name else None

    app.extensions.update(
        auth=Authenticator(
            {ENROLMENT: app.config["ENROLMENT_SECRET"], MODEL_CREATOR: app.config["MODEL_CREATOR_TOKEN"]},
            owner_with_credential,
        ),
        coordinator_store=store,
        round_registry=registry,
        round_runner=RoundRunner(store, client, registry, worker, app.config),
    )
    app.register_blueprint(data_owners)
    app.register_blueprint(jobs)
    app.register_blueprint(openapi_blueprint(openapi_document()))
    return app
