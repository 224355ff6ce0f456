"""Support of the browser tests.

Debian's Chromium driven by Playwright, a page with every API call it makes recorded, keyboard
navigation, screenshots, and number searches in a page's DOM.

Chromium is Debian's package at ``/usr/bin/chromium`` (``apt-get install chromium``; Playwright's
own browser download is never used). Where it is missing the browser tests skip, naming what to
install, unless ``FT_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from support import CHECKOUT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Where the screenshots go: var/screenshots (ignored by git), so that a test run leaves the checkout
# as it was; FT_DASHBOARD_SCREENSHOTS=docs/screenshots refreshes the ones the README shows.
SCREENSHOTS = Path(os.environ.get("FT_DASHBOARD_SCREENSHOTS", CHECKOUT / "var" / "screenshots"))
# How long a page may take to show what a test waits for, in milliseconds.
WAIT_MS = 60_000


def chromium_missing() -> None:
    """Skip (or, with ``FT_REQUIRE_BROWSER=1``, fail) when Debian's Chromium is not installed."""
    if CHROMIUM.exists():
        return
    reason = (
        f"Debian's Chromium is not installed at {CHROMIUM}: install the package 'chromium'"
        " (apt-get install chromium; ./run_tests.sh does it when run as root)"
    )
    if os.environ.get("FT_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def operations(openapi: dict[str, Any]) -> list[tuple[str, re.Pattern[str]]]:
    """Every (method, path pattern) an OpenAPI document describes; ``{name}`` matches one segment."""
    found = []
    for template, item in openapi["paths"].items():
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
        for method in item:
            if method in {"get", "put", "post", "delete", "patch"}:
                found.append((method.upper(), pattern))
    return found


class Dashboard:
    """One party's page in its own browser context, with every call it makes to its party recorded.

    The page itself (``/``) and its assets (``/assets/...``) are not operations of the API; every
    other request is, and :meth:`assert_documented` checks it against the party's ``/openapi.json``.
    """

    def __init__(self, browser: Any, url: str, viewport: dict[str, int] = DESKTOP) -> None:
        self.url = url
        self.context = browser.new_context(viewport=viewport, accept_downloads=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.calls: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        self.page.on("request", self._record)
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def _record(self, request: Any) -> None:
        parts = urlsplit(request.url)
        if f"{parts.scheme}://{parts.netloc}" != self.url:
            return
        if parts.path == "/" or parts.path.startswith("/assets/"):
            return
        self.calls.append((request.method, parts.path))

    def open(self) -> Any:
        self.page.goto(self.url + "/")
        return self.page

    def sign_in(self, token: str) -> None:
        """Type the token into the login field, as a user does."""
        self.page.get_by_label(re.compile("token$", re.IGNORECASE)).fill(token)
        self.page.get_by_role("button", name="Use token").click()

    def assert_documented(self) -> None:
        """Every call the page made is an operation of the party's ``/openapi.json``; no script error."""
        assert not self.page_errors, f"script errors on {self.url}: {self.page_errors}"
        assert self.calls, f"the page at {self.url} made no API call"
        document = requests.get(f"{self.url}/openapi.json", timeout=30).json()
        described = operations(document)
        undocumented = sorted(
            {
                (method, path)
                for method, path in self.calls
                if not any(method == m and pattern.match(path) for m, pattern in described)
            }
        )
        assert not undocumented, f"calls of the page at {self.url} not in its /openapi.json: {undocumented}"

    def screenshots(self, name: str, phone_view: str) -> None:
        """Screenshots of the page, on a desktop and on a phone.

        ``<name>-desktop.png`` (in :data:`SCREENSHOTS`) is the whole page 1280 px wide, ``<name>-phone.png``
        a 390×844 phone screen scrolled to ``phone_view`` (a selector).

        At phone width nothing may stick out sideways: wide tables scroll inside their panels.
        """
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.set_viewport_size(DESKTOP)
        self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
        self.page.set_viewport_size(PHONE)
        self.page.wait_for_timeout(300)
        width = self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{name} is {width} px wide at phone width"
        self.page.locator(phone_view).evaluate("(element) => element.scrollIntoView()")
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"))
        self.page.set_viewport_size(DESKTOP)

    def close(self) -> None:
        self.context.close()


@contextmanager
def dashboard(browser: Any, url: str) -> Iterator[Dashboard]:
    """A :class:`Dashboard` on ``url``, its browser context closed afterwards."""
    opened = Dashboard(browser, url)
    try:
        yield opened
    finally:
        opened.close()


def tab_to(page: Any, selector: str, limit: int = 120) -> None:
    """Press Tab until the focused element matches ``selector`` (fails if it never does)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement !== null && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{limit} presses of Tab never reached {selector}")


def choose_by_keyboard(page: Any, value: str, limit: int = 40) -> None:
    """In the focused ``<select>``, press the arrow keys until ``value`` is chosen."""
    for key in ("Home", *["ArrowDown"] * limit):
        page.keyboard.press(key)
        if page.evaluate("document.activeElement.value") == value:
            return
    raise AssertionError(f"the focused select has no option {value!r}")


# Numbers as they stand in text: not part of a word, a hexadecimal string or a longer number.
NUMBER_TOKEN = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")


def number_tokens(text: str) -> set[str]:
    """Every number written in ``text``."""
    return set(NUMBER_TOKEN.findall(text))


def significant_digits(text: str) -> int:
    """How many significant digits a number's text carries ("104.0" three, "0.0381" three)."""
    mantissa = re.sub(r"[eE].*$", "", text).lstrip("-")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0")
    return len(mantissa.replace(".", "").lstrip("0"))


# Everything a page says: its text, and every attribute but the drawing coordinates of its
# charts (pixel positions, which are not values of the data).
PAGE_TEXT = """() => {
  const geometry = new Set(["d", "x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "transform", "viewBox"]);
  const parts = [document.title, document.body.innerText, document.body.textContent];
  for (const element of document.querySelectorAll("*")) {
    for (const attribute of element.attributes) if (!geometry.has(attribute.name)) parts.push(attribute.value);
  }
  for (const field of document.querySelectorAll("input, select, textarea")) parts.push(field.value);
  return parts.join("\\n");
}"""


def page_text(page: Any) -> str:
    """What ``page`` shows and holds in its DOM, in text and attributes (see :data:`PAGE_TEXT`)."""
    text: str = page.evaluate(PAGE_TEXT)
    return text


def distinctive_texts(value: float) -> set[str]:
    """How a page could write ``value``: in full and to 4, 5 and 6 significant digits.

    Only texts of at least 4 significant digits: a shorter one also stands for too many other things.
    """
    texts = {repr(value), str(value), f"{value:.6g}", f"{value:.5g}", f"{value:.4g}"}
    if float(value).is_integer():
        texts.add(str(int(value)))
    return {text for text in texts if significant_digits(text) >= 4}


def plaintexts_in(text: str, secrets: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (secret's text, what it is) pairs written as a number in ``text``."""
    tokens = number_tokens(text)
    return [(written, what) for written, what in secrets if written in tokens]


def csv_numbers(path: Path) -> list[float]:
    """Every numeric cell of a CSV (the data owners' rows)."""
    values = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        for cell in line.split(","):
            try:
                values.append(float(cell))
            except ValueError:
                continue
    return values


def json_lines(path: Path) -> list[dict[str, Any]]:
    """A traffic log's complete records (a last line still being written is left out)."""
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
