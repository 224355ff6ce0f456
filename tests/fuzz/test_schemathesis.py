"""Fuzzing each service in process from its own OpenAPI description, with schemathesis.

Schemathesis reads a service's ``GET /openapi.json`` and generates requests for each operation
from it, valid and invalid ones (its ``positive`` and ``negative`` modes). An operation that
demands credentials is fuzzed three times over: with the credential it takes, with none, and with
another party's. Whatever arrives, a service must

* never answer with a 5xx (no crash, no traceback);
* answer every error with the JSON error body ``{"error": ..., "type": ...}``;
* answer only with the statuses, content types and bodies its description documents;
* refuse a protected operation to a caller without credentials (401) or of another role (401/403).

Random requests rarely get past the first checks of a handler, so each service first gets some
state (a data owner enrolled with a signed enrolment and an open job at the coordinator, a joined
job at the data owner, an ordinary and an extreme finished model at the model creator), and about
half of the generated path parameters and body fields are replaced by values that fit it: its
ids, key, spec, valid ciphertexts, a round's member set (the owner's own signed job key), the
model's features. Numbers come with extremes (past the float range too), which
JSON allows.

Each test is one operation in one mode, with a bounded number of examples from a fixed seed; the
module runs in well under a minute. The peers are never reachable (see ``NO_PEER``), so what a
request starts in the background fails at once, which is allowed: only the answers are checked.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig
from schemathesis.core.jsonschema import make_validator
from support import (
    DIABETES_FEATURES,
    DIABETES_LABEL,
    HTTP_METHODS,
    OWNER_COORDINATOR_TOKEN,
    OWNER_CREDENTIAL,
    SHIPPED,
    TOKENS,
    bearer,
    secrets_for,
)
from werkzeug.exceptions import HTTPException

from common.crypto.identity import IdentityKey
from common.crypto.packing import SlotLayout
from common.crypto.paillier import PrivateKey
from common.protocol.messages import Enrolment
from common.protocol.spec import JOB_ID_PATTERN, JobSpec
from common.protocol.wire import encode_ciphertexts
from common.service.auth import COORDINATOR, DATA_OWNER, ENROLMENT, MODEL_CREATOR, OPERATOR, USER

# A float overflow in numpy is a warning; the services run without warnings turned into errors, so
# neither are they here: what is checked is what a client gets (see ``strict_json``).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

SEED = 20250101
MAX_EXAMPLES = 30
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# A body valid by the document is never refused as malformed (400); refusals of what it asks for
# (an unknown job, a round in another state, data that cannot serve it) are not malformation.
ACCEPTING = {"expected-statuses": ["2XX", 401, 403, 404, 409, 413, 422, 502]}

AUTHORISED, ANONYMOUS, OTHER_ROLE = "authorised", "anonymous", "other-role"
UNKNOWN_TOKEN = "a-token-nobody-issued"
# Where the other parties are: plain HTTP to a host that is not loopback, which every party refuses
# at once (no connection, no retry), so no request leaves a long background call behind.
NO_PEER = "http://peer.invalid"

JOB_ID = "fuzz-job"
OWNER_NAME = "fuzz-owner"
# The data owner's operator reads its GET /status with this token.
OPERATOR_TOKEN = "fuzz-operator-token"
# The model creator's user API takes a bearer token, as its document says, once it has an API token.
USER_API_TOKEN = "fuzz-user-api-token"

# Numbers at and past the edges of a float: JSON puts no limit on a number, Python reads any
# integer exactly, and float arithmetic overflows to infinity.
EXTREME_NUMBERS = [0, -1, 2**31, 2**53 + 1, 2**64, 1e308, -1e308, 5e-324, 10**309, -(10**309)]
NUMBERS = st.one_of(st.sampled_from(EXTREME_NUMBERS), st.floats(allow_nan=False, allow_infinity=False), st.integers())


def fuzz_config() -> SchemathesisConfig:
    """Schemathesis' configuration: valid and invalid requests from a fixed seed.

    No security parameters of schemathesis' own (the modes decide the credentials); no coverage or
    stateful phase, to bound the run time.
    """
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "with-security-parameters": False,
            },
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
            "checks": {"positive_data_acceptance": ACCEPTING},
        }
    )


@dataclass
class Service:
    """A service under fuzzing.

    Its app, each role's bearer token, and strategies for values that fit its state, by path
    parameter or body field name.
    """

    app: Flask
    tokens: dict[str, str | None]
    mode: str
    path_values: dict[str, st.SearchStrategy] = field(default_factory=dict)
    body_values: dict[str, st.SearchStrategy] = field(default_factory=dict)

    def headers(self, operation: Mapping[str, Any]) -> dict[str, str]:
        """The Authorization header to send to ``operation`` in this mode."""
        roles = operation.get("x-roles", [])
        if self.mode == AUTHORISED:
            token = next((self.tokens[role] for role in roles if self.tokens.get(role)), None)
        elif self.mode == OTHER_ROLE:
            token = next((t for role, t in self.tokens.items() if t and role not in roles), UNKNOWN_TOKEN)
        else:
            token = None
        return bearer(token) if token else {}

    def routed(self, method: str, path: str) -> bool:
        """Whether a request reaches a view at all (a path no route matches is a 404 before any check)."""
        try:
            self.app.url_map.bind("localhost").match(unquote(path), method)
        except HTTPException:
            return False
        return True


SECRETS_OF = {
    "coordinator": ("ENROLMENT_SECRET", "MODEL_CREATOR_TOKEN", "COORDINATOR_TOKEN"),
    "data_owner": ("ENROLMENT_SECRET",),
    "model_creator": ("MODEL_CREATOR_TOKEN", "COORDINATOR_TOKEN"),
}


def secrets_of(service: str) -> dict[str, Any]:
    """The test secrets ``service`` is configured with (each party takes only its own).

    The model creator also gets an API token: without one its user API is open, while its document
    (generated from the views' marks) states the bearer credential the user API then demands.
    """
    api_token = {"API_TOKEN": USER_API_TOKEN} if service == "model_creator" else {}
    return {**secrets_for(*SECRETS_OF[service]), **api_token}


def document_of(service: str) -> dict[str, Any]:
    """The document a service generates from its messages and routes (at collection time)."""
    create_app = __import__(service, fromlist=["create_app"]).create_app
    with tempfile.TemporaryDirectory() as state:
        app = create_app({"TESTING": True, "STATE_DIR": state, **secrets_of(service)})
        return app.api_doc


def job_spec(key: PrivateKey, job_id: str = JOB_ID) -> JobSpec:
    """A spec the shipped data can serve, under ``key``."""
    return JobSpec(
        job_id=job_id,
        model="linear_regression",
        features=tuple(DIABETES_FEATURES),
        label=DIABETES_LABEL,
        data_frac_bits=32,
        weight_frac_bits=32,
        weight_bits=8,
        layout=SlotLayout.for_key(key.public_key.bits, 64 + 32 + 8 + 32, 1000),
        min_data_owners=1,
        key_fingerprint=key.public_key.fingerprint,
    )


def job_values(key: PrivateKey) -> dict[str, st.SearchStrategy]:
    """Body fields that fit a job under ``key``: its fingerprint, specs, the key, valid weights."""
    public_key = key.public_key
    spec = job_spec(key)
    weights = encode_ciphertexts([public_key.raw_encrypt(value) for value in range(spec.dimension)], public_key)
    return {
        "key_fingerprint": st.just(public_key.fingerprint),
        "spec": st.one_of(
            st.just(spec.model_dump(mode="json")),
            st.from_regex(JOB_ID_PATTERN, fullmatch=True).map(lambda i: job_spec(key, i).model_dump(mode="json")),
        ),
        "public_key": st.just(public_key.to_json()),
        "encrypted_weights": st.just(weights),
    }


def stop_background_work(app: Flask) -> None:
    """Cancel what the fuzzed requests queued (rounds, trainings), so the session ends promptly."""
    for extension in app.extensions.values():
        for worker in (extension, getattr(extension, "worker", None)):
            if hasattr(worker, "shutdown"):
                worker.shutdown()


@pytest.fixture
def coordinator_service(coordinator_app: Flask, small_key: PrivateKey, mode: str) -> Iterator[Service]:
    app = coordinator_app
    client = app.test_client()
    # The app is configured with TEST_ONLY_SMALL_KEYS (tests/conftest.py), for the 1024-bit job key.
    assert app.extensions["settings"].test_only_small_keys
    enrolment = Enrolment.signed(OWNER_NAME, NO_PEER, IdentityKey(Ed25519PrivateKey.generate()), time.time())
    enrolled = client.post(
        "/data_owners", json=enrolment.model_dump(mode="json"), headers=bearer(TOKENS["ENROLMENT_SECRET"])
    )
    assert enrolled.status_code == 201, enrolled.get_json()
    created = client.post(
        "/jobs",
        json={
            "spec": job_spec(small_key).model_dump(mode="json"),
            "public_key": small_key.public_key.to_json(),
            "callback_url": NO_PEER,
        },
        headers=bearer(TOKENS["MODEL_CREATOR_TOKEN"]),
    )
    assert created.status_code == 201, created.get_json()
    yield Service(
        app,
        {
            ENROLMENT: TOKENS["ENROLMENT_SECRET"],
            MODEL_CREATOR: TOKENS["MODEL_CREATOR_TOKEN"],
            DATA_OWNER: enrolled.get_json()["credential"],
        },
        mode,
        path_values={"job_id": st.just(JOB_ID)},
        body_values={**job_values(small_key), "data_owner": st.just(OWNER_NAME)},
    )
    stop_background_work(app)


@pytest.fixture
def data_owner_service(tmp_path: Path, small_key: PrivateKey, mode: str) -> Iterator[Service]:
    from data_owner import create_app

    app = create_app(
        {
            "TESTING": True,
            "STATE_DIR": str(tmp_path / "data_owner"),
            "NAME": OWNER_NAME,
            "DATA": str(SHIPPED / "owner_a.csv"),
            "COORDINATOR_URL": NO_PEER,
            "WORKER_PROCESSES": 1,
            # The job key is the session's 1024-bit one, which only this test-only policy accepts.
            "POLICY": {"test_only_small_keys": True},
            "OPERATOR_TOKEN": OPERATOR_TOKEN,
            **secrets_of("data_owner"),
        }
    )
    app.extensions["enrolment"].set(OWNER_CREDENTIAL, OWNER_COORDINATOR_TOKEN)
    joined = app.test_client().put(
        f"/jobs/{JOB_ID}",
        headers=bearer(OWNER_COORDINATOR_TOKEN),
        json={"spec": job_spec(small_key).model_dump(mode="json"), "public_key": small_key.public_key.to_json()},
    )
    assert joined.status_code == 200, joined.get_json()
    # A round's member set that fits: this owner alone, with the signed job key it joined with.
    member = joined.get_json()["member"]
    yield Service(
        app,
        {
            COORDINATOR: OWNER_COORDINATOR_TOKEN,
            OPERATOR: OPERATOR_TOKEN,
            MODEL_CREATOR: TOKENS["MODEL_CREATOR_TOKEN"],
        },
        mode,
        path_values={"job_id": st.just(JOB_ID)},
        body_values={**job_values(small_key), "members": st.just([member])},
    )
    stop_background_work(app)


@pytest.fixture
def model_creator_service(tmp_path: Path, mode: str) -> Iterator[Service]:
    from model_creator import create_app

    app = create_app(
        {
            "TESTING": True,
            "STATE_DIR": str(tmp_path / "model_creator"),
            "KEY_BITS": 1024, "TEST_ONLY_SMALL_KEYS": True,
            "COORDINATOR_URL": NO_PEER,
            "TEST_DATA": str(SHIPPED / "test.csv"),
            **secrets_of("model_creator"),
        }
    )
    names = ["intercept", *DIABETES_FEATURES]
    model_ids = []
    # An ordinary model and one at the edge of what an import accepts (|coefficient| <= 2**128).
    for coefficient in (0.5, 3e38):
        imported = app.test_client().post(
            "/models/import",
            json={
                "format": "federated_trainer.model/1",
                "model": "linear_regression",
                "features": DIABETES_FEATURES,
                "label": DIABETES_LABEL,
                "coefficients": {name: coefficient for name in names},
            },
            headers=bearer(USER_API_TOKEN),
        )
        assert imported.status_code == 201, imported.get_json()
        model_ids.append(imported.get_json()["model_id"])
    model_id = st.sampled_from(model_ids)
    yield Service(
        app,
        {
            COORDINATOR: TOKENS["COORDINATOR_TOKEN"],
            USER: USER_API_TOKEN,
            MODEL_CREATOR: TOKENS["MODEL_CREATOR_TOKEN"],
        },
        mode,
        path_values={"model_id": model_id},
        body_values={
            "model_id": model_id,
            "features": st.just(DIABETES_FEATURES),
            "label": st.just(DIABETES_LABEL),
            "coefficients": st.fixed_dictionaries({name: NUMBERS for name in names}),
            "rows": st.lists(
                st.fixed_dictionaries({name: NUMBERS for name in DIABETES_FEATURES}), min_size=1, max_size=3
            ),
        },
    )
    stop_background_work(app)


def body_validity(operation: Any) -> Any:
    """Whether a JSON body is valid by ``operation``'s document, as schemathesis validates it."""
    alternative = operation.get_body_for_media_type("application/json") if operation is not None else None
    if alternative is None:
        return lambda _: True
    return make_validator(alternative.optimized_schema, operation.schema.adapter.jsonschema_validator_cls).is_valid


def with_fitting_values(schema: Any, service: Service) -> Any:
    """Have about half of the generated path parameters and body fields fit the service's state."""

    def substitute(known: Mapping[str, st.SearchStrategy], value: Any) -> st.SearchStrategy:
        present = sorted(name for name in known if isinstance(value, dict) and name in value)
        if not present:
            return st.just(value)
        chosen = st.fixed_dictionaries({name: st.one_of(st.just(value[name]), known[name]) for name in present})
        return chosen.map(lambda replacement: {**value, **replacement})

    def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy:
        return substitute(service.path_values, path_parameters)

    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
        # A substitution never makes a body the document allows into one it rules out (the extreme
        # numbers, past a field's bounds): positive cases stay positive, negative ones are free.
        if not isinstance(body, dict):
            return st.just(body)
        valid = body_validity(context.operation)
        keep = (lambda _: True) if not valid(body) else valid
        return substitute(service.body_values, body).map(lambda new: new if keep(new) else body)

    schema.hook(flatmap_path_parameters)
    schema.hook(flatmap_body)
    return schema


@pytest.fixture
def coordinator_api(coordinator_service: Service) -> Any:
    return with_fitting_values(
        schemathesis.openapi.from_wsgi("/openapi.json", coordinator_service.app, config=fuzz_config()),
        coordinator_service,
    )


@pytest.fixture
def data_owner_api(data_owner_service: Service) -> Any:
    return with_fitting_values(
        schemathesis.openapi.from_wsgi("/openapi.json", data_owner_service.app, config=fuzz_config()),
        data_owner_service,
    )


@pytest.fixture
def model_creator_api(model_creator_service: Service) -> Any:
    return with_fitting_values(
        schemathesis.openapi.from_wsgi("/openapi.json", model_creator_service.app, config=fuzz_config()),
        model_creator_service,
    )


def exercise(case: Any, service: Service) -> None:
    """Send ``case`` as the mode says, then check the answer."""
    operation = case.operation.definition.raw
    response = case.call(headers=service.headers(operation))
    checks = CHECKS + ([positive_data_acceptance] if service.mode == AUTHORISED else [])
    answer = strict_json(response.content)
    if response.status_code == 502 and "502" in operation["responses"]:
        # An operation that asks a peer says so in its document; every peer is unreachable here
        # (NO_PEER), so its documented 502 is the right answer, not a crash.
        assert answer.get("type") == "UpstreamError" and NO_PEER in answer.get("error", ""), answer
        checks = [check for check in checks if check is not not_a_server_error]
    case.validate_response(response, checks=checks)
    if response.status_code >= 400:
        assert isinstance(answer.get("error"), str) and isinstance(answer.get("type"), str), answer
    protected = operation.get("security") == [{"bearerAuth": []}]
    if protected and service.mode != AUTHORISED and service.routed(case.method, case.formatted_path):
        refused = (401,) if service.mode == ANONYMOUS else (401, 403)
        assert response.status_code in refused, (case.method, case.formatted_path, response.status_code)


def strict_json(content: bytes) -> Any:
    """``content`` parsed as JSON by RFC 8259: no NaN or Infinity, which Python writes but JSON has not."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"the answer is not JSON: it holds {constant}: {content[:300]!r}")

    return json.loads(content, parse_constant=refuse)


def fuzz(schema: Any, method: str, path: str, service: Service) -> None:
    """Send valid and invalid requests for one operation and check every answer."""
    operation = schema[path][method]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @FUZZ
    @given(case=cases)
    def send(case: Any) -> None:
        exercise(case, service)

    send()


def operations_of(service: str) -> list[Any]:
    """(mode, method, path) of every operation the service documents.

    An operation that demands credentials is fuzzed in every mode, any other once (as the services
    are configured here, it takes none).
    """
    return [
        pytest.param(mode, method, path, id=f"{mode}-{method.upper()} {path}")
        for path, item in document_of(service)["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
        for mode in (
            [AUTHORISED, ANONYMOUS, OTHER_ROLE] if operation["security"] == [{"bearerAuth": []}] else [AUTHORISED]
        )
    ]


@pytest.mark.parametrize(("mode", "method", "path"), operations_of("coordinator"))
def test_coordinator(coordinator_api: Any, coordinator_service: Service, method: str, path: str) -> None:
    fuzz(coordinator_api, method, path, coordinator_service)


@pytest.mark.parametrize(("mode", "method", "path"), operations_of("data_owner"))
def test_data_owner(data_owner_api: Any, data_owner_service: Service, method: str, path: str) -> None:
    fuzz(data_owner_api, method, path, data_owner_service)


@pytest.mark.parametrize(("mode", "method", "path"), operations_of("model_creator"))
def test_model_creator(model_creator_api: Any, model_creator_service: Service, method: str, path: str) -> None:
    fuzz(model_creator_api, method, path, model_creator_service)
