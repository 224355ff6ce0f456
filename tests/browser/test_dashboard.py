"""The three dashboards in a real browser against a real federation.

Each test opens a party's page at ``/`` as a user would, signs in through its login field, acts
through real buttons, fields and keys, and checks what the page shows against the party's API,
its traffic log or what it must never show; every call a page makes is checked against the
party's ``/openapi.json``, and each page is photographed at 1280×800 and at phone width
(in ``var/screenshots``; the README shows copies in ``docs/screenshots``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from browser_support import (
    Dashboard,
    choose_by_keyboard,
    csv_numbers,
    dashboard,
    distinctive_texts,
    json_lines,
    page_text,
    plaintexts_in,
    tab_to,
)
from conftest import PRIVATE_OWNER, Federation
from support import SHIPPED, SHIPPED_OWNER_NAMES, SHIPPED_OWNERS

pytestmark = pytest.mark.e2e


def job_row(page: Any, model_id: str) -> Any:
    return page.locator(f'#jobs tr[data-model-id="{model_id}"]')


def newest_model_id(federation: Federation, known: set[str]) -> str:
    """The model a page has just started: the one the API lists that was not there before."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        fresh = {m["model_id"] for m in federation.api("GET", "/models").json()["models"]} - known
        if fresh:
            (model_id,) = fresh
            return model_id
        time.sleep(0.1)
    raise AssertionError("the page started no job")


def known_models(federation: Federation) -> set[str]:
    return {m["model_id"] for m in federation.api("GET", "/models").json()["models"]}


def signed_in_model_creator(browser: Any, federation: Federation) -> Dashboard:
    """The model creator's page: refused without the API token, then signed in with it."""
    opened = Dashboard(browser, federation.model_creator)
    page = opened.open()
    page.get_by_text("The service refused the call").wait_for()
    opened.sign_in(federation.api_token)
    page.locator("text=4 of 4 data owners online").wait_for()
    return opened


def test_model_creator_page_trains_a_job_from_the_form(browser: Any, federation: Federation) -> None:
    opened = signed_in_model_creator(browser, federation)
    page = opened.page
    try:
        before = known_models(federation)
        page.get_by_label("Name").fill("from the form")
        for feature in ("age", "bmi", "bp", "s5"):
            page.get_by_role("checkbox", name=re.compile(rf"^{feature} ")).check()
        page.get_by_label("Label").select_option("progression")
        page.get_by_label("Optimiser").select_option("gd")
        # Enough rounds for the page's polls (a second apart) to see the chart grow more than once:
        # a round of this job takes tens of milliseconds.
        page.get_by_label("Learning rate").fill("0.1")
        page.get_by_label("Most rounds").fill("150")
        page.get_by_label("Standardise features").select_option("yes")
        page.get_by_role("button", name="Start job").click()
        model_id = newest_model_id(federation, before)
        page.get_by_text(f"Started model {model_id}").wait_for()

        # Live: the detail's progress and the chart move while the job runs, until it has finished.
        progress_seen, points_seen = [], []
        detail = page.locator(f'#job-detail[data-model-id="{model_id}"]')
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = detail.locator("#detail-status").text_content()
            progress_seen.append(detail.locator("#detail-progress").text_content())
            chart = detail.locator("figure:has(#chart-gradient-caption) svg")
            if chart.count():
                points_seen.append(int(chart.first.get_attribute("data-points")))
            if status == "finished":
                break
            page.wait_for_timeout(150)
        model = federation.model(model_id)
        assert model["status"] == "finished", model
        assert any(re.fullmatch(r"round \d+ of \d+, about .+ left", text or "") for text in progress_seen), (
            progress_seen
        )
        gradient_rounds = sum(
            1 for entry in model["history"] if entry["gradient_norm"] is not None and entry["kind"] != "statistics"
        )
        assert len({n for n in points_seen if 0 < n < gradient_rounds}) >= 2, (points_seen, gradient_rounds)
        page.locator(f'figure:has(#chart-gradient-caption) svg[data-points="{gradient_rounds}"]').wait_for()
        assert "(log scale)" in page.locator("#chart-gradient-caption").text_content()
        row = job_row(page, model_id)
        row.locator("[data-status]", has_text="finished").wait_for()
        assert row.locator("[data-progress]").text_content() == f"round {model['round']} of {model['expected_rounds']}"

        # The coefficients shown are the API's, to the last bit.
        page.locator("#coefficients").wait_for()
        shown = {
            cell.get_attribute("data-term"): float(cell.text_content())
            for cell in page.locator("#coefficients td[data-term]").all()
        }
        assert shown == model["coefficients"]

        # Who took part in each round; the predictions on the test data; the export.
        assert page.locator("#rounds tbody tr").count() == len(model["history"])
        for entry, cells in zip(model["history"], page.locator("#rounds tbody tr").all(), strict=True):
            assert cells.locator("td").nth(2).text_content() == ", ".join(entry["data_owners"])
        prediction = federation.api("GET", "/prediction", params={"model_id": model_id}).json()
        page.locator("#predictions tbody tr").nth(prediction["rows"] - 1).wait_for()
        predicted = [float(cell.text_content()) for cell in page.locator("#predictions tbody tr td:nth-child(2)").all()]
        assert predicted == pytest.approx(prediction["predictions"], rel=1e-5)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download the model as JSON").click()
        exported = json.loads(Path(download.value.path()).read_text())
        assert exported == federation.api("GET", f"/model/{model_id}/export").json()

        opened.screenshots("model_creator", "#job-detail")
        opened.assert_documented()
    finally:
        opened.close()


