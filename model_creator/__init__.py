"""The Model Creator.

It holds the Paillier private key and the models, and decrypts only sums over all data owners
of a round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask_openapi3.openapi import OpenAPI

from common.service.app import Worker, create_base_app, peer_client
from common.service.auth import COORDINATOR, USER, Authenticator
from common.service.clients import CoordinatorClient
from common.service.settings import load_settings, with_secrets
from model_creator.config import ModelCreatorSettings
from model_creator.job import Trainer
from model_creator.keystore import KeyStore
from model_creator.store import ModelStore
from model_creator.views import callbacks, models, predictions


def create_app(settings: ModelCreatorSettings | Mapping[str, Any] | None = None) -> OpenAPI:
    """Build the model-creator app; the key is loaded or generated on first use, not here.

    Raises
    ------
    SettingsError
        Naming the setting that cannot be used (a bad variable, unreadable test data, a secret
        that is neither configured nor in the secrets file).
    """
    if not isinstance(settings, ModelCreatorSettings):
        settings = load_settings(ModelCreatorSettings, settings)
    settings = with_secrets(settings)
    app = create_base_app(
        "model_creator",
        "Model Creator",
        "Holds the Paillier private key and the models; decrypts only sums over all data owners of a round.",
        settings,
    )
    store = ModelStore(settings.state_dir / "model_creator.sqlite3", reset=settings.reset_state)
    keys = KeyStore(settings.state_dir, settings.key_bits, settings.test_only_small_keys)
    coordinator = CoordinatorClient(peer_client(app, settings), settings.coordinator_url, settings.model_creator_token)
    # The user API is open when no API token is configured: serve it on loopback only then.
    open_roles = frozenset() if settings.api_token else frozenset({USER})
    app.extensions.update(
        auth=Authenticator({COORDINATOR: settings.coordinator_token, USER: settings.api_token}, open_roles=open_roles),
        model_store=store,
        key_store=keys,
        coordinator=coordinator,
        column_check=CoordinatorClient(
            peer_client(app, settings, single_attempt=settings.column_check_timeout),
            settings.coordinator_url,
            settings.model_creator_token,
        ),
        trainer=Trainer(store, keys, coordinator, Worker("model-creator"), settings),
    )
    app.register_api(models)
    app.register_api(predictions)
    app.register_api(callbacks)
    return app
