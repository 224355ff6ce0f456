"""A Data Owner: keeps its rows, answers encrypted rounds with encrypted gradients.

It never decrypts anything and never learns the weights; what leaves it is ciphertexts under the
model creator's key, its name and its URL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask

from common.service.auth import COORDINATOR, Authenticator, Caller, resolve_secrets, same_token
from common.protocol.errors import UpstreamError
from common.service.openapi import openapi_blueprint
from data_owner.processes import ProcessPool
from common.service.app import Worker, create_base_app, peer_client
from data_owner.config import DEFAULTS, ENV_PREFIX
from data_owner.jobs import JobBook
from data_owner.openapi import document as openapi_document
from data_owner.responder import RoundResponder
from data_owner.views import jobs

logger = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the data-owner app; it registers with the coordinator only when told to."""
    app = create_base_app("data_owner", DEFAULTS, ENV_PREFIX, config)
    resolve_secrets(app.config, ["enrolment_secret"])
    enrolment = Enrolment()
    client = peer_client(app)
    processes = ProcessPool(app.config["WORKER_PROCESSES"])
    app.extensions.update(
        enrolment=enrolment,
        auth=Authenticator({}, enrolment.identify),
        job_book=JobBook(app.config["DATA"]),
        client=client,
        responder=RoundResponder(app.config, client, processes, enrolment),
        worker=Worker("data-owner-rounds"),
        processes=processes,
    )
    app.register_blueprint(jobs)
    app.register_blueprint(openapi_blueprint(openapi_document()))
    return app


class Enrolment:
    """The credentials this owner got from the coordinator: its own, and the coordinator's for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.credential: str | None = None
        self.coordinator_token: str | None = None

    def set(self, credential: str, coordinator_token: str) -> None:
        with self._lock:
            self.credential, self.coordinator_token = credential, coordinator_token

    def identify(self, token: str) -> Caller | None:
        """The coordinator, if ``token`` is the one it was given for this owner."""
        with self._lock:
            expected = self.coordinator_token
        return Caller(COORDINATOR) if same_token(token, expected) else None


def register_until_accepted(app: Flask, stop: threading.Event) -> None:
    """Enrol with the coordinator using the enrolment secret, retrying until it answers."""
    config = app.config
    payload = {"name": config["NAME"], "url": config["PUBLIC_URL"]}
    url = f"{config['COORDINATOR_URL'].rstrip('/')}/data_owners"
    while not stop.is_set():
        try:
            answer = app.extensions["client"].post(url, payload, token=config["ENROLMENT_SECRET"])
            app.extensions["enrolment"].set(answer["credential"], answer["coordinator_token"])
        except (UpstreamError, KeyError, TypeError) as exc:
            logger.warning("enrolment with the coordinator failed, retrying: %s", getattr(exc, "message", exc))
            stop.wait(float(config["REGISTER_INTERVAL"]))
        else:
            logger.info("enrolled with the coordinator at %s as %r", config["COORDINATOR_URL"], config["NAME"])
            return
