"""What a new user does, against real processes: the installed client, no test data, cancel and delete.

* ``pip install .`` installs the services, the client and the console scripts; the installed
  ``federated-trainer train`` trains the default job, shows a line per round (round k of K) and
  prints the coefficient table and the metrics; ``list``, ``status`` and errors behave.
* A model creator started with ``--test-data none`` trains on owners whose columns it has never
  seen, exactly, and the model says why it has no metrics.
* A job in flight is cancelled and then deleted through the Python client; the other models, the
  coordinator's job and later jobs are untouched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from e2e_support import (
    RAW_FEATURES,
    RAW_LABEL,
    ALL_COLUMNS,
    assert_matches_lstsq,
    coordinator_job,
    generate_rows,
    lstsq_reference,
    running_federation,
    wait_coordinator_job,
    write_csv,
)
from support import CHECKOUT, DIABETES_FEATURES, FAST_RETRIES, SHIPPED, SHIPPED_OWNER_NAMES, SHIPPED_OWNERS

from federated_trainer import Client, ClientError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project as ``pip install .`` puts it (its dependencies are the test environment's)."""
    target = tmp_path_factory.mktemp("installed")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(CHECKOUT)], check=True, capture_output=True, cwd=target)
    return target


def run_installed(installed: Path, script: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([str(installed / "bin" / script), *arguments], capture_output=True, text=True,
                          env=environment, cwd=installed, timeout=600)


def test_pip_install_gives_the_services_the_client_and_the_console_scripts(installed):
    for package in ("common", "coordinator", "data_owner", "model_creator", "local_federation", "federated_trainer"):
        assert (installed / package / "__init__.py").is_file(), package
    for script in ("federated-trainer", "federated-coordinator", "federated-data-owner", "federated-model-creator"):
        answer = run_installed(installed, script, "--help")
        assert answer.returncode == 0 and "usage:" in answer.stdout, (script, answer.stderr)


def test_the_installed_console_script_trains_the_default_job_showing_progress(installed, tmp_path):
    with running_federation(tmp_path, SHIPPED_OWNERS, SHIPPED / "test.csv", environment=dict(FAST_RETRIES)) as fed:
        url = fed.model_creator.url
        trained = run_installed(installed, "federated-trainer", "--url", url, "train", "--name", "first")
        assert trained.returncode == 0, trained.stderr
        rounds = re.findall(r"round (\d+)/(\d+), (\w+)", trained.stderr)
        assert rounds and {total for _, total, _ in rounds} == {str(len(DIABETES_FEATURES) + 2)}, trained.stderr
        assert [int(done) for done, _, _ in rounds] == sorted(int(done) for done, _, _ in rounds)
        assert rounds[-1][2] == "finished"
        (model,) = Client(url).models()
        assert model["name"] == "first" and model["fraction_done"] == 1.0
        out = trained.stdout
        assert f"model {model['model_id']} (first): finished after {len(DIABETES_FEATURES) + 2} round(s)" in out
        for name, value in Client(url).model(model["model_id"])["coefficients"].items():
            assert re.search(rf"^{name}\s+{re.escape(f'{value:18.10g}'.strip())}$", out, re.M), (name, out)
        assert re.search(r"^mse: \d+\.\d+", out, re.M)

        listed = run_installed(installed, "federated-trainer", "--url", url, "list")
        assert listed.returncode == 0 and re.search(rf"^{model['model_id']}\s+finished\s+100%", listed.stdout, re.M)
        refused = run_installed(installed, "federated-trainer", "--url", url, "train", "--features", "age,age")
        assert refused.returncode == 2 and "HTTP 400: body.features: names must not repeat" in refused.stderr
        unknown = run_installed(installed, "federated-trainer", "--url", url, "status", "nosuchmodel")
        assert unknown.returncode == 2 and "HTTP 404: model nosuchmodel does not exist" in unknown.stderr


def test_a_model_creator_without_test_data_trains_on_columns_it_never_saw(tmp_path):
    rng = np.random.default_rng(11)
    parts = []
    owners = []
    for index in range(3):
        rows = generate_rows(rng, 60 + 20 * index, shift=index)
        owners.append((f"clinic_{index}", write_csv(tmp_path / f"clinic_{index}.csv", ALL_COLUMNS, rows)))
        parts.append(rows)
    features = np.vstack([np.column_stack([rows[f] for f in RAW_FEATURES]) for rows in parts])
    labels = np.concatenate([rows[RAW_LABEL] for rows in parts])
    with running_federation(tmp_path / "fed", owners, "none", environment=dict(FAST_RETRIES)) as federation:
        client = Client(federation.model_creator.url)
        model = client.wait(client.train(features=RAW_FEATURES, label=RAW_LABEL), timeout=300)
        assert model["status"] == "finished", model.get("error")
        assert_matches_lstsq(model, RAW_FEATURES, lstsq_reference(features, labels), rtol=1e-6)
        assert model["metrics"] is None
        assert model["metrics_note"] == "no metrics: the model creator has no test data"
        with pytest.raises(ClientError, match="HTTP 409: the model creator has no test data"):
            client.prediction(model["model_id"])
        row = {name: float(features[0, i]) for i, name in enumerate(RAW_FEATURES)}
        predicted = client.predict([{**row, "listing_id": 5.0}], model["model_id"])["predictions"][0]
        expected = model["coefficients"]["intercept"] + sum(model["coefficients"][f] * row[f] for f in RAW_FEATURES)
        assert predicted == pytest.approx(expected, rel=1e-12)


def test_a_job_in_flight_is_cancelled_then_deleted_and_nothing_else_is_lost(tmp_path):
    with running_federation(tmp_path, SHIPPED_OWNERS, SHIPPED / "test.csv", environment=dict(FAST_RETRIES)) as fed:
        client = Client(fed.model_creator.url)
        kept = client.wait(client.train(name="kept"), timeout=300)
        assert kept["status"] == "finished"
        long_job = client.train(optimizer="gd", learning_rate=1e-9, max_rounds=100_000, tolerance=0.0,
                                relative_tolerance=0.0, name="too long")
        for _ in range(600):
            shown = client.model(long_job)
            if shown["round"] >= 2:
                break
            time.sleep(0.1)
        assert shown["status"] == "running" and shown["expected_rounds"] == 100_000
        assert 0 < shown["fraction_done"] < 0.01 and shown["seconds_left"] > 0
        with pytest.raises(ClientError, match="HTTP 409: .*cancel it first"):
            client.delete(long_job)
        client.cancel(long_job)
        cancelled = client.wait(long_job, timeout=60)
        assert cancelled["status"] == "cancelled" and cancelled["error"] == "cancelled by the user"
        # Closed at the coordinator too (its reason may be the cancellation, or the model creator's
        # 404 to a round delivered just after it, whichever came first).
        assert wait_coordinator_job(fed, long_job)["status"] == "failed"
        client.delete(long_job)
        with pytest.raises(ClientError, match="HTTP 404"):
            client.model(long_job)
        assert [m["model_id"] for m in client.models()] == [kept["model_id"]]
        assert client.model(kept["model_id"])["coefficients"] == kept["coefficients"]
        assert client.prediction(kept["model_id"])["mse"] == pytest.approx(kept["metrics"]["mse"])
        assert coordinator_job(fed, kept["model_id"])["status"] == "finished"
        again = client.wait(client.train(), timeout=300)
        assert again["status"] == "finished" and again["coefficients"] == pytest.approx(kept["coefficients"])
        assert sorted(again["data_owners"]) == SHIPPED_OWNER_NAMES


def test_a_run_with_a_failing_job_is_quiet_and_stops_cleanly(tmp_path):
    """No traceback, no ERROR line and no leaked-semaphore warning in any party's log."""
    fed = running_federation(tmp_path, SHIPPED_OWNERS, SHIPPED / "test.csv", environment=dict(FAST_RETRIES))
    with fed as federation:
        client = Client(federation.model_creator.url)
        assert client.wait(client.train(), timeout=300)["status"] == "finished"
        failed = client.wait(client.train(features=["age", "clinic"]), timeout=300)
        assert failed["status"] == "failed" and "bad_value (column 'clinic')" in failed["error"]
        parties = list(federation.parties.values())
    for party in parties:
        log = party.log_path.read_text(errors="replace")
        assert "Traceback" not in log and " ERROR " not in log and "leaked" not in log, (party.name, log[-3000:])
        assert log.rstrip().endswith("stopped"), (party.name, log[-500:])


def test_features_near_1e_minus_6_and_1e9_in_one_job_are_exact_to_1e_6_with_bounds(tmp_path):
    rng = np.random.default_rng(3)
    columns = ["tiny", "unit", "huge", "y"]
    owners, parts = [], []
    for index, rows in enumerate((40, 55, 70)):
        tiny = rng.uniform(-2e-6, 2e-6, rows)
        unit = rng.uniform(-1, 1, rows)
        huge = rng.uniform(0, 3e9, rows)
        y = 5.0 + 4e5 * tiny - 2.0 * unit + 3e-9 * huge + rng.normal(0, 0.01, rows)
        data = {"tiny": tiny, "unit": unit, "huge": huge, "y": y}
        owners.append((f"lab_{index}", write_csv(tmp_path / f"lab_{index}.csv", columns, data)))
        parts.append(np.column_stack([tiny, unit, huge, y]))
    pooled = np.vstack(parts)
    scales = np.array([1e-6, 1.0, 1e9])
    design = np.hstack([np.ones((len(pooled), 1)), pooled[:, :3] / scales])
    solution = np.linalg.lstsq(design, pooled[:, 3], rcond=None)[0]
    reference = np.concatenate([[solution[0]], solution[1:] / scales])
    bounds = {"tiny": [-2e-6, 2e-6], "unit": [-1, 1], "huge": [0, 3e9], "y": [-10, 20]}
    with running_federation(tmp_path / "fed", owners, "none", environment=dict(FAST_RETRIES)) as federation:
        client = Client(federation.model_creator.url)
        model = client.wait(client.train(features=columns[:3], label="y", bounds=bounds), timeout=300)
        assert model["status"] == "finished", model.get("error")
        assert model["stop_reason"] == "exact: all directions explored"
        assert_matches_lstsq(model, columns[:3], reference, rtol=1e-6)
        spec = coordinator_job(federation, model["model_id"])["spec"]
        assert spec["feature_scales"] == [19, 0, -31] and spec["label_scale"] == -4


def test_the_federation_lists_each_owners_columns_and_jobs_are_checked_against_them(tmp_path):
    with running_federation(tmp_path, SHIPPED_OWNERS, "none", environment=dict(FAST_RETRIES)) as federation:
        client = Client(federation.model_creator.url)
        listed = client.session.get(f"{client.url}/federation", timeout=30).json()["data_owners"]
        assert [owner["name"] for owner in listed] == SHIPPED_OWNER_NAMES
        columns = {owner["name"]: owner["columns"] for owner in listed}
        assert "clinic" in columns["owner_c"] and "clinic" not in columns["owner_a"]
        assert all(set(DIABETES_FEATURES) <= set(published) for published in columns.values())

        # Every owner must take part: the one lacking the column is named, and nothing starts.
        with pytest.raises(ClientError, match=r"HTTP 422: body: 1 data owner\(s\) publish every column of the job, "
                                              r"the job needs 3; missing: 'clinic' \(lacked by owner_a, owner_b\)"):
            client.train(features=["age", "clinic"], min_data_owners=3)
        assert client.models() == []
        # One is enough: the job starts and says who will not take part (and owner_c, whose 'clinic'
        # is text, refuses it at the join, naming only the column).
        started = client.session.post(f"{client.url}/model", json={"features": ["age", "clinic"]}, timeout=30).json()
        assert started["warnings"] == ["data owners without every column of the job will not take part:"
                                       " 'clinic' (lacked by owner_a, owner_b)"]
        model = client.wait(started["model_id"], timeout=300)
        assert model["status"] == "failed" and "owner_c: refused the job" in model["error"]
        assert "bad_value (column 'clinic')" in model["error"]


def test_owners_leave_by_deregistering_or_by_the_operator_and_later_jobs_run_without_them(tmp_path):
    with running_federation(tmp_path, SHIPPED_OWNERS, SHIPPED / "test.csv", environment=dict(FAST_RETRIES)) as fed:
        client = Client(fed.model_creator.url)
        owner_c = fed.data_owner("owner_c")
        owner_c.stop()
        left = subprocess.run([str(CHECKOUT / "run_data_owner.sh"), *owner_c.arguments, "--port", str(owner_c.port),
                               "--deregister"], capture_output=True, text=True, timeout=120, env=fed._environment())
        assert left.returncode == 0 and "owner_c: deregistered" in left.stdout, left.stderr
        names = [o["name"] for o in client.session.get(f"{client.url}/federation", timeout=30).json()["data_owners"]]
        assert names == ["owner_a", "owner_b"]

        token = (fed.workdir / "coordinator" / "operator_token").read_text().strip()
        removed = fed.session.delete(f"{fed.coordinator.url}/data_owners/owner_b",
                                     headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert removed.status_code == 200 and removed.json() == {"name": "owner_b", "status": "removed"}
        not_operator = fed.session.delete(f"{fed.coordinator.url}/data_owners/owner_a",
                                          headers=fed.bearer("model_creator_token"), timeout=30)
        assert not_operator.status_code == 403
        gone = fed.session.delete(f"{fed.coordinator.url}/data_owners/owner_b",
                                  headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert gone.status_code == 404

        model = client.wait(client.train(), timeout=300)
        assert model["status"] == "finished" and model["data_owners"] == ["owner_a"]
        assert all(not entry["failures"] for entry in model["history"]), model["history"]


def test_the_readmes_multi_owner_flow_counts_every_row_once(tmp_path):
    """The default owner (train.csv, the union of the shards) leaves before the shards train."""
    shards = [(f"hospital_{letter}", SHIPPED / f"owner_{letter}.csv") for letter in "abc"]
    owners = [("data-owner", SHIPPED / "train.csv"), *shards]
    with running_federation(tmp_path, owners, SHIPPED / "test.csv", environment=dict(FAST_RETRIES)) as fed:
        default = fed.data_owner("data-owner")
        default.stop()
        left = subprocess.run([str(CHECKOUT / "run_data_owner.sh"), *default.arguments, "--port", str(default.port),
                               "--deregister"], capture_output=True, text=True, timeout=120, env=fed._environment())
        assert left.returncode == 0, left.stderr
        client = Client(fed.model_creator.url)
        model = client.wait(client.train(), timeout=300)
        assert model["status"] == "finished" and sorted(model["data_owners"]) == [name for name, _ in shards]
        train_rows = len((SHIPPED / "train.csv").read_text().splitlines()) - 1
        shard_rows = sum(len(path.read_text().splitlines()) - 1 for _, path in shards)
        assert shard_rows == train_rows == 400
