"""A data owner's answer to a round: computed in the worker, sent to the coordinator.

The reply is the packed encrypted gradient (or, for a statistics round, the packed encrypted
feature sums). When no reply can be computed the owner says so at once, so the round does not
wait for it until its deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from common.protocol.errors import FederatedError, UpstreamError
from common.service.http import PeerClient
from data_owner.processes import ProcessPool
from common.protocol.spec import STATISTICS
from common.protocol.statistics import encrypt_statistics
from common.protocol.wire import encode_ciphertexts
from data_owner.jobs import JoinedJob

logger = logging.getLogger(__name__)


class RoundResponder:
    """Computes and sends this owner's replies, with its credential."""

    def __init__(self, config: Mapping[str, Any], client: PeerClient, processes: ProcessPool, enrolment) -> None:
        self.name = config["NAME"]
        self.coordinator = str(config["COORDINATOR_URL"]).rstrip("/")
        self.client = client
        self.processes = processes
        self.enrolment = enrolment

    def reply(self, joined: JoinedJob, round_number: int, attempt: int, kind: str, weights: list | None) -> None:
        """Send the round's reply, or a refusal saying why there is none."""
        round_url = f"{self.coordinator}/jobs/{joined.spec.job_id}/rounds/{round_number}"
        try:
            ciphertexts = self._compute(joined, kind, weights)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the round must not wait for us
            reason = exc.message if isinstance(exc, FederatedError) else f"internal error ({type(exc).__name__})"
            logger.exception("job %s round %d: no reply: %s", joined.spec.job_id, round_number, reason)
            self._post(f"{round_url}/refusals", {"data_owner": self.name, "attempt": attempt, "error": reason})
            return
        self._post(
            f"{round_url}/contributions",
            {
                "data_owner": self.name,
                "attempt": attempt,
                "key_fingerprint": joined.public_key.fingerprint,
                "ciphertexts": encode_ciphertexts(ciphertexts, joined.public_key),
            },
        )

    def _compute(self, joined: JoinedJob, kind: str, weights: list | None) -> list:
        if kind == STATISTICS:
            return encrypt_statistics(joined.public_key, joined.feature_sums, joined.spec, joined.pool)
        return joined.statistics.evaluate(
            joined.public_key, weights, joined.spec, joined.pool, self.processes.executor(), self.processes.parts
        )

    def _post(self, url: str, payload: dict[str, Any]) -> None:
        try:
            self.client.post(url, payload, token=self.enrolment.credential)
        except UpstreamError as exc:
            logger.warning("the coordinator did not take our message: %s", exc.message)
