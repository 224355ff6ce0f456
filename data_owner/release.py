"""A data owner's differentially private release: its statistics, clipped, exact, noised once.

PROTOCOL.md section 8 (sufficient-statistics perturbation). For a job it protects, a data owner

1. clips every value to the job's declared, public bounds ``[lo, hi]`` of its column and maps it
   to ``z = (x − centre) / radius`` in [-1, 1] (common/protocol/frames.py); the label becomes
   ``t`` in [-1, 1] likewise (``2y − 1`` for a logistic model);
2. rounds each ``z`` to an integer ``zq = round(z·2**QUANTUM_BITS)`` and computes, in exact
   integer arithmetic, the three blocks it will release: the Gram matrix ``Σ zq zqᵀ`` (upper
   triangle, intercept included), the moment ``Σ zq·tq``, and the moments of a statistics round
   ``[n·2**2h, Σ zq_j·2**h, Σ zq_j²]``. Adding or removing one row changes every entry of every
   block by at most ``2**(2·QUANTUM_BITS)``, whatever the data: that is the sensitivity, and it
   is exact, with no floating-point rounding in the sums;
3. adds discrete Gaussian noise (Canonne, Kamath and Steinke 2020) to each block, with a scale
   that makes the block ρ_block-zCDP for its L2 sensitivity; the blocks' ρ add up to the job's.
   The sampler is OpenDP's, which draws from the operating system's cryptographic generator and
   samples integers exactly, so the floating-point attacks on Laplace and Gaussian samplers
   (Mironov 2012) do not apply.

Everything after the noise is post-processing: the noisy integers are turned into the job's
fixed-point encoding (:meth:`NoisyRelease.encoded`), and every round, whatever the model creator
asks, is computed from them. The release is stored in the owner's ledger, so a job joined again
after a restart gets the very same noise: averaging several draws is never possible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import opendp.prelude as dp

from common.protocol.errors import Refused
from common.protocol.frames import Frame, column_frames, unbounded_column
from common.protocol.messages import PrivacyDeclaration
from common.protocol.models import MODELS
from common.protocol.spec import JobSpec
from data_owner.accounting import epsilon_of

#: Fractional bits h of each normalised value: entries change by at most 2**(2h) per row.
QUANTUM_BITS = 20
#: The most rows a release can hold: the moments' n·2**2h and its noise stay within 64 bits.
MAX_ROWS = 1 << 21
#: How the job's ρ is split between the blocks (they compose by adding): the Gram matrix and
#: the moment carry the model, the statistics-round moments only the standardisation.
BlockName = Literal["gram", "moment", "moments"]
BLOCK_NAMES: tuple[BlockName, ...] = ("gram", "moment", "moments")
BLOCK_SHARES: dict[BlockName, float] = {"gram": 0.45, "moment": 0.45, "moments": 0.10}

FloatArray = npt.NDArray[np.float64]


def _quantised(values: FloatArray, low: float, high: float, frame: Frame) -> npt.NDArray[np.int64]:
    """round((clip(v, low, high) − centre) / radius · 2**h): integers of magnitude at most 2**h."""
    normalised = (np.clip(values, low, high) - float(frame.centre)) / float(frame.radius)
    return np.rint(np.clip(normalised, -1.0, 1.0) * (1 << QUANTUM_BITS)).astype(np.int64)


def exact_blocks(spec: JobSpec, features: FloatArray, labels: FloatArray) -> dict[str, list[int]]:
    """The three blocks of integers before noise (see the module's steps 1 and 2).

    Raises
    ------
    Refused
        ``policy:bounds`` when a bound is missing; ``bound_exceeded`` beyond :data:`MAX_ROWS` rows.
    """
    missing = unbounded_column(spec)
    if missing is not None:
        raise Refused(
            "policy:bounds", missing, f"the job declares no bounds for column {missing!r}; this owner must clip it"
        )
    rows = features.shape[0]
    if rows > MAX_ROWS:
        raise Refused("bound_exceeded", detail=f"{rows} rows; a private release holds at most {MAX_ROWS}")
    frames, label_frame = column_frames(spec)
    bounds = spec.bounds or {}
    one = 1 << QUANTUM_BITS
    columns = [np.full(rows, one, dtype=np.int64)]
    for j, name in enumerate(spec.features):
        low, high = bounds[name]
        columns.append(_quantised(features[:, j], low, high, frames[j]))
    design = np.stack(columns, axis=1)
    if label_frame is None:
        target = np.where(labels == 1, one, -one).astype(np.int64)
    else:
        low, high = bounds[spec.label]
        target = _quantised(labels, low, high, label_frame)
    gram = design.T @ design
    moment = design.T @ target
    dimension = spec.dimension
    upper = [int(gram[j, k]) for j in range(dimension) for k in range(j, dimension)]
    sums = design[:, 1:].sum(axis=0)
    squares = (design[:, 1:] ** 2).sum(axis=0)
    moments = [rows * one * one, *(int(v) * one for v in sums), *(int(q) for q in squares)]
    return {"gram": upper, "moment": [int(m) for m in moment], "moments": moments}


def _sensitivity(entries: int) -> int:
    """L2 sensitivity of a block of ``entries`` integers each moving by at most 2**2h, rounded up."""
    squared = entries << (4 * QUANTUM_BITS)
    root = math.isqrt(squared)
    return root if root * root == squared else root + 1


@dataclass(frozen=True)
class NoisyRelease:
    """What a data owner releases for one job: three noisy integer blocks and their declaration."""

    blocks: dict[str, tuple[int, ...]]
    declaration: PrivacyDeclaration

    @classmethod
    def draw(cls, exact: dict[str, list[int]], rho: float, epsilon: float, delta: float) -> NoisyRelease:
        """Add the discrete Gaussian noise that makes the whole release ``rho``-zCDP (at most)."""
        space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64")
        noisy: dict[str, tuple[int, ...]] = {}
        stds: dict[BlockName, float] = {}
        spent = 0.0
        for name in BLOCK_NAMES:
            values = exact[name]
            sensitivity = _sensitivity(len(values))
            scale = sensitivity / math.sqrt(2 * rho * BLOCK_SHARES[name])
            mechanism = dp.m.make_gaussian(*space, scale=scale)
            spent += float(mechanism.map(sensitivity))  # type: ignore[no-untyped-call]
            noisy[name] = tuple(int(v) for v in mechanism(values))
            stds[name] = scale / (1 << (2 * QUANTUM_BITS))
        declaration = PrivacyDeclaration(
            epsilon=epsilon,
            delta=delta,
            rho=spent,
            epsilon_at_delta=epsilon_of(spent, delta),
            mechanism="discrete Gaussian sufficient-statistics perturbation (OpenDP make_gaussian)",
            quantum_bits=QUANTUM_BITS,
            noise_std=stds,
        )
        return cls(noisy, declaration)

    def to_json(self) -> dict[str, Any]:
        return {
            "blocks": {name: [str(v) for v in values] for name, values in self.blocks.items()},
            "declaration": self.declaration.model_dump(mode="json"),
        }

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> NoisyRelease:
        return cls(
            {name: tuple(int(v) for v in values) for name, values in stored["blocks"].items()},
            PrivacyDeclaration.model_validate(stored["declaration"]),
        )

    def encoded(self, spec: JobSpec) -> EncodedStatistics:
        """The release in the job's fixed-point encoding (post-processing: no privacy cost).

        In normalised coordinates the release is Ĝ ≈ Σ z̃z̃ᵀ, ĉ ≈ Σ z̃t and the moments; with
        x̃ = L z̃ (common/protocol/frames.py) the job's statistics are A = a·L Ĝ Lᵀ and b = L ĉ
        scaled back to the label's units, computed in exact rationals and rounded once.
        """
        frames, label_frame = column_frames(spec)
        binary = MODELS[spec.model].binary_labels
        unit = Fraction(1, 1 << (2 * QUANTUM_BITS))
        dimension = spec.dimension
        gram = [[Fraction(0)] * dimension for _ in range(dimension)]
        entries = iter(self.blocks["gram"])
        for j in range(dimension):
            for k in range(j, dimension):
                gram[j][k] = gram[k][j] = next(entries) * unit

        exponents = spec.feature_scales or (0,) * len(frames)
        scale = [Fraction(1), *(Fraction(2) ** e for e in exponents)]
        label_scale = Fraction(2) ** spec.label_scale

        def lift(vector: list[Fraction]) -> list[Fraction]:
            """L v in the job's scaled units: the intercept's entry, then (centre·v₀ + radius·v_j)·2**e_j."""
            return [
                vector[0],
                *((f.centre * vector[0] + f.radius * vector[j + 1]) * scale[j + 1] for j, f in enumerate(frames)),
            ]

        rows = [lift([gram[i][k] for i in range(dimension)]) for k in range(dimension)]  # (L Ĝ)ᵀ, row by row
        lifted = [lift([rows[k][i] for k in range(dimension)]) for i in range(dimension)]  # L Ĝ Lᵀ
        a_factor = Fraction(1, 4) if binary else Fraction(1)
        data_scale = 1 << spec.data_frac_bits
        matrix = tuple(tuple(round(a_factor * value * data_scale) for value in row) for row in lifted)
        moment = lift([m * unit for m in self.blocks["moment"]])
        if label_frame is None:
            offset_values = [m / 2 for m in moment]
        else:
            sums = lift(gram[0])
            offset_values = [
                (label_frame.radius * m + label_frame.centre * t) * label_scale
                for m, t in zip(moment, sums, strict=True)
            ]
        gradient_scale = 1 << spec.gradient_frac_bits
        offset = tuple(round(v * gradient_scale) for v in offset_values)
        count = len(spec.features)
        moments = [m * unit for m in self.blocks["moments"]]
        rows_noisy, z_sums, z_squares = moments[0], moments[1 : 1 + count], moments[1 + count :]
        feature_sums = [
            (f.centre * rows_noisy + f.radius * z) * s for f, z, s in zip(frames, z_sums, scale[1:], strict=True)
        ]
        feature_squares = [
            (f.centre**2 * rows_noisy + 2 * f.centre * f.radius * z + f.radius**2 * q) * s * s
            for f, z, q, s in zip(frames, z_sums, z_squares, scale[1:], strict=True)
        ]
        row_count = max(0, round(rows_noisy))
        encoded_sums = [round(v * data_scale) for v in (*feature_sums, *feature_squares)]
        return EncodedStatistics(matrix, offset, row_count, (row_count, *encoded_sums))


@dataclass(frozen=True)
class EncodedStatistics:
    """A release at the job's scales: ``A`` at 2**data_frac_bits, ``b`` at the gradient's scale."""

    matrix: tuple[tuple[int, ...], ...]
    offset: tuple[int, ...]
    row_count: int
    feature_sums: tuple[int, ...]