def test_model_creator_page_cancels_a_job(browser: Any, federation: Federation) -> None:
    opened = signed_in_model_creator(browser, federation)
    page = opened.page
    try:
        before = known_models(federation)
        page.get_by_label("Name").fill("to cancel")
        page.get_by_role("checkbox", name=re.compile(r"^age ")).check()
        page.get_by_label("Label").select_option("progression")
        page.get_by_label("Optimiser").select_option("gd")
        page.get_by_label("Most rounds").fill("5000")
        page.get_by_label("Standardise features").select_option("yes")
        page.get_by_role("button", name="Start job").click()
        model_id = newest_model_id(federation, before)
        row = job_row(page, model_id)
        row.locator("[data-progress]", has_text=re.compile(r"^round ([2-9]|\d\d+) of 5001")).wait_for()
        row.get_by_role("button", name="Cancel to cancel").click()
        row.locator("[data-status]", has_text="cancelled").wait_for()
        assert federation.wait_ended(model_id)["status"] == "cancelled"
        assert row.get_by_role("button", name="Cancel to cancel").count() == 0
        opened.assert_documented()
    finally:
        opened.close()


def test_model_creator_form_shows_the_apis_validation_message(browser: Any, federation: Federation) -> None:
    opened = signed_in_model_creator(browser, federation)
    page = opened.page
    try:
        before = known_models(federation)
        # Only owner_c publishes 'clinic': three owners with every column cannot be found.
        page.get_by_role("checkbox", name=re.compile(r"^clinic ")).check()
        page.get_by_label("Label").select_option("progression")
        page.get_by_label("Fewest data owners").fill("3")
        page.get_by_role("button", name="Start job").click()
        alert = page.locator("form.job [role=alert]")
        alert.wait_for()
        answer = federation.api(
            "POST",
            "/model",
            json={
                "model": "linear_regression",
                "optimizer": "exact",
                "protocol": "gradients",
                "randomness": "standard",
                "features": ["clinic"],
                "label": "progression",
                "min_data_owners": 3,
            },
        )
        assert answer.status_code == 422, answer.text
        assert alert.text_content() == answer.json()["error"]
        assert "clinic" in alert.text_content()
        assert known_models(federation) == before
        opened.assert_documented()
    finally:
        opened.close()


