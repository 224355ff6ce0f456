"""Baseline: the same gradient round with TenSEAL's CKKS vectors (never used by the product).

The model creator encrypts w as one CKKS vector; each data owner computes E(A_i w − b_i) with one
encrypted-vector-by-plain-matrix product (rotations with the Galois keys), and E(n_i); the
coordinator adds the owners' vectors; the model creator decrypts. Messages carry TenSEAL's
serialisation in base64 inside JSON, as ours carry ciphertext bytes. The owners and the
coordinator hold the public context only (no secret key).

Parameters: polynomial degree 8192 with a 200-bit coefficient modulus [60, 40, 40, 60] and scale
2**40, which the HE standard (Albrecht et al., "Homomorphic Encryption Security Standard", 2018,
table 1: at most 218 bits for degree 8192) puts at 128-bit security: matched with 3072-bit
Paillier. CKKS is approximate, so its gradient is checked against numpy with
:data:`CKKS_RELATIVE_TOLERANCE`, not the exact schemes' tolerance; and a CKKS reply is not
re-randomised (no circuit privacy), which ours and phe's are.
"""

from __future__ import annotations

import base64
import json

import numpy as np

from bench.federation import Federation, GradientMismatch, KeyMaterial
from bench.timing import RoundMeasurement

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 40, 60)
GLOBAL_SCALE_BITS = 40
# CKKS decrypts an approximation: its error relative to the gradient's size stays far below this.
CKKS_RELATIVE_TOLERANCE = 1e-5


def tenseal_available() -> str | None:
    """``None`` when TenSEAL imports here, else why not (it has no wheel for every Python)."""
    try:
        import tenseal  # noqa: F401
    except ImportError as exc:
        return f"TenSEAL does not import: {exc}"
    return None


def _text(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


def _blob(text: str) -> bytes:
    return base64.b64decode(text)


class CkksRound:
    """One round of the product's protocol (A_i and b_i once per job) on TenSEAL CKKS vectors."""

    name = "tenseal-ckks"
    label = "TenSEAL CKKS"
    tolerance = CKKS_RELATIVE_TOLERANCE

    def __init__(self, keys: KeyMaterial, federation: Federation) -> None:
        import tenseal as ts

        self.ts = ts
        self.federation = federation
        context = ts.context(
            ts.SCHEME_TYPE.CKKS, poly_modulus_degree=POLY_MODULUS_DEGREE, coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES)
        )
        context.global_scale = 2**GLOBAL_SCALE_BITS
        context.generate_galois_keys()
        self.secret_context = context
        # What the model creator sends the others once per job: the context without its secret key.
        public = context.copy()
        public.make_context_public()
        self.public_context = ts.context_from(public.serialize())
        self.grams = [owner.gram.tolist() for owner in federation.owners]
        self.moments = [owner.moment.tolist() for owner in federation.owners]

    def refill(self) -> None:
        """Prepare nothing: TenSEAL makes its randomness when it encrypts."""

    def close(self) -> None:
        """Nothing to release."""

    def run_round(self) -> RoundMeasurement:
        ts = self.ts
        measurement = RoundMeasurement(gradient=np.zeros(0))
        with measurement.phase("mc_encrypt"):
            encrypted = ts.ckks_vector(self.secret_context, list(self.federation.weights))
            query_body = json.dumps({"round": 0, "encrypted_weights": _text(encrypted.serialize())})
        measurement.query_bytes = len(query_body.encode())
        with measurement.phase("tc_relay"):
            relayed = json.dumps(json.loads(query_body))
        replies = [
            measurement.owner(lambda index=index: self._owner_reply(index, relayed))
            for index in range(len(self.federation.owners))
        ]
        measurement.reply_bytes = len(replies[0].encode())
        measurement.reply_ciphertexts = 2
        with measurement.phase("tc_aggregate"):
            gradient_sum = count_sum = None
            for reply in replies:
                message = json.loads(reply)
                gradient = ts.ckks_vector_from(self.public_context, _blob(message["gradient"]))
                count = ts.ckks_vector_from(self.public_context, _blob(message["row_count"]))
                gradient_sum = gradient if gradient_sum is None else gradient_sum + gradient
                count_sum = count if count_sum is None else count_sum + count
            assert gradient_sum is not None and count_sum is not None
            aggregate_body = json.dumps(
                {"gradient": _text(gradient_sum.serialize()), "row_count": _text(count_sum.serialize())}
            )
        with measurement.phase("mc_decrypt"):
            message = json.loads(aggregate_body)
            gradient = ts.ckks_vector_from(self.secret_context, _blob(message["gradient"])).decrypt()
            row_count = ts.ckks_vector_from(self.secret_context, _blob(message["row_count"])).decrypt()[0]
        if round(row_count) != self.federation.total_rows:
            raise GradientMismatch(
                f"{self.name}: decrypted row count {row_count}, expected {self.federation.total_rows}"
            )
        measurement.gradient = np.asarray(gradient, dtype=np.float64)
        return measurement

    def _owner_reply(self, index: int, relayed: str) -> str:
        ts = self.ts
        weights = ts.ckks_vector_from(self.public_context, _blob(json.loads(relayed)["encrypted_weights"]))
        # wᵀA_i = (A_i w)ᵀ, A_i being symmetric.
        gradient = weights.matmul(self.grams[index]) - self.moments[index]
        row_count = ts.ckks_vector(self.public_context, [float(self.federation.owners[index].row_count)])
        return json.dumps(
            {
                "data_owner": f"owner-{index}",
                "gradient": _text(gradient.serialize()),
                "row_count": _text(row_count.serialize()),
            }
        )
