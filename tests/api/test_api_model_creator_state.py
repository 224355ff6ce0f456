"""What the model creator keeps across restarts: its Paillier key (mode 0600, generated once,
reused) and its models (finished ones survive unchanged; ones in flight are kept for
``Trainer.resume_unfinished``, and fail with a clear error if they cannot be resumed)."""

from __future__ import annotations

from pathlib import Path

from api_support import restart_config
from support import DIABETES_FEATURES, file_mode

from common.protocol.messages import RoundHistory, TrainingOptions
from model_creator import create_app
from model_creator.keystore import KEY_FILE
from model_creator.training import TrainingRequest

CONFIG_NAMES = ("KEY_BITS", "TEST_ONLY_SMALL_KEYS", "COORDINATOR_URL", "TEST_DATA")


def key_path(app) -> Path:
    return Path(app.extensions["settings"].state_dir) / KEY_FILE


def restarted(app):
    return create_app(restart_config(app, *CONFIG_NAMES))


def test_key_is_created_on_first_use_with_mode_0600(model_creator_app):
    path = key_path(model_creator_app)
    assert not path.exists(), "creating the app must not generate a key"
    key = model_creator_app.extensions["key_store"].private_key()
    assert key.public_key.bits == 1024
    assert file_mode(path) == 0o600
    assert not list(path.parent.glob("*.tmp"))
    assert model_creator_app.extensions["key_store"].private_key() is key


def test_key_is_reused_after_a_restart(model_creator_app):
    first = model_creator_app.extensions["key_store"].private_key()
    content = key_path(model_creator_app).read_bytes()
    second = restarted(model_creator_app).extensions["key_store"].private_key()
    assert second.public_key.fingerprint == first.public_key.fingerprint
    assert key_path(model_creator_app).read_bytes() == content
    assert file_mode(key_path(model_creator_app)) == 0o600


def test_loosened_key_mode_is_tightened_back(model_creator_app):
    fingerprint = model_creator_app.extensions["key_store"].private_key().public_key.fingerprint
    path = key_path(model_creator_app)
    for loose in (0o644, 0o640, 0o666):
        path.chmod(loose)
        reloaded = restarted(model_creator_app).extensions["key_store"].private_key()
        assert file_mode(path) == 0o600
        assert reloaded.public_key.fingerprint == fingerprint


def finished_result() -> dict:
    return {"coefficients": {"intercept": 150.0, **dict.fromkeys(DIABETES_FEATURES, 1.5)}, "stop_reason": "converged",
            "data_owners": ["owner-a"], "metrics": {"mse": 2900.0}}


def seed_models(app) -> tuple[str, str, str]:
    """(running, pending, finished) models, put straight into the store."""
    store = app.extensions["model_store"]
    request = TrainingRequest.of(TrainingOptions(), app.extensions["settings"]).to_json()
    running = store.create(request)
    store.set_running(running, app.extensions["key_store"].private_key().public_key.fingerprint, None)
    store.record_round(running, RoundHistory(round=0, kind="gradient", contributors=1, data_owners=["owner-a"],
                                             failures={}, gradient_norm=1.0, validation=None, restarted=False,
                                             seconds=0.5), None)
    pending = store.create(request)
    finished = store.create(request)
    store.finish(finished, finished_result())
    return running, pending, finished


def test_restart_loses_and_changes_no_model(model_creator_app):
    """Opening the same state again keeps every model as it was: finished ones for predictions,
    unfinished ones (with their rounds) for :meth:`Trainer.resume_unfinished`."""
    running, pending, finished = seed_models(model_creator_app)
    client = model_creator_app.test_client()
    views = ["/models", f"/model/{running}", f"/model/{pending}", f"/model/{finished}", "/prediction",
             f"/model/{finished}/export"]
    before = {view: client.get(view).get_json() for view in views}
    assert before[f"/model/{running}"]["status"] == "running" and before[f"/model/{running}"]["round"] == 1

    after = restarted(model_creator_app).test_client()
    assert {view: after.get(view).get_json() for view in views} == before


def test_resumed_models_wait_for_a_coordinator_that_is_gone_and_lose_nothing(model_creator_app):
    running, pending, finished = seed_models(model_creator_app)
    before = {model_id: model_creator_app.test_client().get(f"/model/{model_id}").get_json()
              for model_id in (running, pending, finished)}
    app = create_app({**restart_config(model_creator_app, *CONFIG_NAMES), "CONNECT_RETRIES": 0})
    trainer = app.extensions["trainer"]
    assert trainer.resume_unfinished() == 2
    trainer.worker.submit(lambda: None).result(timeout=60)  # the worker runs its tasks in order

    client = app.test_client()
    # A coordinator not reached is a transient fault: the models keep their state and wait for it,
    # and the two in flight say so (``interrupted``); the finished one is as it was.
    assert client.get(f"/model/{finished}").get_json() == before[finished]
    for model_id in (running, pending):
        now = client.get(f"/model/{model_id}").get_json()
        interrupted = now.pop("interrupted")
        assert now == before[model_id]
        assert interrupted["reason"].startswith(f"POST {app.extensions['settings'].coordinator_url}/jobs: ConnectionError")
        assert "Connection refused" in interrupted["reason"] and interrupted["attempts"] >= 1, interrupted
        assert f"POST /model/{model_id}/cancel" in interrupted["note"], interrupted
    assert trainer.resume_unfinished() == 2
