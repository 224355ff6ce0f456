"""Request bodies are read whole or refused: a chunked body over the limit is a 413, never a cut one.

Before, a ``Transfer-Encoding: chunked`` CSV over the model creator's body limit was cut at the
limit and scored with 200: the rows past the cut silently dropped, the last one misread. Here a
real model creator process gets chunked uploads on both sides of a small limit.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local_federation.cluster import free_port
from support import CHECKOUT

pytestmark = pytest.mark.e2e

LIMIT = 64 * 1024
MODEL = {"format": "federated_trainer.model/1", "model": "linear_regression", "features": ["bmi", "bp"],
         "label": "progression", "coefficients": {"intercept": 1.0, "bmi": 2.0, "bp": -0.5}}


@pytest.fixture
def model_creator(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    environment = {**os.environ, "FT_MODEL_CREATOR_SECRETS_DIR": str(tmp_path / "secrets"),
                   "FT_MODEL_CREATOR_MAX_CONTENT_LENGTH": str(LIMIT)}
    process = subprocess.Popen([str(CHECKOUT / "run_model_deployer.sh"), "--port", str(port), "--state-dir",
                                str(tmp_path / "mc"), "--key-bits", "1024", "--test-only-small-keys"],
                               cwd=CHECKOUT, env=environment, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the model creator did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """``data`` as a generator, which requests sends with ``Transfer-Encoding: chunked``."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def csv_of(rows: int) -> bytes:
    return ("bmi,bp\n" + "".join(f"{20 + i % 17}.5,{80 + i % 23}\n" for i in range(rows))).encode()


def test_a_chunked_body_over_the_limit_is_refused_and_one_under_it_is_read_whole(model_creator):
    imported = requests.post(f"{model_creator}/models/import", json=MODEL, timeout=30)
    assert imported.status_code == 201, imported.text
    model_id = imported.json()["model_id"]

    small = csv_of(500)
    assert len(small) < LIMIT
    answer = requests.post(f"{model_creator}/prediction", params={"model_id": model_id}, data=chunks(small),
                           headers={"Content-Type": "text/csv"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == 500
    assert answer.json()["predictions"][-1] == pytest.approx(1.0 + 2.0 * (20 + 499 % 17 + 0.5) - 0.5 * (80 + 499 % 23))

    large = csv_of(20_000)
    assert len(large) > LIMIT
    refused = requests.post(f"{model_creator}/prediction", params={"model_id": model_id}, data=chunks(large),
                            headers={"Content-Type": "text/csv"}, timeout=30)
    assert refused.status_code == 413, refused.text[:300]
    assert refused.json() == {"error": f"body: larger than {LIMIT} bytes", "type": "RequestEntityTooLarge"}

    oversized_json = b'{"features": ["' + b"x" * LIMIT + b'"]}'
    refused = requests.post(f"{model_creator}/model", data=chunks(oversized_json),
                            headers={"Content-Type": "application/json"}, timeout=30)
    assert refused.status_code == 413, refused.text[:300]
    assert requests.get(f"{model_creator}/models", timeout=30).json()["models"][0]["model_id"] == model_id
    assert len(requests.get(f"{model_creator}/models", timeout=30).json()["models"]) == 1