def test_a_job_started_with_the_keyboard_only(browser: Any, federation: Federation) -> None:
    with dashboard(browser, federation.model_creator) as opened:
        page = opened.open()
        page.get_by_text("The service refused the call").wait_for()
        keys = page.keyboard
        tab_to(page, "#token")
        keys.type(federation.api_token)
        keys.press("Enter")
        page.locator("text=4 of 4 data owners online").wait_for()
        before = known_models(federation)
        tab_to(page, "#job-name")
        keys.type("by keyboard")
        tab_to(page, "#job-label")
        choose_by_keyboard(page, "progression")
        for feature in ("bmi", "s5"):
            tab_to(page, f'input[type=checkbox][value="{feature}"]')
            keys.press("Space")
        tab_to(page, "button[type=submit]")
        keys.press("Enter")
        model_id = newest_model_id(federation, before)
        model = federation.wait_ended(model_id)
        assert model["status"] == "finished", model
        assert (model["name"], model["features"], model["label"]) == ("by keyboard", ["bmi", "s5"], "progression")
        # The job's details open from the keyboard too.
        tab_to(page, f'#jobs tr[data-model-id="{model_id}"] button[aria-label="Show by keyboard"]')
        keys.press("Enter")
        page.locator(f'#job-detail[data-model-id="{model_id}"] #coefficients').wait_for()
        opened.assert_documented()


def audit_entries(page: Any) -> list[dict[str, Any]]:
    """The audit table as the page shows it: id, kind, size and full SHA-256 of each message."""
    return page.evaluate(
        """() => [...document.querySelectorAll('#audit tbody tr')].map((row) => ({
            id: Number(row.dataset.auditId),
            size: Number(row.querySelector('[data-size]').dataset.size),
            sha256: row.querySelector('code[title]').title,
        }))"""
    )


def sent_messages(log: Path) -> Counter[tuple[str, int]]:
    """What a data owner's traffic log says left it: its requests, and its answers to the coordinator's calls."""
    found: Counter[tuple[str, int]] = Counter()
    for record in json_lines(log):
        if record["direction"] == "sent" or (record["direction"] == "answered" and record["peer"].startswith("/jobs/")):
            body = record["body"].encode("utf-8")
            found[(hashlib.sha256(body).hexdigest(), len(body))] += 1
    return found


def test_data_owner_page_audits_exactly_what_its_traffic_log_recorded(
    browser: Any, federation: Federation, finished_model: dict[str, Any]
) -> None:
    federation.wait_idle()
    name = SHIPPED_OWNER_NAMES[0]
    with dashboard(browser, federation.owner(name)) as opened:
        page = opened.open()
        page.get_by_text("The service refused the call").wait_for()
        assert page.locator("#audit").count() == 0
        opened.sign_in(federation.operator_token(f"data_owner_{name}"))
        page.get_by_role("heading", name=f"Data owner {name}").wait_for()
        page.locator("#audit tbody tr").first.wait_for()
        while page.get_by_role("button", name="Older messages").count():
            shown = page.locator("#audit tbody tr").count()
            page.get_by_role("button", name="Older messages").click()
            # The next page's first row (a locator: the pages' CSP forbids evaluating script text).
            page.locator("#audit tbody tr").nth(shown).wait_for()
        expected = sent_messages(federation.traffic_logs[name])
        entries = audit_entries(page)
        assert Counter((entry["sha256"], entry["size"]) for entry in entries) == expected
        assert len(entries) == sum(expected.values()) > 2 * len(finished_model["history"])
        assert page.get_by_text("trusted on first use").count() == 1
        assert page.locator("#events tbody tr").count() > 0

        # The newest message downloads as the exact bytes that left.
        newest = entries[0]
        with page.expect_download() as download:
            page.locator(f'#audit tr[data-audit-id="{newest["id"]}"]').get_by_role("button").click()
        body = Path(download.value.path()).read_bytes()
        assert (hashlib.sha256(body).hexdigest(), len(body)) == (newest["sha256"], newest["size"])

        opened.assert_documented()


def test_private_owner_page_shows_its_refusals_and_ledger(
    browser: Any, federation: Federation, finished_model: dict[str, Any]
) -> None:
    columns = ["age", "bmi", "bp", "progression"]
    shipped = json.loads((SHIPPED / "dp_job.json").read_text())["bounds"]
    bounds = {column: shipped[column] for column in columns}
    private = federation.train({"features": columns[:-1], "label": columns[-1], "bounds": bounds, "name": "private"})
    assert private["status"] == "finished", private
    ledger = federation.local.owner_status(PRIVATE_OWNER)["privacy"]
    assert [charge["job_id"] for charge in ledger["charges"]] == [private["model_id"]]
    with dashboard(browser, federation.owner(PRIVATE_OWNER)) as opened:
        page = opened.open()
        opened.sign_in(federation.operator_token(f"data_owner_{PRIVATE_OWNER}"))
        page.locator("#ledger").wait_for()
        assert page.locator("#charges tbody tr").count() == 1
        assert private["model_id"] in page.locator("#charges").text_content()
        left = f"{ledger['jobs_remaining']} more jobs"
        assert left in page.locator("#ledger").text_content()
        # The job without bounds it refused, with the local detail the refusal code hides from others.
        refusal = page.locator("#events tbody tr", has_text=finished_model["model_id"]).filter(has_text="refused")
        assert "policy:bounds" in refusal.text_content() and "no bounds for column" in refusal.text_content()
        page.locator("#audit tbody tr").first.wait_for()
        opened.screenshots("data_owner", "#ledger-heading")
        opened.assert_documented()


