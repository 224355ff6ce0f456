"""A data owner whose CSV cannot serve the job is left out with a reason that names its file,
column and row; quorum and missing-column failures end the job with a readable error."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from e2e_support import (
    assert_matches_lstsq,
    assert_prediction,
    coordinator_job,
    get_json,
    lstsq_reference,
    pooled,
    post_model,
    read_table,
    running_federation,
)
from support import DIABETES_FEATURES, DIABETES_LABEL, FAST_RETRIES, SHIPPED

pytestmark = pytest.mark.e2e

GOOD = [("good_a", SHIPPED / "owner_a.csv"), ("good_b", SHIPPED / "owner_b.csv")]


def spoil(source: Path, target: Path, column: str, row: int, text: str) -> Path:
    """A copy of ``source`` with ``text`` in ``column`` of data row ``row`` (counted from 1 after the header)."""
    header, rows = read_table(source)
    rows[row - 1][header.index(column)] = text
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return target


def test_data_with_extra_column(directory: Path) -> Path:
    """The shipped test split plus a column that no data owner has."""
    header, rows = read_table(SHIPPED / "test.csv")
    target = directory / "test_with_clinic_score.csv"
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "clinic_score"])
        writer.writerows([*row, str(index % 7)] for index, row in enumerate(rows))
    return target


test_data_with_extra_column.__test__ = False  # a helper, not a test


def assert_left_out(model: dict, name: str, path: Path, column: str, row: int, federation) -> None:
    assert model["status"] == "finished", model.get("error")
    assert sorted(model["data_owners"]) == sorted(n for n, _ in GOOD)
    assert model["history"], model
    for entry in model["history"]:
        assert entry["contributors"] == len(GOOD), entry
        assert sorted(entry["data_owners"]) == sorted(n for n, _ in GOOD), entry
        assert name not in entry["data_owners"]
    reason = model["history"][0]["failures"].get(name)
    assert reason, f"round 0 failures do not name {name}: {model['history'][0]['failures']}"
    # What travels is the code and the job's column: no path, file name or row (PROTOCOL.md 7).
    assert reason.endswith(f"bad_value (column '{column}')"), reason
    assert str(path.resolve()) not in reason and path.name not in reason, reason
    assert not re.search(r"\brow\b", reason), reason
    # The owner's operator sees where the problem is, on the owner's own status page.
    details = [e["detail"] for e in federation.owner_status(name)["events"] if e["code"] == "bad_value"]
    assert any(str(path.resolve()) in d and re.search(rf"\brow {row}\b", d) and column in d for d in details), details
    x, y = pooled([p for _, p in GOOD], DIABETES_FEATURES, DIABETES_LABEL)
    assert_matches_lstsq(model, DIABETES_FEATURES, lstsq_reference(x, y))


@pytest.fixture(scope="module")
def with_nan_owner(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad_data")
    bad = spoil(SHIPPED / "owner_c.csv", directory / "owner_c_with_nan.csv", "bmi", 7, "nan")
    test_csv = test_data_with_extra_column(directory)
    owners = [*GOOD, ("bad", bad)]
    with running_federation(directory / "federation", owners, test_csv, environment=FAST_RETRIES) as federation:
        federation.bad_path = bad
        federation.test_csv = test_csv
        yield federation


def test_owner_with_nan_is_left_out_and_named(with_nan_owner):
    model = post_model(with_nan_owner, None)
    assert_left_out(model, "bad", with_nan_owner.bad_path, "bmi", 7, with_nan_owner)
    assert_prediction(with_nan_owner, model, with_nan_owner.test_csv)


def test_quorum_of_three_with_a_bad_owner_fails_readably(with_nan_owner):
    model = post_model(with_nan_owner, {"min_data_owners": 3})
    assert model["status"] == "failed"
    error = model["error"]
    assert isinstance(error, str) and 0 < len(error) < 4000
    assert "Traceback" not in error
    assert "3" in error and "bad" in error and "bmi" in error, error
    assert "coefficients" not in model
    job = coordinator_job(with_nan_owner, model["model_id"])
    assert job["status"] == "failed"


def test_feature_missing_from_every_owner_fails_naming_it(with_nan_owner):
    finished = post_model(with_nan_owner, None)
    assert finished["status"] == "finished"
    # No owner publishes the column (the federation's schema): refused at once, naming it.
    refused = with_nan_owner.session.post(f"{with_nan_owner.model_creator.url}/model",
                                          json={"features": [*DIABETES_FEATURES, "clinic_score"]}, timeout=30)
    assert refused.status_code == 422 and "'clinic_score' (lacked by " in refused.json()["error"], refused.text
    assert "Traceback" not in refused.text
    # The refused job loses or changes nothing: the finished model is still served.
    assert get_json(with_nan_owner, f"{with_nan_owner.model_creator.url}/model/{finished['model_id']}") == finished
    assert with_nan_owner.prediction()["model_id"] == finished["model_id"]


def test_owner_with_non_numeric_value_is_left_out_and_named(federation, tmp_path):
    bad = spoil(SHIPPED / "owner_b.csv", tmp_path / "owner_b_with_text.csv", "s5", 12, "n/a")
    running = federation([*GOOD[:1], ("text", bad), ("good_b", SHIPPED / "owner_b.csv")])
    model = post_model(running, None)
    assert_left_out(model, "text", bad, "s5", 12, running)
    # The refusal names where the problem is, never the owner's cell itself.
    assert all("n/a" not in entry["failures"]["text"] for entry in model["history"])

    # A column that no owner publishes is refused up front, naming it and the owners that lack it,
    # and changes nothing stored.
    before = get_json(running, f"{running.model_creator.url}/models")
    response = running.session.post(f"{running.model_creator.url}/model",
                                    json={"features": [*DIABETES_FEATURES, "clinic_score"]}, timeout=30)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "0 data owner(s) publish every column of the job" in error
    assert "'clinic_score' (lacked by good_a, good_b, text)" in error, error
    assert get_json(running, f"{running.model_creator.url}/models") == before
