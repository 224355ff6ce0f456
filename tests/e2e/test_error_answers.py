"""Error answers name the input, never the server's files or Python's internals (issue 12, defect 6).

Before: ``GET /prediction`` for a model the test data cannot serve answered with the server's path
of the test CSV, a JSON body with a 5000-digit number was refused with Python's advice to call
``sys.set_int_max_str_digits()``, and an owner was reported to answer 200 to ``DELETE`` of a job id
of 65 characters although ids are limited to 64.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from e2e_support import running_federation
from support import CHECKOUT, SHIPPED, SHIPPED_OWNERS_ABC

pytestmark = pytest.mark.e2e

HUGE_NUMBER = "7" * 5000


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    with running_federation(tmp_path_factory.mktemp("errors"), SHIPPED_OWNERS_ABC[:1], SHIPPED / "test.csv") as running:
        yield running


def _assert_names_no_internals(text: str) -> None:
    assert str(CHECKOUT) not in text and "test.csv" not in text and "/data/" not in text, text
    assert "sys." not in text and "Traceback" not in text and "set_int_max_str_digits" not in text, text


def test_prediction_on_test_data_without_the_models_column_names_the_column_not_the_file(federation):
    exported = {"format": "federated_trainer.model/1", "model": "linear_regression", "features": ["age", "s7"],
                "label": "progression", "coefficients": {"intercept": 1.0, "age": 2.0, "s7": 3.0}}
    imported = federation.session.post(f"{federation.model_creator.url}/models/import", json=exported, timeout=30)
    assert imported.status_code == 201, imported.text
    model_id = imported.json()["model_id"]
    answer = federation.session.get(f"{federation.model_creator.url}/prediction", params={"model_id": model_id},
                                    timeout=30)
    assert answer.status_code == 422
    assert answer.json() == {
        "error": f"the test data cannot score model {model_id}: missing column 's7' (the header has: age, sex, bmi,"
                 " bp, s1, s2, s3, s4, s5, s6, progression)",
        "type": "DataError",
    }
    _assert_names_no_internals(answer.text)


@pytest.mark.parametrize("party", ["model_creator", "coordinator"])
def test_a_number_with_too_many_digits_is_refused_in_the_bodys_terms(federation, party):
    url = {"model_creator": f"{federation.model_creator.url}/model",
           "coordinator": f"{federation.coordinator.url}/jobs"}[party]
    answer = federation.session.post(url, data=f'{{"max_rounds": {HUGE_NUMBER}}}', timeout=30,
                                     headers={"Content-Type": "application/json",
                                              **federation.bearer("model_creator_token")})
    assert answer.status_code == 400
    assert answer.json() == {"error": "body: malformed JSON (a number has more than the 4300 digits allowed)",
                             "type": "SchemaError"}
    _assert_names_no_internals(answer.text)


def test_an_owner_refuses_to_leave_a_job_whose_id_is_longer_than_64_characters(federation):
    owner = federation.data_owner("a")
    with closing(sqlite3.connect(federation.workdir / "coordinator" / "coordinator.sqlite3")) as db:
        (token,) = db.execute("SELECT coordinator_token FROM data_owners WHERE name = 'a'").fetchone()
    as_coordinator = {"Authorization": f"Bearer {token}"}
    too_long = federation.session.delete(f"{owner.url}/jobs/{'j' * 65}", headers=as_coordinator, timeout=30)
    assert too_long.status_code == 400
    assert too_long.json()["error"].startswith("path.job_id: String should match pattern"), too_long.text
    longest = federation.session.delete(f"{owner.url}/jobs/{'j' * 64}", headers=as_coordinator, timeout=30)
    assert longest.status_code == 200 and longest.json() == {"job_id": "j" * 64, "status": "left"}
