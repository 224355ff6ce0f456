"""The jobs a data owner has joined: its precomputed statistics for each, in memory.

Joining reads the owner's CSV for the job's columns and precomputes the encoded statistics, so
every later round costs the same whatever the number of rows. Nothing here outlives a restart:
the coordinator re-sends the job to an owner that no longer knows it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from common.crypto.paillier import PublicKey
from common.crypto.randomness import ObfuscatorPool
from common.dataset import load_columns
from common.protocol.errors import NotFound
from common.protocol.models import MODELS, check_binary_labels
from common.protocol.spec import JobSpec
from common.protocol.statistics import feature_sums
from data_owner.affine import EncryptedAffineMap


@dataclass(frozen=True)
class JoinedJob:
    """A job this owner takes part in, with what it precomputed for it.

    ``statistics`` answers gradient rounds, ``feature_sums`` statistics rounds, and ``pool``
    supplies the randomness of every ciphertext sent.
    """

    spec: JobSpec
    public_key: PublicKey
    statistics: EncryptedAffineMap
    feature_sums: tuple[int, ...]
    pool: ObfuscatorPool


class JobBook:
    """Thread-safe map of job id → :class:`JoinedJob`."""

    def __init__(self, data_path: str) -> None:
        self.data_path = data_path
        self._lock = threading.Lock()
        self._jobs: dict[str, JoinedJob] = {}

    def join(self, spec: JobSpec, public_key: PublicKey) -> JoinedJob:
        """Check the data against the job and precompute; raises DataError or EncodingOverflow."""
        features, labels = load_columns(self.data_path, spec.features, spec.label)
        if MODELS[spec.model].binary_labels:
            check_binary_labels(labels, self.data_path, spec.label)
        statistics = EncryptedAffineMap.prepare(spec, features, labels, self.data_path)
        sums = tuple(feature_sums(features, spec, self.data_path))
        pool = ObfuscatorPool(public_key, 2 * spec.reply_ciphertexts()).start()
        joined = JoinedJob(spec, public_key, statistics, sums, pool)
        with self._lock:
            previous = self._jobs.get(spec.job_id)
            self._jobs[spec.job_id] = joined
        if previous is not None:
            previous.pool.stop()
        return joined

    def get(self, job_id: str) -> JoinedJob:
        with self._lock:
            joined = self._jobs.get(job_id)
        if joined is None:
            raise NotFound(f"job {job_id} is unknown to this data owner")
        return joined

    def forget(self, job_id: str) -> bool:
        with self._lock:
            joined = self._jobs.pop(job_id, None)
        if joined is not None:
            joined.pool.stop()
        return joined is not None
