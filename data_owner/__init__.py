"""A Data Owner: keeps its rows, answers encrypted rounds with encrypted gradients.

It never decrypts anything and never learns the weights; what leaves it is ciphertexts under the
model creator's key, its name and its URL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask_openapi3.openapi import OpenAPI

from common.crypto.identity import IdentityKey
from common.dataset import read_header
from common.protocol.errors import FederatedError
from common.protocol.messages import Deregistration
from common.protocol.messages import Enrolment as EnrolmentMessage
from common.service.app import create_base_app, peer_client, settings_of
from common.service.auth import COORDINATOR, OPERATOR, Authenticator, Caller, same_token
from common.service.clients import CoordinatorClient
from common.service.settings import SettingsError, load_or_create_token, load_settings, with_secrets
from data_owner.audit import AuditTrail
from data_owner.config import DataOwnerSettings
from data_owner.jobs import JobBook
from data_owner.ledger import Ledger
from data_owner.policy import OwnerPolicy, policy_warnings
from data_owner.processes import ProcessPool
from data_owner.responder import RoundResponder
from data_owner.views import audit_answer, jobs, owner

logger = logging.getLogger(__name__)

IDENTITY_KEY_FILE = "identity_key.pem"
LEDGER_FILE = "ledger.sqlite3"
AUDIT_FILE = "audit.sqlite3"
OPERATOR_TOKEN_FILE = "operator_token"


def create_app(settings: DataOwnerSettings | Mapping[str, Any] | None = None) -> OpenAPI:
    """Build the data-owner app; it registers with the coordinator only when told to.

    Every message it sends to another party, and every answer it gives the coordinator, is
    recorded in its audit first (:mod:`data_owner.audit`).
    """
    if not isinstance(settings, DataOwnerSettings):
        settings = load_settings(DataOwnerSettings, settings)
    settings = with_secrets(settings)
    app = create_base_app(
        "data_owner",
        "Data Owner",
        "Keeps its rows and answers encrypted rounds with encrypted gradients. It never decrypts anything"
        " and never learns the weights; what leaves it is ciphertexts under the model creator's key.",
        settings,
    )
    state_dir = settings.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        policy = OwnerPolicy.load(state_dir, settings.policy)
    except ValueError as exc:
        raise SettingsError(f"POLICY: {exc}") from None
    for warning in policy_warnings(policy):
        logger.warning("%s: %s", settings.name, warning)
    identity = IdentityKey.load_or_create(state_dir / IDENTITY_KEY_FILE)
    ledger = Ledger(state_dir / LEDGER_FILE, reset=settings.reset_state)
    operator_token = settings.operator_token or load_or_create_token(state_dir / OPERATOR_TOKEN_FILE)
    audit = AuditTrail(state_dir / AUDIT_FILE, reset=settings.reset_state)
    app.extensions.update(audit=audit, outbound_audit=audit)
    enrolment = Enrolment()
    coordinator = CoordinatorClient(peer_client(app, settings), settings.coordinator_url, enrolment.current_credential)
    processes = ProcessPool(settings.worker_processes)
    app.extensions.update(
        enrolment=enrolment,
        identity=identity,
        ledger=ledger,
        auth=Authenticator({OPERATOR: operator_token}, enrolment.identify),
        job_book=JobBook(str(settings.data), settings.name, policy, ledger, identity),
        coordinator=coordinator,
        responder=RoundResponder(settings.name, coordinator, processes, policy, ledger, settings.delivery_seconds),
        processes=processes,
    )
    app.register_api(jobs)
    app.register_api(owner)
    app.after_request(audit_answer)
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


def published_columns(data: Path, policy: OwnerPolicy) -> list[str]:
    """The column names this owner publishes at enrolment: its file's, as far as its policy allows."""
    header = read_header(data)
    return [name for name in header if policy.allow_columns is None or name in policy.allow_columns]


def deregister(app: OpenAPI) -> None:
    """Leave the federation: the coordinator forgets this owner (signed, with its credential).

    Raises
    ------
    FederatedError
        When the coordinator refuses or cannot be reached.
    """
    settings = settings_of(app, DataOwnerSettings)
    identity: IdentityKey = app.extensions["identity"]
    coordinator: CoordinatorClient = app.extensions["coordinator"]
    coordinator.deregister(settings.name, Deregistration.signed(settings.name, identity, time.time()))
    logger.info("deregistered from the coordinator at %s", settings.coordinator_url)


def register_until_accepted(app: OpenAPI, stop: threading.Event) -> None:
    """Enrol with the coordinator, retrying until it answers.

    The enrolment carries the enrolment secret and is signed, freshly at each try, with this
    owner's identity key, to which the coordinator binds the owner's name.
    """
    settings = settings_of(app, DataOwnerSettings)
    identity: IdentityKey = app.extensions["identity"]
    enrolling = CoordinatorClient(peer_client(app, settings), settings.coordinator_url, settings.enrolment_secret)
    columns = published_columns(settings.data, app.extensions["job_book"].policy)
    while not stop.is_set():
        try:
            enrolled = enrolling.enrol(
                EnrolmentMessage.signed(settings.name, settings.public_url, identity, time.time(), columns)
            )
        except FederatedError as exc:
            logger.info("enrolment with the coordinator not accepted yet, retrying: %s", exc.message)
            stop.wait(settings.register_interval)
        else:
            app.extensions["enrolment"].set(enrolled.credential, enrolled.coordinator_token)
            logger.info("enrolled with the coordinator at %s as %r", settings.coordinator_url, settings.name)
            return
