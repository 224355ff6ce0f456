"""Each service's OpenAPI description: served, valid, and complete.

It is generated from the typed messages and the routes, served to anyone at ``GET /openapi.json``
(and as an interactive page at ``GET /docs``), is a valid OpenAPI 3 document, and describes exactly
the app's API routes and methods, each with its path parameters, the credentials its view demands,
and the JSON error body on every error status.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from support import HTTP_METHODS, SERVICES

FLASK_PARAMETER = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")


# The document and its pages are not operations of the API; nor is the party's dashboard page
# with its assets (common/service/pages.py), static files that call the API like any client.
DOCUMENTATION_ROUTES = re.compile(r"^/(openapi\.json$|docs(/|$))")
PAGE_ROUTES = re.compile(r"^/(assets/|$)")


@pytest.fixture(params=SERVICES)
def service(request: pytest.FixtureRequest) -> tuple[str, Flask]:
    """(name, app) of each service, built by the shared ``<name>_app`` fixture."""
    return request.param, request.getfixturevalue(f"{request.param}_app")


@pytest.fixture
def served(service: tuple[str, Flask]) -> dict[str, Any]:
    """The description as an anonymous client gets it."""
    _, app = service
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def openapi_path(rule: str) -> str:
    """A Flask rule (``/jobs/<job_id>/rounds/<int:round_number>``) as an OpenAPI path template."""
    return FLASK_PARAMETER.sub(r"{\1}", rule)


def routes(app: Flask) -> dict[tuple[str, str], Any]:
    """(OpenAPI path, lower-case method) → view function, for every route but static files and the docs."""
    found = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or DOCUMENTATION_ROUTES.match(rule.rule) or PAGE_ROUTES.match(rule.rule):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found[(openapi_path(rule.rule), method.lower())] = app.view_functions[rule.endpoint]
    return found


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(path, method) → (operation, the path item's parameters), for every documented operation."""
    return {
        (path, method): (operation, item.get("parameters", []))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def resolve(document: dict[str, Any], node: Any) -> Any:
    """``node`` with a local ``$ref`` followed (one level)."""
    if isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return target
    return node


def local_references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in local_references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in local_references(value)]
    return []


def validate_openapi(document: dict[str, Any]) -> None:
    """Validate against the OpenAPI specification's schema, with the best validator installed."""
    try:
        from openapi_spec_validator import validate
    except ImportError:
        pass
    else:
        validate(document)
        return
    try:
        import schemathesis
    except ImportError:
        return
    # Schemathesis checks the document against the OpenAPI 3.0/3.1 JSON Schema of the specification.
    schemathesis.openapi.from_dict(document).validate()


def test_served_without_credentials_as_documented(service: tuple[str, Flask], served: dict[str, Any]) -> None:
    _, app = service
    assert served == app.api_doc
    page = app.test_client().get("/docs/swagger")
    assert page.status_code == 200 and b"swagger" in page.data.lower()
    for url in {u for u in re.findall(rb'(?:src|href)="([^"]+)"', page.data)}:
        assert not url.startswith((b"http://", b"https://", b"//")), f"the page loads {url!r} from outside"


def test_is_a_valid_openapi_3_document(served: dict[str, Any]) -> None:
    assert served["openapi"].startswith("3.")
    assert {"title", "version"} <= set(served["info"])
    assert served["components"]["securitySchemes"]["bearerAuth"] == {
        **served["components"]["securitySchemes"]["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
    }
    error = served["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error", "type"]
    assert error["properties"] == {name: {**error["properties"][name], "type": "string"} for name in ("error", "type")}
    for reference in local_references(served):
        assert reference.startswith("#/"), reference
        resolve(served, {"$ref": reference})
    validate_openapi(served)


def test_documents_exactly_the_routes_of_the_app(service: tuple[str, Flask], served: dict[str, Any]) -> None:
    _, app = service
    assert set(operations(served)) == set(routes(app))


def test_the_dashboard_page_is_served_and_is_no_operation(service: tuple[str, Flask], served: dict[str, Any]) -> None:
    _, app = service
    assert not [path for path in served["paths"] if PAGE_ROUTES.match(path)]
    page_rules = {rule.rule for rule in app.url_map.iter_rules() if PAGE_ROUTES.match(rule.rule)}
    assert page_rules == {"/", "/assets/<path:filename>"}
    assert app.test_client().get("/").status_code == 200


def test_path_parameters_are_declared(served: dict[str, Any]) -> None:
    for (path, method), (operation, shared) in operations(served).items():
        declared = {
            parameter["name"]
            for parameter in map(lambda p: resolve(served, p), [*shared, *operation.get("parameters", [])])
            if parameter["in"] == "path"
        }
        assert declared == set(re.findall(r"{([^{}]+)}", path)), (method, path)


def test_security_is_what_the_views_demand(service: tuple[str, Flask], served: dict[str, Any]) -> None:
    """A view under ``@requires(roles)`` documents bearerAuth as mandatory and names the same roles."""
    _, app = service
    documented = operations(served)
    for key, view in routes(app).items():
        operation, _ = documented[key]
        assert "security" in operation, key
        roles = getattr(view, "required_roles", None)
        if roles:
            assert operation["security"] == [{"bearerAuth": []}], key
            assert sorted(operation["x-roles"]) == sorted(roles), key
        else:
            assert operation["security"] in ([], [{}, {"bearerAuth": []}]), key


def test_every_error_status_has_the_json_error_body(served: dict[str, Any]) -> None:
    for (path, method), (operation, _) in operations(served).items():
        statuses = set(operation["responses"])
        assert any(status.startswith("2") for status in statuses), (method, path)
        for status in statuses:
            response = resolve(served, operation["responses"][status])
            assert "description" in response
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
        if operation["security"] == [{"bearerAuth": []}]:
            assert "401" in statuses, (method, path)
        if "requestBody" in operation:
            assert {"400", "413"} <= statuses, (method, path)
        else:
            assert "413" not in statuses, (method, path)
