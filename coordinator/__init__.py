"""The Training Coordinator: registry of data owners, relay and aggregator of ciphertexts.

It never holds a private key and never sees a plaintext weight, gradient or data value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from flask_openapi3.openapi import OpenAPI

from common.service.app import Worker, create_base_app, peer_client
from common.service.auth import DATA_OWNER, ENROLMENT, MODEL_CREATOR, OPERATOR, Authenticator, Caller, token_digest
from common.service.settings import load_or_create_token, load_settings, with_secrets
from coordinator.config import CoordinatorSettings
from coordinator.rounds import RoundRegistry
from coordinator.runner import RoundRunner
from coordinator.store import CoordinatorStore
from coordinator.views import contributions, data_owners, jobs

#: Where a coordinator keeps its operator's token when none is configured (mode 0600).
OPERATOR_TOKEN_FILE = "operator_token"


def create_app(
    settings: CoordinatorSettings | Mapping[str, Any] | None = None, clock: Callable[[], float] = time.time
) -> OpenAPI:
    """Build the coordinator app; nothing touches the network until a request arrives.

    Parameters
    ----------
    settings
        The settings, or a mapping of test values over the defaults and the environment.
    clock
        The wall clock (seconds since 1970) that enrolments' signing times are checked against.

    Raises
    ------
    SettingsError
        Naming the setting whose value cannot be used, or a secret that cannot be found.
    """
    if not isinstance(settings, CoordinatorSettings):
        settings = load_settings(CoordinatorSettings, settings)
    settings = with_secrets(settings)
    app = create_base_app(
        "coordinator",
        "Training Coordinator",
        "Registry of data owners, relay and aggregator of ciphertexts. It never holds a private key and never"
        " sees a plaintext weight, gradient or data value.",
        settings,
    )
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = CoordinatorStore(str(settings.state_dir / "coordinator.sqlite3"), reset=settings.reset_state)
    registry = RoundRegistry()
    runner = RoundRunner(store, peer_client(app, settings), registry, Worker("coordinator-rounds", threads=8), settings)

    def owner_with_credential(token: str) -> Caller | None:
        name = store.data_owner_by_credential(token_digest(token))
        return Caller(DATA_OWNER, name) if name else None

    app.extensions.update(
        auth=Authenticator(
            {
                ENROLMENT: settings.enrolment_secret,
                MODEL_CREATOR: settings.model_creator_token,
                OPERATOR: settings.operator_token or load_or_create_token(settings.state_dir / OPERATOR_TOKEN_FILE),
            },
            owner_with_credential,
        ),
        clock=clock,
        coordinator_store=store,
        round_registry=registry,
        round_runner=runner,
    )
    app.register_api(data_owners)
    app.register_api(jobs)
    app.register_api(contributions)
    return app
