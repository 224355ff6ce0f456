"""A data owner that cannot reply to a round tells the coordinator, which stops waiting for it."""

from __future__ import annotations

import threading
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.crypto.identity import IdentityKey
from common.protocol.messages import Enrolment
from coordinator.rounds import RoundCollector
from tests.api.api_support import as_enrolling_owner, assert_json_error, client_with


def _enrol(coordinator_app, name: str) -> str:
    """Enrol ``name`` with the enrolment secret, signed by a fresh identity key of its own."""
    identity = IdentityKey(Ed25519PrivateKey.generate())
    enrolment = Enrolment.signed(name, "http://127.0.0.1:9", identity, time.time())
    answer = as_enrolling_owner(coordinator_app).post("/data_owners", json=enrolment.model_dump(mode="json"))
    assert answer.status_code == 201
    return answer.get_json()["credential"]


def test_a_refusal_ends_the_wait_for_that_owner(coordinator_app):
    credential = _enrol(coordinator_app, "owner-a")
    _enrol(coordinator_app, "owner-b")
    collector = RoundCollector("job-1", 4, 1, "gradient", frozenset({"owner-a", "owner-b"}))
    coordinator_app.extensions["round_registry"].open(collector)
    collector.add("owner-b", [])
    waiter = threading.Thread(target=collector.wait, args=(60,))
    waiter.start()

    answer = client_with(coordinator_app, credential).post(
        "/jobs/job-1/rounds/4/refusals", json={"data_owner": "owner-a", "attempt": 1, "code": "internal"}
    )

    assert answer.status_code == 202
    waiter.join(10)
    assert not waiter.is_alive(), "the round still waited for the owner that refused"
    assert collector.failures == {"owner-a": "refused: internal"}


def test_a_refusal_for_another_owner_or_a_closed_round_is_refused(coordinator_app):
    credential = _enrol(coordinator_app, "owner-a")
    _enrol(coordinator_app, "owner-b")
    collector = RoundCollector("job-1", 2, 1, "gradient", frozenset({"owner-a", "owner-b"}))
    coordinator_app.extensions["round_registry"].open(collector)
    client = client_with(coordinator_app, credential)

    refusal = {"code": "bad_value", "column": "bmi"}
    path = "/jobs/job-1/rounds/2/refusals"
    posing = client.post(path, json={"data_owner": "owner-b", "attempt": 1, **refusal})
    assert_json_error(posing, 403, "may not speak for 'owner-b'")
    late = client.post(path, json={"data_owner": "owner-a", "attempt": 2, **refusal})
    assert_json_error(late, 409, "attempt 2 is not open")
    anonymous = coordinator_app.test_client().post(path, json={"data_owner": "owner-a", "attempt": 1, **refusal})
    assert_json_error(anonymous, 401, "credentials")
    assert collector.failures == {}
