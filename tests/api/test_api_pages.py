"""Each party's dashboard page at GET / and its assets at GET /assets/<file> (common/service/pages.py).

Served from the built files of the ``dashboard`` package, public (a page holds no secret), with
their content types, a strict Content-Security-Policy, ``nosniff``, long caching for hashed
assets only, and a JSON 404 naming an asset that is not there. The API behind stays closed.
"""

from __future__ import annotations

import hashlib

import pytest
from api_support import assert_json_error
from flask import Flask

from common.service.pages import CONTENT_SECURITY_POLICY, register_pages
from dashboard import DIST, PARTIES

SERVICES = ["coordinator", "data_owner", "model_creator"]


@pytest.fixture(params=SERVICES)
def app(request: pytest.FixtureRequest) -> Flask:
    return request.getfixturevalue(f"{request.param}_app")


def assert_secure(response) -> None:
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_each_party_serves_its_own_page_without_credentials(app):
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.data == (DIST / f"{app.name}.html").read_bytes()
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["ETag"] == f'"{hashlib.sha256(response.data).hexdigest()}"'
    assert_secure(response)
    again = app.test_client().get("/", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_the_page_opens_nothing_of_the_api_and_docs_still_work(app):
    anonymous = app.test_client()
    assert anonymous.get("/openapi.json").status_code == 200
    assert anonymous.get("/docs/").status_code in (200, 308) or anonymous.get("/docs").status_code in (200, 308)
    protected = {"coordinator": "/jobs", "data_owner": "/audit", "model_creator": "/models"}[app.name]
    if app.name != "model_creator" or app.extensions["settings"].api_token:
        assert_json_error(anonymous.get(protected), 401, "missing or unknown credentials")


def test_every_built_asset_is_served_with_its_type_and_hashed_ones_are_cached_for_good(app):
    assets = sorted(path for path in (DIST / "assets").rglob("*") if path.is_file())
    assert assets, "the build has assets"
    for path in assets:
        name = path.relative_to(DIST / "assets").as_posix()
        response = app.test_client().get(f"/assets/{name}")
        assert response.status_code == 200, name
        assert response.data == path.read_bytes()
        expected = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                    ".svg": "image/svg+xml", ".png": "image/png", ".woff2": "font/woff2"}.get(path.suffix)
        if expected:
            assert response.headers["Content-Type"] == expected, name
        assert_secure(response)


def test_caching_is_forever_for_hashed_names_only(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "coordinator.html").write_text("<!doctype html><title>c</title>")
    (tmp_path / "assets" / "index-Dk3x9Qa_.js").write_text("export {};\n")
    (tmp_path / "assets" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    app = Flask("coordinator")
    register_pages(app, "coordinator", tmp_path)
    hashed = app.test_client().get("/assets/index-Dk3x9Qa_.js")
    assert hashed.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert set(hashed.headers["Cache-Control"].split(", ")) == {"public", "max-age=31536000", "immutable"}
    plain = app.test_client().get("/assets/logo.svg")
    assert plain.headers["Content-Type"] == "image/svg+xml" and plain.headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("name", ["missing-0a1b2c3d.js", "../coordinator.html", "..%2fcoordinator.html",
                                  "%2e%2e/%2e%2e/pyproject.toml""assets/", "x/../../data_owner.html"])
def test_an_unknown_asset_is_a_json_404_naming_it(coordinator_app, name):
    response = coordinator_app.test_client().get(f"/assets/{name}")
    assert_json_error(response, 404, "no dashboard asset")


def test_a_page_not_built_is_a_json_404_naming_it(tmp_path):
    app = Flask("data_owner")
    from common.service.app import register_error_handlers

    register_error_handlers(app)
    register_pages(app, "data_owner", tmp_path)
    body = assert_json_error(app.test_client().get("/"), 404, "the dashboard page data_owner.html is not built")
    assert str(tmp_path) not in body["error"], "an error names the input, never a server path"


def test_the_package_has_a_page_per_party():
    assert PARTIES == ("model_creator", "coordinator", "data_owner")
    for party in PARTIES:
        assert (DIST / f"{party}.html").is_file(), party
