"""Secure feature statistics: global means and standard deviations from encrypted sums.

Each data owner contributes, packed and encrypted under the model creator's key, its row count
and per-feature sums and sums of squares; the coordinator aggregates them like gradients, so the
model creator learns only the global mean and standard deviation of each feature, and no party
learns any owner's own sums or count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from common.crypto.bigint import mpz
from common.crypto.encoding import decode, encode_array
from common.crypto.packing import check_values, pack_plain
from common.crypto.paillier import PublicKey
from common.crypto.randomness import ObfuscatorPool
from common.protocol.errors import ProtocolViolation, TrainingError
from common.protocol.scales import scaled_columns
from common.protocol.spec import JobSpec

CONSTANT_TOLERANCE = Fraction(1, 10**10)


def feature_sums(features: npt.NDArray[np.float64], spec: JobSpec, source: str) -> list[int]:
    """``[row count, Σx_k for each feature, Σx_k² for each feature]``, sums at ``2**data_frac_bits``.

    The features are those of the job's scales (common/protocol/scales.py), as in its statistics.
    """
    features, _ = scaled_columns(spec.feature_scales, 0, features, np.zeros(0))
    bound = spec.layout.value_bits
    sums = encode_array(features.sum(axis=0), spec.data_frac_bits, bound, f"{source}: feature sums")
    squares = encode_array((features**2).sum(axis=0), spec.data_frac_bits, bound, f"{source}: feature sums of squares")
    values = [int(features.shape[0]), *sums, *squares]
    check_values(values, spec.layout, f"{source}: feature statistics")
    return values


def encrypt_statistics(
    public_key: PublicKey,
    values: Sequence[int],
    spec: JobSpec,
    pool: ObfuscatorPool | None = None,
    masks: Sequence[int] | None = None,
) -> list[mpz]:
    """Pack in the clear, add this party's masks (mod n), encrypt each with fresh randomness."""
    packed = pack_plain(values, spec.layout)
    offsets = masks if masks is not None else [0] * len(packed)
    return [
        public_key.raw_encrypt((p + m) % int(public_key.n), pool.take() if pool else None)
        for p, m in zip(packed, offsets, strict=True)
    ]


@dataclass(frozen=True)
class FeatureStatistics:
    """Global statistics of the features over all contributing owners (exact rationals)."""

    row_count: int
    means: tuple[Fraction, ...]
    variances: tuple[Fraction, ...]

    @classmethod
    def from_sums(cls, values: Sequence[int], spec: JobSpec, where: str) -> FeatureStatistics:
        count = len(spec.features)
        row_count = int(values[0])
        if row_count <= 0:
            raise ProtocolViolation(f"{where}: the aggregate's row count is {row_count}")
        sums = [decode(v, spec.data_frac_bits) for v in values[1 : 1 + count]]
        squares = [decode(v, spec.data_frac_bits) for v in values[1 + count : 1 + 2 * count]]
        means = tuple(s / row_count for s in sums)
        variances = tuple(max(Fraction(0), q / row_count - m * m) for q, m in zip(squares, means, strict=True))
        # Sums of squares are float sums, so a constant column's variance is zero only up to the
        # cancellation in E[x²] − mean²; anything within that is constant.
        constant = [
            name
            for name, v, m in zip(spec.features, variances, means, strict=True)
            if v <= CONSTANT_TOLERANCE * max(Fraction(1), m * m)
        ]
        if constant:
            raise TrainingError(f"{where}: feature(s) {', '.join(constant)} are constant over all data owners")
        return cls(row_count, means, variances)

    @property
    def stds(self) -> list[float]:
        return [float(v) ** 0.5 for v in self.variances]

    def to_json(self, features: Sequence[str]) -> dict[str, dict[str, float]]:
        return {
            "means": {f: float(m) for f, m in zip(features, self.means, strict=True)},
            "stds": {f: s for f, s in zip(features, self.stds, strict=True)},
        }