def plaintext_secrets(federation: Federation) -> list[tuple[str, str]]:
    """Every plaintext the coordinator must never see, as a page could write it.

    The owners' values, and each model's coefficients, gradient norms, metrics and predictions.
    """
    secrets: list[tuple[str, str]] = []
    for name, data in SHIPPED_OWNERS:
        secrets += [
            (text, f"a value of {name}'s data") for value in csv_numbers(data) for text in distinctive_texts(value)
        ]
    for listed in federation.api("GET", "/models").json()["models"]:
        model = federation.model(listed["model_id"])
        values: list[tuple[float, str]] = []
        values += [(v, "a coefficient") for v in (model.get("coefficients") or {}).values()]
        values += [(v, "a metric") for v in (model.get("metrics") or {}).values() if v is not None]
        for entry in model.get("history") or []:
            if entry["gradient_norm"] is not None:
                values.append((entry["gradient_norm"], f"the gradient norm of round {entry['round']}"))
            values += [(v, "a validation metric") for v in (entry.get("validation") or {}).values() if v is not None]
        if model["status"] == "finished":
            prediction = federation.api("GET", "/prediction", params={"model_id": model["model_id"]}).json()
            values += [(v, "a prediction") for v in prediction["predictions"]]
        secrets += [
            (text, f"{what} of model {model['model_id']}")
            for value, what in values
            for text in distinctive_texts(value)
        ]
    return secrets


def test_coordinator_page_shows_no_plaintext(
    browser: Any, federation: Federation, finished_model: dict[str, Any]
) -> None:
    federation.wait_idle()
    secrets = plaintext_secrets(federation)
    with dashboard(browser, federation.coordinator) as opened:
        page = opened.open()
        page.get_by_text("The service refused the call").wait_for()
        opened.sign_in(federation.operator_token("coordinator"))
        page.locator("text=4 of 4 online").wait_for()
        model_id = finished_model["model_id"]
        page.get_by_role("button", name=f"Show job {model_id}").click()
        detail = page.locator(f'#job-detail[data-job-id="{model_id}"]')
        detail.locator("#rounds tbody tr").nth(len(finished_model["history"]) - 1).wait_for()
        rows = detail.locator("#rounds tbody tr").all()
        for entry, row in zip(finished_model["history"], rows, strict=True):
            assert row.locator("td").nth(3).text_content() == ", ".join(entry["data_owners"])
        page.get_by_text("aggregated").first.wait_for()
        dom = page_text(page)
        # The search finds a secret planted in a copy of the DOM: a search that finds nothing proves something.
        assert plaintexts_in(dom + f" {secrets[0][0]} ", secrets)
        found = plaintexts_in(dom, secrets)
        assert not found, f"plaintexts in the coordinator's page: {found[:10]}"
        opened.screenshots("coordinator", "#job-detail")
        opened.assert_documented()


def test_the_model_creators_page_does_show_its_plaintexts(
    browser: Any, federation: Federation, finished_model: dict[str, Any]
) -> None:
    """The counterpart of the coordinator's check: the search finds the model creator's coefficients.

    Its page may show them, and does.
    """
    with dashboard(browser, federation.model_creator) as opened:
        page = opened.open()
        opened.sign_in(federation.api_token)
        page.get_by_role("button", name="Show exact four").click()
        page.locator("#coefficients").wait_for()
        coefficients = [
            (text, term) for term, value in finished_model["coefficients"].items() for text in distinctive_texts(value)
        ]
        found = {term for _, term in plaintexts_in(page_text(page), coefficients)}
        assert found == set(finished_model["coefficients"])
