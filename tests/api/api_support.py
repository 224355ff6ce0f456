"""Helpers shared by the API tests: job specs, patched payloads, ciphertext payloads, the JSON
error check, and a tiny stub peer that stands in for another party on a loopback port."""

from __future__ import annotations

import base64
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import (
    DIABETES_FEATURES,
    DIABETES_LABEL,
    OWNER_COORDINATOR_TOKEN,
    OWNER_CREDENTIAL,
    TOKENS,
    UNREACHABLE,
)

from common.crypto.bigint import to_fixed_bytes
from common.crypto.identity import IdentityKey
from common.crypto.masking import JobKeyPair
from common.crypto.packing import SlotLayout
from common.crypto.paillier import PrivateKey
from common.protocol.messages import MemberKey
from common.protocol.spec import JobSpec
from common.protocol.wire import encode_ciphertexts

# The encoding of the job specs these tests open over the diabetes columns.
DATA_FRAC_BITS = 32
WEIGHT_FRAC_BITS = 32
WEIGHT_BITS = 8
# What the model creator would choose: DATA_BITS + DATA_FRAC_BITS + weight bits + WEIGHT_FRAC_BITS.
VALUE_BITS = 64 + DATA_FRAC_BITS + WEIGHT_BITS + WEIGHT_FRAC_BITS

MISSING = object()
"""A patch value meaning: remove the field."""


def client_with(app, token: str | None):
    """A test client that presents ``token`` as its bearer credential on every request."""
    client = app.test_client()
    if token:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def as_model_creator(coordinator_app):
    """The coordinator, called by the model creator."""
    return client_with(coordinator_app, coordinator_app.extensions["settings"].model_creator_token)


def as_enrolling_owner(coordinator_app):
    """The coordinator, called with the enrolment secret (only POST /data_owners takes it)."""
    return client_with(coordinator_app, coordinator_app.extensions["settings"].enrolment_secret)


def as_coordinator(model_creator_app):
    """The model creator, called back by the coordinator."""
    return client_with(model_creator_app, model_creator_app.extensions["settings"].coordinator_token)


def enrolled(data_owner_app):
    """The data owner after its enrolment, called by the coordinator with the token issued for it."""
    data_owner_app.extensions["enrolment"].set(OWNER_CREDENTIAL, OWNER_COORDINATOR_TOKEN)
    return client_with(data_owner_app, OWNER_COORDINATOR_TOKEN)


def as_operator(data_owner_app):
    """The data owner, called by its own operator (GET /status) with the token kept in its state dir."""
    settings = data_owner_app.extensions["settings"]
    token = settings.operator_token or (settings.state_dir / "operator_token").read_text().strip()
    return client_with(data_owner_app, token)


def peer_member(directory: Path, name: str, key: PrivateKey, job_id: str) -> MemberKey:
    """Another owner's signed job key for ``job_id``, as its join answer carries it.

    The peer's identity key is kept under ``directory``/``name``, so one peer keeps its identity
    across jobs; each call makes a fresh job key.
    """
    identity = IdentityKey.load_or_create(directory / name / "identity_key.pem")
    return MemberKey.signed(name, identity, JobKeyPair.generate(), job_id, key.public_key.fingerprint)


def assert_refused(response, refusal: str) -> None:
    """A data owner's refusal: a 422 whose error is exactly the code (and job column), nothing more."""
    text = response.get_data(as_text=True)
    assert response.status_code == 422, f"expected 422, got {response.status_code}: {text}"
    assert response.get_json() == {"error": refusal, "type": "Refused"}, text


