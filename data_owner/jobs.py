"""The jobs a data owner has joined: its precomputed statistics and its job key for each.

Joining first applies the owner's policy (data_owner/policy.py): the model creator key it trusts,
the key size, the models, columns and weight width it allows. Then it reads the owner's CSV for
the job's columns and precomputes the encoded statistics, so every later round costs the same
whatever the number of rows, and makes the job's ephemeral X25519 key, signed with the owner's
identity key, for the pairwise masks. The precomputed job lives in memory: after a restart the
coordinator joins the owner again, which gives it a new job key (and so fresh masks).

An owner that protects its rows with differential privacy precomputes from its job's release
instead (data_owner/privacy.py): clipped, noised once, charged to its budget and stored, so that a
job joined again after a restart gets the same noisy statistics.

Every refusal is a :class:`~common.protocol.errors.Refused`: a code and the job column concerned,
nothing else; its details go to this owner's log and ledger only.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from common.crypto.identity import IdentityKey
from common.crypto.masking import JobKeyPair
from common.crypto.packing import check_values
from common.crypto.paillier import PublicKey
from common.crypto.randomness import ObfuscatorPool, obfuscator_maker
from common.dataset import load_columns
from common.protocol.errors import DataError, EncodingOverflow, NotFound, Refused
from common.protocol.messages import MemberKey, PrivacyDeclaration
from common.protocol.models import MODELS, FloatArray, check_binary_labels
from common.protocol.spec import MOMENTS, JobSpec
from common.protocol.statistics import feature_sums
from data_owner.affine import EncryptedAffineMap
from data_owner.ledger import Ledger
from data_owner.policy import OwnerPolicy, check_job, check_key
from data_owner.privacy import PrivacyGuard

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JoinedJob:
    """A job this owner takes part in, with what it precomputed for it.

    ``statistics`` answers gradient rounds and moments rounds (the one place this owner's
    statistics for the job are kept), ``feature_sums`` statistics rounds, ``pool``
    supplies the randomness of every ciphertext sent, ``job_keys`` and ``member`` are this owner's
    ephemeral key pair for the job and its signed public half.
    """

    spec: JobSpec
    public_key: PublicKey
    statistics: EncryptedAffineMap
    feature_sums: tuple[int, ...]
    pool: ObfuscatorPool
    job_keys: JobKeyPair
    member: MemberKey


class JobBook:
    """Thread-safe map of job id → :class:`JoinedJob`, and the policy every join passes."""

    def __init__(self, data_path: str, name: str, policy: OwnerPolicy, ledger: Ledger, identity: IdentityKey) -> None:
        self.data_path = data_path
        self.name = name
        self.policy = policy
        self.ledger = ledger
        self.identity = identity
        self.privacy = PrivacyGuard(policy, ledger) if policy.private else None
        self._lock = threading.Lock()
        self._jobs: dict[str, JoinedJob] = {}

    def trusted_key(self) -> str | None:
        """The fingerprint of the model creator key this owner computes for (``None``: none yet)."""
        if self.policy.model_creator_key is not None:
            return self.policy.model_creator_key
        trusted = self.ledger.trusted_key()
        return None if trusted is None else str(trusted["fingerprint"])

    def join(self, spec: JobSpec, public_key: PublicKey) -> JoinedJob:
        """Apply the policy, check the data against the job and precompute.

        Raises
        ------
        Refused
            With the code and column of what stops this owner; the details are logged here.
        """
        try:
            joined = self._join(spec, public_key)
        except Refused as refusal:
            logger.info("refused job %s: %s: %s", spec.job_id, refusal.message, refusal.detail)
            self.ledger.record_event(spec.job_id, "refused", None, refusal.code, refusal.column, refusal.detail)
            raise
        self.ledger.record_event(spec.job_id, "joined", detail=f"{spec.model} on {len(spec.features)} features")
        with self._lock:
            previous = self._jobs.get(spec.job_id)
            self._jobs[spec.job_id] = joined
        if previous is not None:
            previous.pool.stop()
        return joined

    def _join(self, spec: JobSpec, public_key: PublicKey) -> JoinedJob:
        trusted = self.trusted_key()
        check_key(self.policy, public_key, trusted)
        check_job(self.policy, spec)
        try:
            features, labels = load_columns(self.data_path, spec.features, spec.label)
            if MODELS[spec.model].binary_labels:
                check_binary_labels(labels, self.data_path, spec.label)
            if self.privacy is None:
                statistics = EncryptedAffineMap.prepare(spec, features, labels, self.data_path)
                sums = tuple(feature_sums(features, spec, self.data_path))
                privacy = None
            else:
                statistics, sums, privacy = self._private(spec, public_key, features, labels)
        except DataError as exc:
            raise Refused(exc.code, exc.column, exc.message) from None
        except EncodingOverflow as exc:
            raise Refused("bound_exceeded", None, exc.message) from None
        if trusted is None:
            trusted = self.ledger.trust(public_key.fingerprint, public_key.bits, "trusted on first use")
            check_key(self.policy, public_key, trusted)
            logger.warning(
                "trusting the model creator key %s on first use (pin one with --model-creator-key)",
                public_key.fingerprint,
            )
        job_keys = JobKeyPair.generate()
        member = MemberKey.signed(self.name, self.identity, job_keys, spec.job_id, public_key.fingerprint, privacy)
        # Stock for two gradient rounds; a one-shot job has only its one moments round.
        stock = spec.reply_ciphertexts(MOMENTS) if spec.protocol == "one_shot" else 2 * spec.reply_ciphertexts()
        pool = ObfuscatorPool(public_key, stock, obfuscator_maker(public_key, spec.randomness)).start()
        return JoinedJob(spec, public_key, statistics, sums, pool, job_keys, member)

    def _private(
        self, spec: JobSpec, public_key: PublicKey, features: FloatArray, labels: FloatArray
    ) -> tuple[EncryptedAffineMap, tuple[int, ...], PrivacyDeclaration]:
        """The job's statistics from its release: clipped, noised once, charged, stored."""
        assert self.privacy is not None
        release = self.privacy.release(spec, public_key.fingerprint, features, labels)
        encoded = release.encoded(spec)
        source = f"{self.data_path} (private release)"
        statistics = EncryptedAffineMap.of_encoded(spec, encoded.matrix, encoded.offset, encoded.row_count, source)
        check_values(list(encoded.feature_sums), spec.layout, f"{source}: feature statistics")
        return statistics, encoded.feature_sums, release.declaration

    def get(self, job_id: str) -> JoinedJob:
        with self._lock:
            joined = self._jobs.get(job_id)
        if joined is None:
            raise NotFound(f"job {job_id} is unknown to this data owner")
        return joined

    def job_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._jobs)

    def forget(self, job_id: str) -> bool:
        with self._lock:
            joined = self._jobs.pop(job_id, None)
        if joined is not None:
            joined.pool.stop()
        return joined is not None
