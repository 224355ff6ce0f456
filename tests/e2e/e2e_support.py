"""Helpers for the end-to-end tests: reading CSVs independently of the product code, generating
data sets, computing numpy references and checking finished models.

Nothing here imports the services' internals except where a test must (key files); the
reference results are computed from the CSV files with numpy alone.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# The shipped data and the design matrix are shared with the other suites (tests/support.py);
# they are importable from here too, for e2e tests written before they moved there.
from support import CHECKOUT, DIABETES_FEATURES, DIABETES_LABEL, SHIPPED, SHIPPED_OWNERS, design  # noqa: F401

from local_federation.cluster import LocalFederation

RTOL = 1e-6


# --------------------------------------------------------------------------------------------
# Federations shared by several tests of one module
# --------------------------------------------------------------------------------------------

@contextmanager
def running_federation(workdir: Path, owners: Sequence[tuple[str, Path]], test_data: Path | None,
                       key_bits: int = 1024, **options: Any) -> Iterator[LocalFederation]:
    """A started :class:`LocalFederation`, stopped afterwards even when starting it failed half-way."""
    instance = LocalFederation(workdir, list(owners), test_data=test_data, key_bits=key_bits, **options)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def get_json(federation: LocalFederation, url: str, headers: Mapping[str, str] | None = None) -> Any:
    response = federation.session.get(url, timeout=30, headers=dict(headers or {}))
    assert response.status_code == 200, f"GET {url} answered {response.status_code}: {response.text}"
    return response.json()


def coordinator_job(federation: LocalFederation, job_id: str) -> dict[str, Any]:
    """GET /jobs/<id> at the coordinator, authenticated as the model creator when the federation has credentials."""
    headers = federation.bearer("model_creator_token") if hasattr(federation, "bearer") else None
    return get_json(federation, f"{federation.coordinator.url}/jobs/{job_id}", headers)


def post_model(federation: LocalFederation, body: Mapping[str, Any] | None, timeout: float = 300) -> dict[str, Any]:
    """POST /model, expect 202, and wait for the model to finish or fail (with the services' logs on timeout)."""
    response = federation.session.post(f"{federation.model_creator.url}/model", json=body, timeout=30)
    assert response.status_code == 202, f"POST /model {body} answered {response.status_code}: {response.text}"
    model_id = response.json()["model_id"]
    try:
        return federation.wait_model(model_id, timeout)
    except TimeoutError:
        logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in federation.parties.values())
        raise AssertionError(f"model {model_id} did not end within {timeout} s\n{logs}") from None


def traffic_records(log: Path, offset: int = 0) -> list[dict[str, Any]]:
    """The traffic log's records after byte ``offset``, parsed from complete lines only.

    A service may be appending while a test reads: a last line without its newline is not yet
    a record, and is left for the next read.
    """
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode("utf-8")
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines()]