# Shared with the data owner's PUT /jobs/<id>: (dotted path in the body, value, status, fragment).
# A callable value is called with (key, other_key).
SPEC_CASES = [
    pytest.param("spec", MISSING, 400, "spec: required", id="spec-missing"),
    pytest.param("spec", [], 400, "spec: expected an object", id="spec-array"),
    pytest.param("spec", "linear_regression", 400, "spec: expected an object", id="spec-string"),
    pytest.param("spec.job_id", MISSING, 400, "spec.job_id", id="job-id-missing"),
    pytest.param("spec.job_id", 7, 400, "spec.job_id", id="job-id-int"),
    pytest.param("spec.job_id", "x" * 65, 400, "spec.job_id", id="job-id-too-long"),
    pytest.param("spec.model", MISSING, 400, "spec.model", id="model-missing"),
    pytest.param("spec.model", "svm", 400, "spec.model: unknown model 'svm'", id="model-unknown"),
    pytest.param("spec.model", ["linear_regression"], 400, "spec.model", id="model-list"),
    pytest.param("spec.features", MISSING, 400, "spec.features", id="features-missing"),
    pytest.param("spec.features", "age", 400, "spec.features", id="features-string"),
    pytest.param("spec.features", [], 400, "spec.features", id="features-empty"),
    pytest.param("spec.features", ["age", 3], 400, "spec.features", id="features-int-item"),
    pytest.param("spec.features", ["age", ""], 400, "spec.features", id="features-empty-name"),
    pytest.param("spec.features", ["age", "age"], 400, "spec.features: names must not repeat", id="features-repeat"),
    pytest.param("spec.label", MISSING, 400, "spec.label", id="label-missing"),
    pytest.param("spec.label", ["progression"], 400, "spec.label", id="label-list"),
    pytest.param("spec.label", "bmi", 422, "spec.label: 'bmi' is also listed as a feature", id="label-is-feature"),
    pytest.param("spec.data_frac_bits", True, 400, "spec.data_frac_bits", id="data-frac-bits-bool"),
    pytest.param("spec.data_frac_bits", "32", 400, "spec.data_frac_bits", id="data-frac-bits-string"),
    pytest.param("spec.data_frac_bits", 32.5, 400, "spec.data_frac_bits", id="data-frac-bits-fraction"),
    pytest.param("spec.data_frac_bits", 257, 400, "spec.data_frac_bits", id="data-frac-bits-too-big"),
    pytest.param("spec.weight_frac_bits", -1, 400, "spec.weight_frac_bits", id="weight-frac-bits-negative"),
    pytest.param("spec.weight_frac_bits", None, 400, "spec.weight_frac_bits", id="weight-frac-bits-null"),
    pytest.param("spec.weight_bits", 0, 400, "spec.weight_bits", id="weight-bits-zero"),
    pytest.param("spec.weight_bits", False, 400, "spec.weight_bits", id="weight-bits-bool"),
    pytest.param("spec.min_data_owners", 0, 400, "spec.min_data_owners", id="min-owners-zero"),
    pytest.param("spec.min_data_owners", True, 400, "spec.min_data_owners", id="min-owners-bool"),
    pytest.param("spec.min_data_owners", 5000, 422, "spec.min_data_owners: more than the layout can count",
                 id="min-owners-beyond-layout"),
    pytest.param("spec.layout", MISSING, 400, "spec.layout: required", id="layout-missing"),
    pytest.param("spec.layout", [136, 10, 6], 400, "spec.layout: expected an object", id="layout-list"),
    pytest.param("spec.layout.value_bits", True, 400, "spec.layout.value_bits", id="value-bits-bool"),
    pytest.param("spec.layout.value_bits", 0, 400, "spec.layout.value_bits", id="value-bits-zero"),
    pytest.param("spec.layout.count_bits", "10", 400, "spec.layout.count_bits", id="count-bits-string"),
    pytest.param("spec.layout.slots_per_ciphertext", MISSING, 400, "spec.layout.slots_per_ciphertext",
                 id="slots-missing"),
    pytest.param("spec.layout.slots_per_ciphertext", 7, 422, "spec.layout: the slots do not fit",
                 id="slots-beyond-key"),
    pytest.param("spec.key_fingerprint", MISSING, 400, "spec.key_fingerprint", id="fingerprint-missing"),
    pytest.param("spec.key_fingerprint", "00" * 32, 422, "spec.key_fingerprint", id="fingerprint-wrong"),
    pytest.param("spec.key_fingerprint", lambda k, o: o.public_key.fingerprint, 422, "spec.key_fingerprint",
                 id="fingerprint-of-other-key"),
    pytest.param("public_key", MISSING, 400, "public_key: required", id="key-missing"),
    pytest.param("public_key", "junk", 400, "public_key: expected an object", id="key-string"),
    pytest.param("public_key", lambda k, o: o.public_key.to_json(), 422, "spec.key_fingerprint",
                 id="key-other-than-spec"),
    pytest.param("public_key.n", MISSING, 400, "public_key.n: required",
                 id="key-n-missing"),
    pytest.param("public_key.n", 12345, 400, "public_key.n: expected a string",
                 id="key-n-int"),
    pytest.param("public_key.n", "not hex", 400, "public_key.n: String should match pattern", id="key-n-junk"),
    pytest.param("public_key.n", "ff", 422, "public_key.n: an odd modulus", id="key-n-too-small"),
    pytest.param("public_key.n", lambda k, o: format(int(k.public_key.n) + 1, "x"), 422, "public_key.n",
                 id="key-n-even"),
    pytest.param("public_key.fingerprint", "abc", 400, "public_key.fingerprint: String should match pattern",
                 id="key-fingerprint-junk"),
    pytest.param("public_key.fingerprint", lambda k, o: o.public_key.fingerprint, 422, "public_key.fingerprint: key fingerprint",
                 id="key-fingerprint-of-other-key"),
]


