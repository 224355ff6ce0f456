"""Each party's dashboard page at ``GET /``, with its assets at ``GET /assets/<file>``.

The pages are the built files of the :mod:`dashboard` package; they are static and public (they
hold no secret) and get every datum from the party's JSON API, with the bearer token the user
types in, so serving them opens nothing: an inter-party endpoint still needs its credential.
They are not operations of the API and are left out of its document (``GET /openapi.json``).

Every answer carries a strict Content-Security-Policy: everything from the party itself
(``default-src 'self'``), nothing from any other origin, no inline or evaluated script, no
framing. Style attributes are allowed (``style-src-attr``), since the compiled components set
some; they cannot load anything, as every fetch is limited to the party itself. With
``X-Content-Type-Options: nosniff`` a browser takes each file for its declared type only.

Caching: an asset whose name carries a content hash (``index-3f9a1b2c.js``, as the build names
them) never changes under its name, so it is cached for a year, immutable; the HTML entry and any
other file are revalidated at each load (``no-cache``), so a new build is seen at once.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.security import safe_join

from common.protocol.errors import NotFound
from dashboard import DIST

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)

#: The content type of each kind of file the build makes; any other is ``application/octet-stream``.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".txt": "text/plain; charset=utf-8",
}

#: A built asset's name with its content hash: ``<name>-<8 or more of [A-Za-z0-9_-]>.<extension>``.
HASHED_NAME = re.compile(r"-[A-Za-z0-9_-]{8,}\.[A-Za-z0-9]+$")

ONE_YEAR = 365 * 24 * 3600


def register_pages(app: Flask, party: str, dist: Path = DIST) -> None:
    """Serve ``party``'s page at ``GET /`` and the build's assets at ``GET /assets/<file>``.

    A missing page or asset is a JSON 404 naming it, as every error of the party.
    """

    def page() -> Response:
        entry = dist / f"{party}.html"
        if not entry.is_file():
            raise NotFound(f"the dashboard page {entry.name} is not built (the dashboard package has no such file)")
        return _static(entry, cache_forever=False)

    def asset(filename: str) -> Response:
        found = safe_join(str(dist / "assets"), filename)
        if found is None or not Path(found).is_file():
            raise NotFound(f"no dashboard asset {filename!r}")
        return _static(Path(found), cache_forever=HASHED_NAME.search(filename) is not None)

    app.add_url_rule("/", "dashboard_page", page, methods=["GET"])
    app.add_url_rule("/assets/<path:filename>", "dashboard_asset", asset, methods=["GET"])


def _static(path: Path, cache_forever: bool) -> Response:
    """A built file with its content type, caching and security headers; 304 when the browser has it.

    The files are small and read whole (no file handle outlives the request); the ETag is their
    SHA-256, so a rebuilt file is never taken for the one a browser holds.
    """
    content = path.read_bytes()
    response = Response(content, content_type=CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"))
    response.set_etag(hashlib.sha256(content).hexdigest())
    if cache_forever:
        response.cache_control.max_age = ONE_YEAR
        response.cache_control.immutable = True
        response.cache_control.public = True
    else:
        response.cache_control.no_cache = True
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.make_conditional(request)
    return response
