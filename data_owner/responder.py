"""A data owner's answer to a round: computed in its worker, sent to the coordinator.

The reply is the packed encrypted gradient (or, for a statistics round, the packed encrypted
feature sums). When no reply can be computed the owner says so at once, so the round does not
wait for it until its deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from common.crypto.bigint import mpz
from common.protocol.errors import FederatedError
from common.protocol.messages import Contribution, Refusal
from common.protocol.spec import STATISTICS
from common.protocol.statistics import encrypt_statistics
from common.protocol.wire import encode_ciphertexts
from common.service.app import Worker
from common.service.clients import CoordinatorClient
from data_owner.jobs import JoinedJob
from data_owner.processes import ProcessPool

logger = logging.getLogger(__name__)


class RoundResponder:
    """Computes and sends this owner's replies, one at a time, in its own worker thread."""

    def __init__(self, name: str, coordinator: CoordinatorClient, processes: ProcessPool) -> None:
        self.name = name
        self.coordinator = coordinator
        self.processes = processes
        self.worker = Worker("data-owner-rounds")

    def submit(
        self, joined: JoinedJob, round_number: int, attempt: int, kind: str, weights: Sequence[mpz] | None
    ) -> None:
        """Hand a round over to the worker; the request that brought it returns at once."""
        self.worker.submit(self.reply, joined, round_number, attempt, kind, weights)

    def reply(
        self, joined: JoinedJob, round_number: int, attempt: int, kind: str, weights: Sequence[mpz] | None
    ) -> None:
        """Send the round's reply, or a refusal saying why there is none."""
        job_id = joined.spec.job_id
        try:
            ciphertexts = self._compute(joined, kind, weights)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the round must not wait for us
            if isinstance(exc, FederatedError):
                reason = exc.message
                logger.warning("job %s round %d: no reply: %s", job_id, round_number, reason)
            else:
                reason = f"internal error ({type(exc).__name__})"
                logger.exception("job %s round %d: no reply: %s", job_id, round_number, reason)
            self._send(
                lambda: self.coordinator.refuse(
                    job_id, round_number, Refusal(data_owner=self.name, attempt=attempt, error=reason[:2000])
                )
            )
            return
        contribution = Contribution(
            data_owner=self.name,
            attempt=attempt,
            key_fingerprint=joined.public_key.fingerprint,
            ciphertexts=encode_ciphertexts(ciphertexts, joined.public_key),
        )
        self._send(lambda: self.coordinator.contribute(job_id, round_number, contribution))

    def _compute(self, joined: JoinedJob, kind: str, weights: Sequence[mpz] | None) -> list[mpz]:
        if kind == STATISTICS:
            return encrypt_statistics(joined.public_key, joined.feature_sums, joined.spec, joined.pool)
        assert weights is not None
        return joined.statistics.evaluate(
            joined.public_key, weights, joined.spec, joined.pool, self.processes.executor(), self.processes.parts
        )

    @staticmethod
    def _send(call: Callable[[], object]) -> None:
        try:
            call()
        except FederatedError as exc:
            logger.warning("the coordinator did not take our message: %s", exc.message)