def make_spec(key: PrivateKey, job_id: str = "job-1", *, features: list[str] | None = None, label: str = DIABETES_LABEL,
              value_bits: int = VALUE_BITS, weight_bits: int = WEIGHT_BITS, min_data_owners: int = 1) -> JobSpec:
    """A valid job spec for ``key`` over the diabetes columns."""
    return JobSpec(
        job_id=job_id,
        model="linear_regression",
        features=tuple(features or DIABETES_FEATURES),
        label=label,
        data_frac_bits=DATA_FRAC_BITS,
        weight_frac_bits=WEIGHT_FRAC_BITS,
        weight_bits=weight_bits,
        layout=SlotLayout.for_key(key.public_key.bits, value_bits, 1000),
        min_data_owners=min_data_owners,
        key_fingerprint=key.public_key.fingerprint,
    )


def job_body(key: PrivateKey, spec: JobSpec | None = None, callback_url: str = UNREACHABLE) -> dict[str, Any]:
    """A valid ``POST /jobs`` body (the coordinator) or, without ``callback_url``, ``PUT /jobs/<id>``."""
    body = {"spec": (spec or make_spec(key)).model_dump(mode="json"), "public_key": key.public_key.to_json()}
    if callback_url is not None:
        body["callback_url"] = callback_url
    return body


def patched(payload: dict[str, Any], path: str, value: Any, key: PrivateKey, other_key: PrivateKey) -> dict[str, Any]:
    """A deep copy of ``payload`` with the dotted ``path`` set to ``value`` (removed for MISSING).

    A callable ``value`` is called with ``(key, other_key)`` first, for values that depend on a key.
    """
    if callable(value):
        value = value(key, other_key)
    result = copy.deepcopy(payload)
    *parents, name = path.split(".")
    target = result
    for parent in parents:
        target = target[parent]
    if value is MISSING:
        target.pop(name, None)
    else:
        target[name] = value
    return result


def encrypted(key: PrivateKey, values: list[int]) -> list[str]:
    """``values`` encrypted under ``key`` with fresh randomness, as they travel on the wire."""
    public_key = key.public_key
    return encode_ciphertexts([public_key.raw_encrypt(v) for v in values], public_key)


def raw_ciphertext(value: int, width: int) -> str:
    """Any integer as a wire ciphertext of ``width`` bytes, without any check."""
    return base64.b64encode(to_fixed_bytes(value, width)).decode("ascii")


# The ciphertext cases only the job's key or spec can rule out (the count, the width of n², the
# range and the gcd): no document states them, so they are a 422, the others (the document's own
# types and pattern) a 400.
JOB_KEY_CIPHERTEXT_CASES = {
    "one-too-few", "one-too-many", "one-byte-short", "one-byte-long", "zero", "n-squared", "above-n-squared",
    "last-one-zero", "shares-factor-p", "multiple-of-n",
}


