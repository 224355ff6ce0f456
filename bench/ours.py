"""The product's own round, in-process: the exact functions the three services call.

Model creator: fixed-point query encrypted with a warm :class:`~common.crypto.randomness.ObfuscatorPool`.
Coordinator: checks the weights message and relays it; later decodes (and validates) every
owner's reply and multiplies them with :func:`coordinator.policy.aggregate`. Data owner: decodes
the weights, :meth:`~data_owner.affine.EncryptedAffineMap.evaluate` with its own warm pool and a
:class:`~data_owner.processes.ProcessPool`, encodes its reply. Model creator again: decodes,
:meth:`~common.crypto.paillier.PrivateKey.raw_decrypt`, :func:`~common.crypto.packing.unpack_sum`.
Every message goes through :mod:`common.protocol.wire` and ``json`` as it would over HTTP.

The pools are filled before each timed round: in the services they are refilled by a background
thread between rounds, off the critical path. What one refill costs is measured separately
(:func:`pool_refill_seconds`).
"""

from __future__ import annotations

import json
import os

import numpy as np

from bench.federation import (
    DATA_BITS,
    DATA_FRAC_BITS,
    MAX_DATA_OWNERS,
    WEIGHT_BITS,
    WEIGHT_FRAC_BITS,
    Federation,
    GradientMismatch,
    KeyMaterial,
)
from bench.timing import RoundMeasurement, best_of
from common.crypto.bigint import mpz
from common.crypto.encoding import decode
from common.crypto.packing import unpack_sum
from common.crypto.paillier import PublicKey
from common.crypto.randomness import ObfuscatorPool
from common.protocol.spec import JobSpec
from common.protocol.wire import decode_ciphertexts, encode_ciphertexts
from coordinator.policy import aggregate
from data_owner.affine import EncryptedAffineMap
from data_owner.processes import ProcessPool


def job_spec(public_key: PublicKey, dimension: int) -> JobSpec:
    """Build the spec the model creator would open for ``dimension`` coefficients with its defaults.

    As in ``model_creator/training.py``: slots sized for DATA_BITS + DATA_FRAC_BITS + weight bits
    + WEIGHT_FRAC_BITS and MAX_DATA_OWNERS contributors, at the key's size.
    """
    return JobSpec.for_bounds(
        "bench",
        "linear_regression",
        [f"x{k}" for k in range(1, dimension)],
        "y",
        public_key,
        data_bits=DATA_BITS,
        data_frac_bits=DATA_FRAC_BITS,
        weight_bits=WEIGHT_BITS,
        weight_frac_bits=WEIGHT_FRAC_BITS,
        max_contributors=MAX_DATA_OWNERS,
    )


def pool_refill_seconds(public_key: PublicKey, count: int, repeats: int = 3) -> float:
    """Time filling an empty pool with ``count`` obfuscators in this thread (best of ``repeats``)."""
    # A fresh, empty pool each time: fill() stops as soon as the stock reaches its target.
    return min(best_of(ObfuscatorPool(public_key, count).fill, 1) for _ in range(repeats))


