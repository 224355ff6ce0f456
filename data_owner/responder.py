"""A data owner's answer to a round: admitted at once, computed in its worker, sent to the TC.

Admission (:meth:`RoundResponder.admit`, in the request) applies the policy to the round and its
member set before anything is computed: the round limit, every member's signed job key (and the
identity key this owner first saw under each name), ``min_peers`` and the differencing guard; the
member set is written to the ledger before the contribution can leave. A refusal is answered
there and then, as a code.

The reply (:meth:`RoundResponder.reply`, in the worker) is the packed encrypted gradient (or, for
a statistics round, the packed encrypted feature sums; for the moments round of a one-shot job,
the packed encrypted statistics themselves), with this owner's pairwise masks added to
its plaintext constants, so that only the sum over the whole member set can be decrypted. When no
reply can be computed the owner says so at once with a coded refusal, so the round does not wait
for it until its deadline.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.crypto.bigint import mpz
from common.crypto.identity import canonical
from common.crypto.masking import MaskContext, member_masks
from common.protocol.errors import (
    EncodingOverflow,
    FederatedError,
    Forbidden,
    Refused,
    StorageUnavailable,
    is_transient,
)
from common.protocol.messages import Contribution, Refusal, RoundRequest, ciphertexts_under
from common.protocol.moments import moment_values
from common.protocol.spec import GRADIENT, MOMENTS, STATISTICS
from common.protocol.statistics import encrypt_statistics
from common.protocol.wire import encode_ciphertexts
from common.service.app import Worker
from common.service.clients import CoordinatorClient
from data_owner.jobs import JoinedJob
from data_owner.ledger import Ledger
from data_owner.policy import OwnerPolicy, check_members, check_round
from data_owner.processes import ProcessPool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdmittedRound:
    """A round this owner agreed to answer: its request, decoded weights and masks."""

    joined: JoinedJob
    round: int
    attempt: int
    kind: str
    weights: Sequence[mpz] | None
    masks: list[int]


class RoundResponder:
    """Admits rounds, then computes and sends this owner's replies one at a time in its worker."""

    def __init__(
        self,
        name: str,
        coordinator: CoordinatorClient,
        processes: ProcessPool,
        policy: OwnerPolicy,
        ledger: Ledger,
        delivery_seconds: float = 120.0,
    ) -> None:
        self.name = name
        self.coordinator = coordinator
        self.processes = processes
        self.policy = policy
        self.ledger = ledger
        self.delivery_seconds = delivery_seconds
        self.worker = Worker("data-owner-rounds")

    def admit(self, joined: JoinedJob, request: RoundRequest) -> AdmittedRound:
        """Check a round against the policy and its member set; the masks it will carry.

        Raises
        ------
        Refused
            With the policy's code; the details are logged and kept in the ledger here.
        """
        spec, public_key = joined.spec, joined.public_key
        public_key.check_fingerprint(request.key_fingerprint, "body.key_fingerprint")
        spec.check_round_kind(request.kind, "body.kind")
        weights = None
        if request.kind == GRADIENT and request.encrypted_weights is not None:
            weights = ciphertexts_under(request.encrypted_weights, public_key, "body.encrypted_weights", spec.dimension)
        try:
            masks = self._masks(joined, request)
        except Refused as refusal:
            logger.info(
                "refused round %d of job %s: %s: %s", request.round, spec.job_id, refusal.message, refusal.detail
            )
            self.ledger.record_event(
                spec.job_id, "refused", request.round, refusal.code, refusal.column, refusal.detail
            )
            raise
        return AdmittedRound(joined, request.round, request.attempt, request.kind, weights, masks)

    def _masks(self, joined: JoinedJob, request: RoundRequest) -> list[int]:
        spec, public_key = joined.spec, joined.public_key
        check_round(self.policy, request.round)
        names = [member.name for member in request.members]
        for member in request.members:
            try:
                member.verify(spec.job_id, public_key.fingerprint)
            except Forbidden as exc:
                raise Refused("policy:members", detail=exc.message) from None
        own = [member for member in request.members if member.name == self.name]
        if len(own) != 1 or own[0] != joined.member:
            raise Refused("policy:members", detail="the member list does not carry this owner's own job key")
        identities = {member.name: member.identity_key for member in request.members}
        known = self.ledger.peer_identities(names)
        changed = sorted(name for name, key in known.items() if identities[name] != key)
        if changed:
            raise Refused("policy:identity", detail=f"other identity keys than first seen for {', '.join(changed)}")
        served = self.ledger.served_sets(public_key.fingerprint)
        member_set = check_members(self.policy, self.name, names, served)
        if len(known) < len(identities):
            self.ledger.remember_peers({name: key for name, key in identities.items() if name not in known})
        digest = request_digest(request)
        if not self.ledger.admit(
            spec.job_id, digest, self.policy.max_rounds, public_key.fingerprint, member_set, request.round
        ):
            raise Refused("policy:max_rounds", detail=f"more than {self.policy.max_rounds} distinct round requests")
        count = spec.reply_ciphertexts(request.kind)
        if len(member_set) == 1:
            return [0] * count
        context = MaskContext(
            job_id=spec.job_id,
            round=request.round,
            attempt=request.attempt,
            kind=request.kind,
            key_fingerprint=public_key.fingerprint,
            members=tuple(sorted(member_set)),
            request=digest,
        )
        peers = {member.name: member.job_key for member in request.members if member.name != self.name}
        return member_masks(self.name, joined.job_keys, peers, context, int(public_key.n), count)

    def submit(self, admitted: AdmittedRound) -> None:
        """Hand an admitted round over to the worker; the request that brought it returns at once."""
        self.worker.submit(self.reply, admitted)

    def reply(self, admitted: AdmittedRound) -> None:
        """Send the round's reply, or a coded refusal saying why there is none.

        The contribution leaves only once its event is in the ledger. When the ledger cannot be
        written (a full disk), recording and sending are tried again with the reply's delivery
        (:meth:`_send`), so a fault that ends in time costs the round nothing; one that outlasts
        ``delivery_seconds`` gets the round a refusal (``internal``), rather than leaving it to
        wait out its deadline for a reply that never comes.
        """
        joined = admitted.joined
        job_id = joined.spec.job_id
        try:
            ciphertexts = self._compute(admitted)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the round must not wait for us
            self._refuse(admitted, exc)
            return
        contribution = Contribution(
            data_owner=self.name,
            attempt=admitted.attempt,
            key_fingerprint=joined.public_key.fingerprint,
            ciphertexts=encode_ciphertexts(ciphertexts, joined.public_key),
        )
        recorded = False

        def record_and_contribute() -> None:
            nonlocal recorded
            if not recorded:
                self.ledger.record_event(job_id, "contributed", admitted.round, detail=f"attempt {admitted.attempt}")
                recorded = True
            self.coordinator.contribute(job_id, admitted.round, contribution)

        def unrecorded(error: FederatedError) -> None:
            if not recorded:
                self._refuse(admitted, error)

        self._send(record_and_contribute, f"job {job_id} round {admitted.round}: the contribution", unrecorded)

    def _refuse(self, admitted: AdmittedRound, error: Exception) -> None:
        """Tell the coordinator that this round gets no reply, with the code ``error`` maps to.

        The refusal's own event may not reach the ledger (a full disk): it is then lost, with a
        warning; the events are the owner's status record, never what its policy rests on.
        """
        job_id = admitted.joined.spec.job_id
        refusal = _as_refusal(error)
        if isinstance(error, FederatedError):
            logger.warning("job %s round %d: no reply: %s", job_id, admitted.round, refusal.detail)
        else:
            logger.error("job %s round %d: no reply", job_id, admitted.round, exc_info=error)
        try:
            self.ledger.record_event(job_id, "refused", admitted.round, refusal.code, refusal.column, refusal.detail)
        except StorageUnavailable as fault:
            logger.warning(
                "job %s round %d: the refusal is not in the ledger: %s", job_id, admitted.round, fault.message
            )
        message = Refusal(data_owner=self.name, attempt=admitted.attempt, code=refusal.code, column=refusal.column)
        self._send(
            lambda: self.coordinator.refuse(job_id, admitted.round, message),
            f"job {job_id} round {admitted.round}: the refusal",
        )

    def _compute(self, admitted: AdmittedRound) -> list[mpz]:
        joined = admitted.joined
        if admitted.kind == STATISTICS:
            return encrypt_statistics(joined.public_key, joined.feature_sums, joined.spec, joined.pool, admitted.masks)
        if admitted.kind == MOMENTS:
            statistics = joined.statistics
            values = moment_values(statistics.matrix, statistics.offset, statistics.row_count)
            return encrypt_statistics(joined.public_key, values, joined.spec, joined.pool, admitted.masks)
        assert admitted.weights is not None
        return joined.statistics.evaluate(
            joined.public_key,
            admitted.weights,
            joined.spec,
            joined.pool,
            self.processes.executor(),
            self.processes.parts,
            admitted.masks,
        )

    def _send(
        self,
        call: Callable[[], object],
        what: str,
        on_give_up: Callable[[FederatedError], None] | None = None,
        deadline: float | None = None,
        delay: float = 1.0,
    ) -> None:
        """Send a reply, trying again while a transient fault keeps it from the coordinator.

        A reply the coordinator cannot take now (it answers 503, or is not reached after the
        client's own retries) or that this owner cannot record first, in its ledger or its audit
        (it is then not sent), is tried again after ``delay`` seconds, doubling up to 8, until it is taken, the
        coordinator refuses it for good (a closed attempt is a 409), or ``delivery_seconds``
        have passed since the first try: otherwise the round would wait for it until its
        deadline. The waits are timers, so the worker goes on with other rounds meanwhile.
        ``on_give_up`` is called with the last transient fault when the time is up.
        """
        if deadline is None:
            deadline = time.monotonic() + self.delivery_seconds
        try:
            call()
        except FederatedError as exc:
            own_storage = isinstance(exc, StorageUnavailable) and exc.peer is None
            cause = f"this owner could not record it first ({exc.message})" if own_storage else exc.message
            if is_transient(exc) and time.monotonic() + delay < deadline:
                logger.warning("%s was not delivered: %s; trying again in %g s", what, cause, delay)
                retry = threading.Timer(delay, self._resend, (call, what, on_give_up, deadline, min(2 * delay, 8.0)))
                retry.daemon = True
                retry.start()
                return
            logger.warning("%s was not delivered, and is given up: %s", what, cause)
            if on_give_up is not None and is_transient(exc):
                on_give_up(exc)

    def _resend(
        self,
        call: Callable[[], object],
        what: str,
        on_give_up: Callable[[FederatedError], None] | None,
        deadline: float,
        delay: float,
    ) -> None:
        """A retry's timer: the next try goes to the worker, unless this owner is stopping."""
        try:
            self.worker.submit(self._send, call, what, on_give_up, deadline, delay)
        except RuntimeError:
            logger.info("%s is not tried again: this owner is stopping", what)


def request_digest(request: RoundRequest) -> str:
    """SHA-256 of what a round asks: its kind and encrypted weights (bound into the masks)."""
    asked = {"purpose": "federated_trainer/round-request/v1", "kind": request.kind}
    asked["encrypted_weights"] = ",".join(request.encrypted_weights or [])
    return hashlib.sha256(canonical(asked)).hexdigest()


def _as_refusal(error: Exception) -> Refused:
    """What a failure to compute a reply may tell others: a code (details stay in ``detail``)."""
    if isinstance(error, Refused):
        return error
    if isinstance(error, EncodingOverflow):
        return Refused("bound_exceeded", detail=error.message)
    detail = error.message if isinstance(error, FederatedError) else f"{type(error).__name__}: {error}"
    return Refused("internal", detail=detail)