def ciphertext_cases(field: str) -> list:
    """Bad ciphertext vectors for ``field``: (make, status) where make maps (key, a good vector) to
    (payload, fragment).

    The fragment is what the error must contain: the field path, down to the index. The status is
    422 for the cases in :data:`JOB_KEY_CIPHERTEXT_CASES`, else 400.
    """

    def width(key: PrivateKey) -> int:
        return key.public_key.ciphertext_bytes

    def at(good: list[str], index: int, item: Any) -> list[Any]:
        vector = list(good)
        vector[index] = item
        return vector

    cases: dict[str, Callable[[PrivateKey, list[str]], tuple[Any, str]]] = {
        "string-not-list": lambda k, g: (g[0], f"{field}: expected a list"),
        "object-not-list": lambda k, g: ({"0": g[0]}, f"{field}: expected a list"),
        "null": lambda k, g: (None, f"{field}: expected a list"),
        "empty": lambda k, g: ([], f"{field}: List should have at least 1 item"),
        "one-too-few": lambda k, g: (g[:-1], f"{field}: expected {len(g)} ciphertexts, got {len(g) - 1}"),
        "one-too-many": lambda k, g: ([*g, g[0]], f"{field}: expected {len(g)} ciphertexts, got {len(g) + 1}"),
        "integer-item": lambda k, g: (at(g, 0, 12345), f"{field}[0]: expected a string"),
        "not-base64": lambda k, g: (at(g, 1, "not base64!"), f"{field}[1]: String should match pattern"),
        # Base64 without its padding is ruled out by the document itself (the pattern).
        "base64-missing-padding": lambda k, g: (at(g, 0, g[0].rstrip("=")[:-1]),
                                                f"{field}[0]: String should match pattern"),
        "one-byte-short": lambda k, g: (
            at(g, 1, base64.b64encode(bytes(width(k) - 1)).decode()),
            f"{field}[1]: expected {width(k)} bytes, got {width(k) - 1}",
        ),
        "one-byte-long": lambda k, g: (
            at(g, 0, base64.b64encode(b"\x00" + base64.b64decode(g[0])).decode()),
            f"{field}[0]: expected {width(k)} bytes, got {width(k) + 1}",
        ),
        "zero": lambda k, g: (at(g, 0, raw_ciphertext(0, width(k))), f"{field}[0]: ciphertext is not in the range"),
        "n-squared": lambda k, g: (
            at(g, 0, raw_ciphertext(int(k.public_key.nsquare), width(k))),
            f"{field}[0]: ciphertext is not in the range",
        ),
        "above-n-squared": lambda k, g: (
            at(g, 0, raw_ciphertext(256 ** width(k) - 1, width(k))),
            f"{field}[0]: ciphertext is not in the range",
        ),
        "last-one-zero": lambda k, g: (
            at(g, len(g) - 1, raw_ciphertext(0, width(k))),
            f"{field}[{len(g) - 1}]: ciphertext is not in the range",
        ),
        "shares-factor-p": lambda k, g: (
            at(g, 0, raw_ciphertext(int(k.p), width(k))), f"{field}[0]: ciphertext shares a factor with n"
        ),
        "multiple-of-n": lambda k, g: (
            at(g, 1, raw_ciphertext(int(k.public_key.n) * 7, width(k))),
            f"{field}[1]: ciphertext shares a factor with n",
        ),
    }
    assert JOB_KEY_CIPHERTEXT_CASES <= cases.keys()
    return [
        pytest.param(make, 422 if name in JOB_KEY_CIPHERTEXT_CASES else 400, id=name) for name, make in cases.items()
    ]


def assert_json_error(response, status: int, fragment: str) -> dict[str, Any]:
    """The response is ``status`` with a JSON body ``{"error": ..., "type": ...}`` containing ``fragment``."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {text}"
    assert response.mimetype == "application/json", text
    assert "Traceback" not in text and "<html" not in text.lower(), text
    body = response.get_json()
    assert isinstance(body, dict) and set(body) == {"error", "type"}, body
    assert isinstance(body["error"], str) and isinstance(body["type"], str), body
    assert fragment in body["error"], f"{fragment!r} not in {body['error']!r}"
    return body


@dataclass(frozen=True)
class Recorded:
    """One request a stub peer received."""

    method: str
    path: str
    body: Any
    authorization: str | None = None


class StubPeer:
    """A tiny HTTP peer on a free loopback port that records what it is sent.

    It answers ``200 {"status": "ok"}`` unless ``answer(method, path, body)`` returns a
    ``(status, body)`` pair. HTTP/1.0, so every connection closes after its answer.
    """

    def __init__(self, answer: Callable[[str, str, Any], tuple[int, Any] | None] | None = None) -> None:
        self.requests: list[Recorded] = []
        self._answer = answer
        self._changed = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, reply = stub._reply(self.command, self.path, json.loads(raw) if raw else None,
                                            self.headers.get("Authorization"))
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="stub-peer",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _reply(self, method: str, path: str, body: Any, authorization: str | None) -> tuple[int, Any]:
        answer = self._answer(method, path, body) if self._answer else None
        with self._changed:
            self.requests.append(Recorded(method, path, body, authorization))
            self._changed.notify_all()
        return answer or (200, {"status": "ok"})

    def wait_for(self, predicate: Callable[[Recorded], bool], count: int = 1, timeout: float = 30.0) -> list[Recorded]:
        """The first ``count`` recorded requests matching ``predicate``, waiting for them if need be."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: sum(map(predicate, self.requests)) >= count, timeout)
            matched = [r for r in self.requests if predicate(r)]
        assert arrived, f"the stub got {len(matched)} of {count} expected requests; it got {self.requests}"
        return matched[:count]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def restart_config(app, *names: str) -> dict[str, Any]:
    """The test configuration ``app`` was built with, to open another app on the same state (a restart)."""
    settings = app.extensions.get("settings")
    if settings is not None:
        wanted = ("TESTING", "STATE_DIR", "REQUEST_TIMEOUT", *TOKENS, *names)
        return {name: getattr(settings, name.lower()) for name in wanted if name.lower() in type(settings).model_fields}
    return {name: app.config[name] for name in ("TESTING", "STATE_DIR", "REQUEST_TIMEOUT", *TOKENS, *names)
            if name in app.config}
