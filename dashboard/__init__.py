"""The built dashboard pages, one per party, served by each party at ``GET /``.

The pages are compiled from the Svelte sources in ``ui/`` into :data:`DIST`: one HTML entry per
party (``model_creator.html``, ``coordinator.html``, ``data_owner.html``) and their assets under
``assets/`` (file names carrying a content hash). They are static and public: they hold no secret,
and every datum they show comes from the party's JSON API, called with the bearer token the user
types in. This package holds the built files only, as package data, so that an installed copy
serves them as a checkout does (:mod:`common.service.pages`).
"""

from __future__ import annotations

from pathlib import Path

#: Where the built pages are.
DIST = Path(__file__).resolve().parent / "dist"

#: The parties that have a page, by the name of their Flask app; each page is ``DIST / f"{party}.html"``.
PARTIES = ("model_creator", "coordinator", "data_owner")
