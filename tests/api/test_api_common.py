"""What every service does the same way: GET /health, a JSON error (never HTML, never a
traceback) for an unknown route, a wrong method, an oversized body and a body that is not a
JSON object, and 401/403 for calls without the right credentials."""

from __future__ import annotations

import pytest
from api_support import (
    as_coordinator,
    as_enrolling_owner,
    as_model_creator,
    assert_json_error,
    client_with,
    enrolled,
)
from support import SERVICES

# The shared fixture that builds each service's app.
SERVICE_APPS = [f"{name}_app" for name in SERVICES]

# One endpoint per service that reads a JSON body before anything else.
BODY_ENDPOINTS = {
    "coordinator_app": ("POST", "/data_owners"),
    "data_owner_app": ("PUT", "/jobs/job-1"),
    "model_creator_app": ("POST", "/model"),
}


# The client each body endpoint accepts: the caller that service expects there.
AUTHORIZED = {
    "coordinator_app": as_enrolling_owner,
    "data_owner_app": enrolled,
    "model_creator_app": lambda app: app.test_client(),
}


@pytest.fixture(params=SERVICE_APPS)
def service(request):
    """(fixture name, app) for each of the three services."""
    return request.param, request.getfixturevalue(request.param)


def body_client(service):
    name, app = service
    return AUTHORIZED[name](app)


def test_health(service):
    _, app = service
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_unknown_route_is_a_json_404(service):
    _, app = service
    assert_json_error(app.test_client().get("/no/such/route"), 404, "")


def test_wrong_method_is_a_json_405_that_says_what_is_allowed(service):
    _, app = service
    response = app.test_client().delete("/health")
    assert_json_error(response, 405, "")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}


def test_oversized_body_is_a_json_413(service):
    name, app = service
    app.config["MAX_CONTENT_LENGTH"] = 1024
    method, path = BODY_ENDPOINTS[name]
    response = body_client(service).open(path, method=method, data=b"{" + b" " * 4096 + b"}",
                                         content_type="application/json")
    assert_json_error(response, 413, "")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        pytest.param(b"{", "body: malformed JSON", id="truncated-object"),
        pytest.param(b"{'name': 'x'}", "body: malformed JSON", id="single-quotes"),
        pytest.param(b"not json at all", "body: malformed JSON", id="plain-text"),
        pytest.param(b'{"a": 1} trailing', "body: malformed JSON", id="trailing-garbage"),
        pytest.param(b"\xc3\x28", "body: malformed JSON", id="invalid-utf8"),
        pytest.param(b"[]", "body: expected a JSON object", id="array"),
        pytest.param(b'[{"name": "x"}]', "body: expected a JSON object", id="array-of-object"),
        pytest.param(b'"text"', "body: expected a JSON object", id="string"),
        pytest.param(b"42", "body: expected a JSON object", id="number"),
        pytest.param(b"null", "body: expected a JSON object", id="null"),
        pytest.param(b"true", "body: expected a JSON object", id="bool"),
    ],
)
def test_body_that_is_not_a_json_object(service, raw, fragment):
    name, _ = service
    method, path = BODY_ENDPOINTS[name]
    response = body_client(service).open(path, method=method, data=raw, content_type="application/json")
    assert_json_error(response, 400, fragment)


def test_deeply_nested_json_is_a_400_not_a_500(service):
    """A body nested deeper than the JSON parser's recursion limit is a bad request like any other.

    ``json.loads`` raises RecursionError (not a ValueError) on it; it must not become a 500.
    """
    name, _ = service
    method, path = BODY_ENDPOINTS[name]
    depth = 100_000
    response = body_client(service).open(path, method=method, data=b"[" * depth + b"]" * depth,
                                         content_type="application/json")
    assert_json_error(response, 400, "body")


# -- credentials ---------------------------------------------------------------------------------

# (service, method, path, who calls, expected status). "nobody" sends no header, "stranger" an
# unknown token; the others are the roles of the federation.
AUTH_CASES = [
    *(pytest.param("coordinator_app", method, path, caller, status, id=f"coordinator-{method}-{path}-{caller}")
      for method, path, right in [
          ("POST", "/data_owners", "enrolment"),
          ("GET", "/data_owners", "model_creator"),
          ("POST", "/jobs", "model_creator"),
          ("GET", "/jobs/job-1", "model_creator"),
          ("POST", "/jobs/job-1/rounds", "model_creator"),
          ("POST", "/jobs/job-1/rounds/0/contributions", "data_owner"),
          ("POST", "/jobs/job-1/finish", "model_creator"),
      ]
      # The coordinator token is what the coordinator presents to others; it identifies nobody here.
      for caller, status in [("nobody", 401), ("stranger", 401), ("coordinator", 401),
                             *((role, 403) for role in ("enrolment", "model_creator") if role != right)]),
    *(pytest.param("data_owner_app", method, "/jobs/job-1" + suffix, caller, 401,
                   id=f"data-owner-{method}-{suffix or 'job'}-{caller}")
      for method, suffix in [("PUT", ""), ("POST", "/rounds"), ("DELETE", "")]
      for caller in ("nobody", "stranger", "enrolment", "model_creator", "coordinator")),
    *(pytest.param("model_creator_app", "POST", path, caller, 401, id=f"model-creator-{path}-{caller}")
      for path in ("/jobs/job-1/aggregates", "/jobs/job-1/failure")
      for caller in ("nobody", "stranger", "enrolment", "model_creator")),
]


def token_of(app, caller: str) -> str | None:
    def secret(name: str) -> str:
        """The app's secret ``name`` from its typed settings (or, not yet ported, its config), else a dummy."""
        settings = app.extensions.get("settings")
        return getattr(settings, name, None) or app.config.get(name.upper()) or "x"

    return {"nobody": None, "stranger": "not-a-token-anybody-issued",
            "enrolment": secret("enrolment_secret"),
            "model_creator": secret("model_creator_token"),
            "coordinator": secret("coordinator_token")}[caller]


@pytest.mark.parametrize(("service_name", "method", "path", "caller", "status"), AUTH_CASES)
def test_calls_without_the_right_credentials(request, service_name, method, path, caller, status):
    """A data owner knows only the token the coordinator was issued for it: the federation's shared
    secrets mean nothing to it; the model creator's callbacks take only the coordinator token."""
    app = request.getfixturevalue(service_name)
    if service_name == "data_owner_app":
        enrolled(app)
    response = client_with(app, token_of(app, caller)).open(path, method=method, json={})
    fragment = "credentials" if status == 401 else "may not call"
    assert_json_error(response, status, fragment)


def test_data_owner_before_enrolment_accepts_no_token(data_owner_app):
    for token in (None, "", "anything", data_owner_app.config.get("COORDINATOR_TOKEN")):
        response = client_with(data_owner_app, token).put("/jobs/job-1", json={})
        assert_json_error(response, 401, "credentials")


def test_right_credentials_reach_the_endpoint(coordinator_app, model_creator_app, data_owner_app):
    """The same calls with the right caller get past authentication (to a 4xx about the body or job)."""
    assert as_enrolling_owner(coordinator_app).post("/data_owners", json={}).status_code == 400
    assert as_model_creator(coordinator_app).get("/jobs/job-1").status_code == 404
    assert as_coordinator(model_creator_app).post("/jobs/job-1/failure", json={}).status_code == 400
    assert enrolled(data_owner_app).put("/jobs/job-1", json={}).status_code == 400