class OursRound:
    """One job of the product, ready to run rounds: statistics encoded, pools made."""

    def __init__(self, keys: KeyMaterial, federation: Federation, workers: int) -> None:
        self.keys = keys
        self.federation = federation
        self.workers = workers
        self.name = "ours" if workers <= 1 else "ours-mp"
        self.label = "ours (1 process)" if workers <= 1 else f"ours ({workers} processes)"
        public_key = keys.private_key.public_key
        self.public_key = public_key
        self.spec = job_spec(public_key, federation.dimension)
        self.maps = [
            EncryptedAffineMap.prepare(self.spec, owner.features, owner.labels, f"owner-{index}")
            for index, owner in enumerate(federation.owners)
        ]
        self.reply_count = self.spec.reply_ciphertexts()
        self.creator_pool = ObfuscatorPool(public_key, federation.dimension)
        self.owner_pools = [ObfuscatorPool(public_key, self.reply_count) for _ in federation.owners]
        # One pool of worker processes serves every in-process owner: on a 2-core machine, one per
        # owner would only oversubscribe the cores. ProcessPool(1) keeps the work in the caller.
        self.processes = ProcessPool(workers)

    @property
    def pool_misses(self) -> int:
        """Obfuscators computed inline because a pool was empty (0 when the pools were warm)."""
        return self.creator_pool.misses + sum(pool.misses for pool in self.owner_pools)

    def refill(self) -> None:
        for pool in (self.creator_pool, *self.owner_pools):
            pool.fill()

    def close(self) -> None:
        self.processes.shutdown()

    def run_round(self) -> RoundMeasurement:
        public_key, spec = self.public_key, self.spec
        dimension = self.federation.dimension
        measurement = RoundMeasurement(gradient=np.zeros(0))
        with measurement.phase("mc_encrypt"):
            encrypted = [public_key.raw_encrypt(q, self.creator_pool.take()) for q in self.federation.query]
            query_body = json.dumps(
                {
                    "round": 0,
                    "attempt": 1,
                    "key_fingerprint": public_key.fingerprint,
                    "encrypted_weights": encode_ciphertexts(encrypted, public_key),
                }
            )
        measurement.query_bytes = len(query_body.encode())
        with measurement.phase("tc_relay"):
            body = json.loads(query_body)
            public_key.check_fingerprint(body["key_fingerprint"], "body.key_fingerprint")
            decode_ciphertexts(body["encrypted_weights"], public_key, "body.encrypted_weights", dimension)
            relayed = json.dumps(body)
        replies = [
            measurement.owner(lambda index=index: self._owner_reply(index, relayed)) for index in range(len(self.maps))
        ]
        measurement.reply_bytes = len(replies[0].encode())
        measurement.reply_ciphertexts = self.reply_count
        with measurement.phase("tc_aggregate"):
            contributions = []
            for reply in replies:
                body = json.loads(reply)
                public_key.check_fingerprint(body["key_fingerprint"], "body.key_fingerprint")
                contributions.append(
                    decode_ciphertexts(body["ciphertexts"], public_key, "body.ciphertexts", self.reply_count)
                )
            summed = aggregate(public_key.nsquare, contributions)
            aggregate_body = json.dumps(
                {
                    "round": 0,
                    "attempt": 1,
                    "data_owners": [f"owner-{i}" for i in range(len(replies))],
                    "ciphertexts": encode_ciphertexts(summed, public_key),
                }
            )
        with measurement.phase("mc_decrypt"):
            body = json.loads(aggregate_body)
            ciphertexts = decode_ciphertexts(body["ciphertexts"], public_key, "body.ciphertexts", self.reply_count)
            measurement.gradient = decrypt_gradient(self.name, self.keys, spec, ciphertexts, self.federation)
        return measurement

    def _owner_reply(self, index: int, relayed: str) -> str:
        public_key = self.public_key
        body = json.loads(relayed)
        public_key.check_fingerprint(body["key_fingerprint"], "body.key_fingerprint")
        weights = decode_ciphertexts(
            body["encrypted_weights"], public_key, "body.encrypted_weights", self.federation.dimension
        )
        ciphertexts = self.maps[index].evaluate(
            public_key, weights, self.spec, self.owner_pools[index], self.processes.executor(), self.processes.parts
        )
        return json.dumps(
            {
                "data_owner": f"owner-{index}",
                "attempt": 1,
                "key_fingerprint": public_key.fingerprint,
                "ciphertexts": encode_ciphertexts(ciphertexts, public_key),
            }
        )


def decrypt_gradient(
    variant: str, keys: KeyMaterial, spec: JobSpec, ciphertexts: list[mpz], federation: Federation
) -> np.ndarray:
    """The model creator's side of a round: decrypt the aggregate, unpack it, decode the gradient.

    Raises :class:`GradientMismatch` unless every owner was counted once with all its rows.
    """
    plaintexts = [keys.private_key.raw_decrypt(c) for c in ciphertexts]
    contributors, values = unpack_sum(plaintexts, spec.layout, spec.reply_values(), f"{variant} round")
    if contributors != len(federation.owners) or values[0] != federation.total_rows:
        raise GradientMismatch(
            f"{variant}: decrypted {contributors} contributors and {values[0]} rows;"
            f" expected {len(federation.owners)} and {federation.total_rows}"
        )
    return np.asarray([float(decode(v, spec.gradient_frac_bits)) for v in values[1:]])


def all_cores() -> int:
    """Return the worker count the data owner's ProcessPool uses by default (WORKER_PROCESSES = None)."""
    return os.cpu_count() or 1
