"""The Model Creator.

It holds the Paillier private key and the models, and decrypts only sums over all data owners
of a round.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from common.service.auth import COORDINATOR, USER, Authenticator, resolve_secrets
from common.service.openapi import openapi_blueprint
from common.service.app import Worker, create_base_app, peer_client
from model_creator.config import DEFAULTS, ENV_PREFIX
from model_creator.keystore import KeyStore
from model_creator.openapi import document as openapi_document
from model_creator.runner import Trainer
from model_creator.store import ModelStore
from model_creator.views import callbacks, models


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the model-creator app; the key is loaded or generated on first use."""
    app = create_base_app("model_creator", DEFAULTS, ENV_PREFIX, config)
    resolve_secrets(app.config, ["model_creator_token", "coordinator_token"])
    state_dir = Path(app.config["STATE_DIR"])
    store = ModelStore(state_dir / "model_creator.sqlite3")
    keys = KeyStore(state_dir, int(app.config["KEY_BITS"]))
    client = peer_client(app, app.config["MODEL_CREATOR_TOKEN"])
    worker = Worker("model-creator")
    app.extensions.update(
        auth=Authenticator({COORDINATOR: app.config["COORDINATOR_TOKEN"], USER: app.config["API_TOKEN"]}),
        model_store=store,
        key_store=keys,
        trainer=Trainer(store, keys, client, worker, app.config),
    )
    app.register_blueprint(models)
    app.register_blueprint(callbacks)
    app.register_blueprint(openapi_blueprint(openapi_document()))
    return app
