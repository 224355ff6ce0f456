"""The model creator's side of training.

It opens a job at the coordinator, answers each aggregate with the next encrypted weights, and
records everything in the model store.

All of it runs in the model creator's worker thread; request handlers only check and hand over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from common.dataset import load_columns
from common.protocol.errors import Conflict, FederatedError, NotFound, UpstreamError
from common.service.http import PeerClient
from common.service.app import Worker
from common.protocol.wire import encode_ciphertexts
from model_creator.keystore import KeyStore
from model_creator.store import ModelStore
from model_creator.training import TrainingRequest, TrainingRun

logger = logging.getLogger(__name__)


class Trainer:
    """Starts jobs and moves them through their rounds."""

    def __init__(
        self, store: ModelStore, keys: KeyStore, client: PeerClient, worker: Worker, config: Mapping[str, Any]
    ) -> None:
        self.store = store
        self.keys = keys
        self.client = client
        self.worker = worker
        self.config = config
        self.coordinator = str(config["COORDINATOR_URL"]).rstrip("/")
        self._lock = threading.Lock()
        self._runs: dict[str, TrainingRun] = {}
        self._queued: dict[str, int] = {}

    def start(self, request: TrainingRequest) -> str:
        """Record a new model as pending and hand its job to the worker; returns its id."""
        model_id = self.store.create(request.to_json())
        self.worker.submit(self._open_job, model_id, request, on_error=lambda exc: self._fail(model_id, exc))
        return model_id

    def run(self, model_id: str) -> TrainingRun:
        with self._lock:
            run = self._runs.get(model_id)
        if run is None:
            raise NotFound(f"model {model_id} has no job in flight")
        return run

    def accept_aggregate(
        self,
        model_id: str,
        round_number: int,
        kind: str,
        ciphertexts: list,
        data_owners: list[str],
        failures: dict[str, str],
    ) -> None:
        """Queue a checked aggregate for the worker.

        An aggregate for another round than the awaited one, or a second one for it (a delivery
        repeated by the coordinator), is a conflict: no round is ever absorbed twice.
        """
        run = self.run(model_id)
        with self._lock:
            if round_number != run.round or kind != run.next_kind:
                raise Conflict(
                    f"model {model_id} awaits {run.next_kind} round {run.round}, not {kind} round {round_number}"
                )
            if self._queued.get(model_id) == round_number:
                raise Conflict(f"model {model_id} already has the aggregate of round {round_number}")
            self._queued[model_id] = round_number
        self.worker.submit(
            self._absorb,
            model_id,
            round_number,
            ciphertexts,
            data_owners,
            failures,
            on_error=lambda exc: self._fail(model_id, exc),
        )

    def accept_failure(self, model_id: str, error: str) -> None:
        self.run(model_id)
        self.worker.submit(self._fail, model_id, error)

    def resume_unfinished(self) -> int:
        """After a restart: continue every pending or running model at the round it awaited."""
        unfinished = self.store.unfinished()
        for model in unfinished:
            request = TrainingRequest(**model["request"])
            model_id = model["model_id"]
            logger.info("resuming model %s", model_id)
            self.worker.submit(
                self._open_job,
                model_id,
                request,
                model["state"],
                on_error=lambda exc, model_id=model_id: self._fail(model_id, exc),
            )
        return len(unfinished)

    def _open_job(self, model_id: str, request: TrainingRequest, state: dict[str, Any] | None = None) -> None:
        private_key = self.keys.private_key()
        validation = self._validation_data(request)
        run = TrainingRun(model_id, request, private_key, self.config, validation)
        if state is not None:
            run.restore(state)
        with self._lock:
            self._runs[model_id] = run
        try:
            self.client.post(
                f"{self.coordinator}/jobs",
                {
                    "spec": run.spec.to_json(),
                    "public_key": private_key.public_key.to_json(),
                    "callback_url": str(self.config["PUBLIC_URL"]).rstrip("/"),
                },
            )
        except UpstreamError as exc:
            if exc.peer_status != 409:  # 409: a resumed job the coordinator already has
                raise
        self.store.set_running(model_id, private_key.public_key.fingerprint, run.state())
        logger.info(
            "model %s: job opened at the coordinator (%d coefficients, %d slots per ciphertext)",
            model_id,
            run.spec.dimension,
            run.spec.layout.slots_per_ciphertext,
        )
        self._send_round(run)

    def _validation_data(self, request: TrainingRequest):
        path = self.config.get("TEST_DATA")
        if not path:
            return None
        return load_columns(path, request.features, request.label)

    def _send_round(self, run: TrainingRun) -> None:
        message = run.round_message()
        if "encrypted_weights" in message:
            message["encrypted_weights"] = encode_ciphertexts(message["encrypted_weights"], run.private_key.public_key)
        self.client.post(f"{self.coordinator}/jobs/{run.spec.job_id}/rounds", message)

    def _absorb(
        self, model_id: str, round_number: int, ciphertexts: list, data_owners: list[str], failures: dict[str, str]
    ) -> None:
        run = self.run(model_id)
        if run.round != round_number:
            logger.warning(
                "model %s: aggregate of round %d ignored, round %d awaited", model_id, round_number, run.round
            )
            return
        record = run.absorb(ciphertexts, data_owners, failures)
        self.store.record_round(model_id, asdict(record), run.state())
        logger.info(
            "model %s round %d (%s): %d contributor(s)", model_id, record.round, record.kind, record.contributors
        )
        if not run.done:
            self._send_round(run)
            return
        self.store.finish(model_id, run.result())
        logger.info("model %s finished after %d round(s): %s", model_id, run.round, run.optimizer.stop_reason)
        self._close(model_id, "finished", None)

    def _fail(self, model_id: str, error: Exception | str) -> None:
        message = error.message if isinstance(error, FederatedError) else str(error)
        if not isinstance(error, (str, FederatedError)):
            message = f"internal error: {type(error).__name__}: {error}"
        self.store.fail(model_id, message)
        logger.error("model %s failed: %s", model_id, message)
        self._close(model_id, "failed", message)

    def _close(self, model_id: str, status: str, error: str | None) -> None:
        with self._lock:
            run = self._runs.pop(model_id, None)
            self._queued.pop(model_id, None)
        if run is not None:
            run.close()
        try:
            self.client.post(f"{self.coordinator}/jobs/{model_id}/finish", {"status": status, "error": error})
        except UpstreamError as exc:
            logger.warning("could not close job %s at the coordinator: %s", model_id, exc.message)