def wait_coordinator_job(federation: LocalFederation, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """The coordinator's view of a job once the model creator has closed it there."""
    deadline = time.monotonic() + timeout
    while True:
        job = coordinator_job(federation, job_id)
        if job["status"] in ("finished", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def restart_owner_while_the_job_waits(federation: LocalFederation, name: str, timeout: float = 60) -> None:
    """Start data owner ``name`` again with the model creator stopped (SIGSTOP) until the coordinator has it online.

    Rounds go on far faster than an owner restarts (tens of milliseconds against a second or
    two): a test that needs rounds with the owner back holds its job still meanwhile, and the
    next attempts have the owner among their members.
    """
    model_creator = federation.model_creator.process
    assert model_creator is not None
    headers = federation.bearer("model_creator_token")
    os.kill(model_creator.pid, signal.SIGSTOP)
    try:
        federation.start_party(federation.data_owner(name))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            owners = get_json(federation, f"{federation.coordinator.url}/data_owners", headers)["data_owners"]
            if any(entry["name"] == name and entry["online"] for entry in owners):
                return
            time.sleep(0.05)
        raise TimeoutError(f"the coordinator did not have {name} online again")
    finally:
        os.kill(model_creator.pid, signal.SIGCONT)


# --------------------------------------------------------------------------------------------
# A small file system to fill: the storage faults
# --------------------------------------------------------------------------------------------

@contextmanager
def small_tmpfs(directory: Path, size: str = "4m") -> Iterator[Path]:
    """``directory`` as a tmpfs of ``size`` (mode 0700), unmounted afterwards; skips the test where one cannot be mounted.

    Mounting needs root (CI runs as root on Debian); elsewhere the storage-fault tests skip with that reason.
    """
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte with one file; returns it (unlink it to free the space)."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for block in (b"\0" * 65536, b"\0"):
            try:
                while True:
                    os.write(descriptor, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(descriptor)
    return filler


# --------------------------------------------------------------------------------------------
# CSV files, read without the product's code
# --------------------------------------------------------------------------------------------

def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return [name.strip() for name in rows[0]], rows[1:]


def load(path: Path, features: Sequence[str], label: str) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix and labels by column name, as float64."""
    header, rows = read_table(path)
    positions = [header.index(name) for name in [*features, label]]
    table = np.array([[float(row[p]) for p in positions] for row in rows], dtype=np.float64)
    return table[:, :-1], table[:, -1]


def pooled(paths: Iterable[Path], features: Sequence[str], label: str) -> tuple[np.ndarray, np.ndarray]:
    parts = [load(path, features, label) for path in paths]
    return np.vstack([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def row_count(path: Path) -> int:
    return len(read_table(path)[1])


def numbers_in_csv(path: Path) -> tuple[list[str], list[float]]:
    """Every cell of a CSV that parses as a number: its text as written and its value."""
    texts, values = [], []
    for row in read_table(path)[1]:
        for cell in row:
            text = cell.strip()
            try:
                value = float(text)
            except ValueError:
                continue
            if math.isfinite(value):
                texts.append(text)
                values.append(value)
    return texts, values


# --------------------------------------------------------------------------------------------
# References and checks
# --------------------------------------------------------------------------------------------

def lstsq_reference(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Least squares on [1, X] in float64: intercept first."""
    solution, *_ = np.linalg.lstsq(design(features), labels, rcond=None)
    return solution


def coefficient_vector(model: Mapping[str, Any], features: Sequence[str]) -> np.ndarray:
    coefficients = model["coefficients"]
    assert set(coefficients) == {"intercept", *features}, f"coefficient names: {sorted(coefficients)}"
    return np.array([coefficients["intercept"], *(coefficients[name] for name in features)], dtype=np.float64)


def assert_matches_lstsq(model: Mapping[str, Any], features: Sequence[str], reference: np.ndarray,
                         rtol: float = RTOL) -> np.ndarray:
    """Every coefficient equals the reference to ``rtol`` relative (no absolute slack)."""
    got = coefficient_vector(model, features)
    names = ["intercept", *features]
    relative = np.abs(got - reference) / np.abs(reference)
    worst = int(np.argmax(relative))
    assert np.all(relative <= rtol), (
        f"coefficient {names[worst]!r} = {got[worst]!r} but lstsq gives {reference[worst]!r}"
        f" (relative error {relative[worst]:.3g} > {rtol:g}); all relative errors:"
        f" {dict(zip(names, relative.round(12).tolist()))}"
    )
    return got


def assert_finished_exact(model: Mapping[str, Any], owners: Sequence[str], features: Sequence[str]) -> None:
    """Status, stop reason, number of rounds and one well-formed history entry per round."""
    assert model["status"] == "finished", f"model ended {model['status']}: {model.get('error')}"
    assert model["features"] == list(features)
    assert model["stop_reason"].startswith("exact"), model["stop_reason"]
    history = model["history"]
    assert 1 <= len(history) <= len(features) + 2, f"{len(history)} rounds for {len(features)} features"
    assert model["round"] == len(history)
    assert sorted(model["data_owners"]) == sorted(owners)
    for index, entry in enumerate(history):
        assert entry["round"] == index
        assert entry["contributors"] == len(owners), entry
        assert sorted(entry["data_owners"]) == sorted(owners), entry
        assert entry["failures"] == {}, entry
        assert isinstance(entry["seconds"], (int, float)) and 0 <= entry["seconds"] < 300, entry
        assert isinstance(entry["gradient_norm"], (int, float)) and math.isfinite(entry["gradient_norm"])
        assert entry["gradient_norm"] >= 0


def validation_mse(entry: Mapping[str, Any]) -> float:
    """A history entry's validation MSE."""
    return entry["validation"]["mse"]


def assert_prediction(federation: LocalFederation, model: Mapping[str, Any], test_csv: Path) -> dict[str, Any]:
    """GET /prediction for the model: its MSE and predictions are numpy's on the test CSV."""
    features = model["features"]
    answer = federation.prediction(model["model_id"])
    x_test, y_test = load(test_csv, features, model["label"])
    coefficients = coefficient_vector(model, features)
    expected = design(x_test) @ coefficients
    assert answer["model_id"] == model["model_id"]
    assert answer["rows"] == len(y_test)
    assert len(answer["predictions"]) == len(y_test)
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-9, atol=1e-9 * np.max(np.abs(expected)))
    expected_mse = float(np.mean((expected - y_test) ** 2))
    assert math.isclose(answer["mse"], expected_mse, rel_tol=1e-9), (answer["mse"], expected_mse)
    return answer


# --------------------------------------------------------------------------------------------
# Generated data
# --------------------------------------------------------------------------------------------

RAW_FEATURES = ["sqft", "lot_size", "year_built", "has_pool", "distance_km"]
RAW_LABEL = "price"
STD_FEATURES = ["z1", "z2", "z3"]
STD_LABEL = "y_std"
EXTRA_COLUMNS = ["listing_id", "agent", "unused_score"]
ALL_COLUMNS = [*RAW_FEATURES, RAW_LABEL, *STD_FEATURES, STD_LABEL, *EXTRA_COLUMNS]


def generate_rows(rng: np.random.Generator, count: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """Raw-scale housing-like rows (thousands, a 0/1 flag, labels in the hundreds of thousands)
    plus standardised columns for gradient descent and some columns no job uses."""
    sqft = np.round(rng.uniform(600, 4500, count) + 150 * shift, 1)
    lot_size = np.round(rng.uniform(2000, 20000, count), 2)
    year_built = rng.integers(1950, 2021, count).astype(np.float64)
    has_pool = (rng.random(count) < 0.3 + 0.1 * shift).astype(np.float64)
    distance_km = np.round(rng.uniform(0.5, 40, count), 3)
    price = (-2_500_000 + 120.0 * sqft + 3.5 * lot_size + 1400.0 * year_built + 25_000 * has_pool
             - 1500.0 * distance_km + rng.normal(0, 15_000, count))
    z = rng.normal(shift * 0.2, 1.0, (count, 3))
    y_std = 1.5 + 2.0 * z[:, 0] - 1.0 * z[:, 1] + 0.5 * z[:, 2] + rng.normal(0, 0.1, count)
    return {
        "sqft": sqft, "lot_size": lot_size, "year_built": year_built, "has_pool": has_pool,
        "distance_km": distance_km, "price": np.round(price, 2),
        "z1": z[:, 0], "z2": z[:, 1], "z3": z[:, 2], "y_std": y_std,
        "listing_id": rng.integers(100_000, 999_999, count).astype(np.float64),
        "agent": np.array([f"agent-{i}" for i in rng.integers(0, 50, count)]),
        "unused_score": rng.normal(50, 20, count),
    }


def write_csv(path: Path, columns: Sequence[str], data: Mapping[str, np.ndarray]) -> Path:
    count = len(next(iter(data.values())))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i in range(count):
            writer.writerow([_cell(data[name][i]) for name in columns])
    return path


def _cell(value: Any) -> str:
    if isinstance(value, (str, np.str_)):
        return str(value)
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def generated_owners(directory: Path, sizes: Sequence[int], seed: int = 20240601) -> list[tuple[str, Path]]:
    """Owners of the given sizes, each with its own column order and the unused extra columns."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    owners = []
    for index, size in enumerate(sizes):
        columns = list(ALL_COLUMNS)
        if index % 3 == 1:
            columns.reverse()
        elif index % 3 == 2:
            columns = columns[4:] + columns[:4]
        name = f"gen_{index}_{size}"
        owners.append((name, write_csv(directory / f"{name}.csv", columns, generate_rows(rng, size, shift=index))))
    return owners


def generated_test_csv(directory: Path, count: int = 200, seed: int = 777) -> Path:
    rng = np.random.default_rng(seed)
    columns = [*STD_FEATURES, STD_LABEL, RAW_LABEL, *RAW_FEATURES]
    return write_csv(directory / "test.csv", columns, generate_rows(rng, count, shift=1.0))
