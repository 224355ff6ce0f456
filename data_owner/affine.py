"""A data owner's encrypted gradient: the affine map g_i(w) = A_i w − b_i on encrypted weights.

The data owner encodes ``A_i`` and ``b_i`` once per job (:meth:`EncryptedAffineMap.prepare`);
each round then costs d² ciphertext-by-integer products and a few packing squarings, whatever the
number of rows. Nothing is ever decrypted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.crypto.bigint import mpz
from common.crypto.encoding import encode_array
from common.crypto.packing import check_values, pack_encrypted
from common.crypto.paillier import PublicKey
from common.crypto.randomness import ObfuscatorPool
from common.protocol.errors import EncodingOverflow, ProtocolViolation
from common.protocol.models import MODELS
from common.protocol.scales import scaled_columns
from common.protocol.spec import JobSpec
from data_owner.multiexp import MatrixPowerPlan


@dataclass(frozen=True)
class EncryptedAffineMap:
    """One data owner's fixed-point statistics for one job.

    Attributes
    ----------
    matrix
        ``round(A_i · 2**data_frac_bits)``, row by row.
    offset
        ``round(b_i · 2**(data_frac_bits + weight_frac_bits))``, at the gradient's scale.
    row_count
        The owner's number of rows, summed encrypted so the model creator can average.
    plan
        The multi-exponentiation schedule of ``matrix``, recoded once per job.
    """

    matrix: tuple[tuple[int, ...], ...]
    offset: tuple[int, ...]
    row_count: int
    plan: MatrixPowerPlan

    @classmethod
    def prepare(
        cls, spec: JobSpec, features: npt.NDArray[np.float64], labels: npt.NDArray[np.float64], source: str
    ) -> EncryptedAffineMap:
        """Precompute and encode the statistics, refusing any that could overflow a slot.

        The columns are first scaled by the job's powers of two (common/protocol/scales.py). The
        overflow check uses the largest weight the job allows, so a round can never overflow
        later, whatever weights the model creator sends.
        """
        features, labels = scaled_columns(spec.feature_scales, spec.label_scale, features, labels)
        gram, moment = MODELS[spec.model].statistics(features, labels)
        bound_bits = spec.layout.value_bits
        matrix_bits = bound_bits - spec.weight_bits - spec.weight_frac_bits
        matrix = encode_array(gram, spec.data_frac_bits, matrix_bits, f"{source}: XᵀX")
        dimension = spec.dimension
        offset = encode_array(moment, spec.gradient_frac_bits, bound_bits, f"{source}: Xᵀy")
        rows = tuple(tuple(matrix[i * dimension : (i + 1) * dimension]) for i in range(dimension))
        return cls.of_encoded(spec, rows, tuple(offset), int(len(labels)), source)

    @classmethod
    def of_encoded(
        cls,
        spec: JobSpec,
        rows: tuple[tuple[int, ...], ...],
        offset: tuple[int, ...],
        row_count: int,
        source: str,
    ) -> EncryptedAffineMap:
        """The map of statistics already encoded (a private release's), refusing any that could overflow."""
        weight_limit = 1 << (spec.weight_bits + spec.weight_frac_bits)
        worst_case = [sum(abs(a) for a in row) * weight_limit + abs(b) for row, b in zip(rows, offset, strict=True)]
        try:
            check_values([row_count, *worst_case], spec.layout, f"{source}: gradient bound")
        except EncodingOverflow as exc:
            raise EncodingOverflow(f"{exc.message}; the data are too large for the job's slot layout") from exc
        return cls(rows, offset, row_count, MatrixPowerPlan.for_matrix(rows))

    def evaluate(
        self,
        public_key: PublicKey,
        encrypted_weights: Sequence[mpz],
        spec: JobSpec,
        pool: ObfuscatorPool | None = None,
        executor: Executor | None = None,
        parts: int = 1,
        masks: Sequence[int] | None = None,
    ) -> list[mpz]:
        """E(row count) and E(A_i w − b_i), packed into the job's layout, masked, re-randomised.

        ``pool`` supplies the re-randomisers made ahead of time; the other arguments are
        :meth:`product`'s.
        """
        packed = self.product(public_key, encrypted_weights, spec, executor, parts, masks)
        return [public_key.rerandomise(c, pool.take() if pool else None) for c in packed]

    def product(
        self,
        public_key: PublicKey,
        encrypted_weights: Sequence[mpz],
        spec: JobSpec,
        executor: Executor | None = None,
        parts: int = 1,
        masks: Sequence[int] | None = None,
    ) -> list[mpz]:
        """The round's homomorphic work before re-randomisation: the product, packed and masked.

        ``executor`` and ``parts`` split the matrix–vector product over workers; ``masks`` are
        this owner's pairwise masks, one per packed ciphertext (PROTOCOL.md section 9). These
        ciphertexts are never sent as they are: they are deterministic in the weights and A_i.
        """
        if len(encrypted_weights) != len(self.offset):
            raise ProtocolViolation(f"expected {len(self.offset)} encrypted weights, got {len(encrypted_weights)}")
        nsquare = public_key.nsquare
        products = self.plan.evaluate(encrypted_weights, nsquare, executor, parts)
        gradient = [public_key.raw_add_constant(product, -b) for product, b in zip(products, self.offset, strict=True)]
        values = [public_key.raw_constant(self.row_count), *gradient]
        return pack_encrypted(public_key, values, spec.layout, masks)
