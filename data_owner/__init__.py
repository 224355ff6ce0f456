"""A Data Owner: keeps its rows, answers encrypted rounds with encrypted gradients.

It never decrypts anything and never learns the weights; what leaves it is ciphertexts under the
model creator's key, its name and its URL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from flask_openapi3.openapi import OpenAPI

from common.protocol.errors import FederatedError
from common.protocol.messages import Enrolment as EnrolmentMessage
from common.service.app import create_base_app, peer_client, settings_of
from common.service.auth import COORDINATOR, Authenticator, Caller, same_token
from common.service.clients import CoordinatorClient
from common.service.settings import load_settings, with_secrets
from data_owner.config import DataOwnerSettings
from data_owner.jobs import JobBook
from data_owner.processes import ProcessPool
from data_owner.responder import RoundResponder
from data_owner.views import jobs

logger = logging.getLogger(__name__)


def create_app(settings: DataOwnerSettings | Mapping[str, Any] | None = None) -> OpenAPI:
    """Build the data-owner app; it registers with the coordinator only when told to."""
    if not isinstance(settings, DataOwnerSettings):
        settings = load_settings(DataOwnerSettings, settings)
    settings = with_secrets(settings, ["enrolment_secret"])
    app = create_base_app(
        "data_owner",
        "Data Owner",
        "Keeps its rows and answers encrypted rounds with encrypted gradients. It never decrypts anything"
        " and never learns the weights; what leaves it is ciphertexts under the model creator's key.",
        settings,
    )
    enrolment = Enrolment()
    coordinator = CoordinatorClient(peer_client(app, settings), settings.coordinator_url, enrolment.current_credential)
    processes = ProcessPool(settings.worker_processes)
    app.extensions.update(
        enrolment=enrolment,
        auth=Authenticator({}, enrolment.identify),
        job_book=JobBook(str(settings.data)),
        coordinator=coordinator,
        responder=RoundResponder(settings.name, coordinator, processes),
        processes=processes,
    )
    app.register_api(jobs)
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

    def current_credential(self) -> str | None:
        with self._lock:
            return self.credential

    def identify(self, token: str) -> Caller | None:
        """The coordinator, if ``token`` is the one it was given for this owner."""
        with self._lock:
            expected = self.coordinator_token
        return Caller(COORDINATOR) if same_token(token, expected) else None


def register_until_accepted(app: OpenAPI, stop: threading.Event) -> None:
    """Enrol with the coordinator using the enrolment secret, retrying until it answers."""
    settings = settings_of(app, DataOwnerSettings)
    message = EnrolmentMessage(name=settings.name, url=settings.public_url)
    enrolling = CoordinatorClient(peer_client(app, settings), settings.coordinator_url, settings.enrolment_secret)
    while not stop.is_set():
        try:
            enrolled = enrolling.enrol(message)
        except FederatedError as exc:
            logger.info("enrolment with the coordinator not accepted yet, retrying: %s", exc.message)
            stop.wait(settings.register_interval)
        else:
            app.extensions["enrolment"].set(enrolled.credential, enrolled.coordinator_token)
            logger.info("enrolled with the coordinator at %s as %r", settings.coordinator_url, settings.name)
            return
