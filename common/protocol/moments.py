"""One-shot statistics: a data owner's (n_i, A_i, b_i) sent once, the sum solved by the model creator.

In a one-shot job (``JobSpec.protocol == "one_shot"``, PROTOCOL.md section 10) each data owner
sends, packed, masked and encrypted like any reply, the values :func:`moment_values` lists: its
row count, the upper triangle of its encoded A_i (at ``2**data_frac_bits``) and its encoded b_i
(at the gradient's scale). The coordinator sums them over the member set as it sums gradients;
the model creator decrypts only that sum, :class:`Moments`, which gives it exactly the quadratic
whose gradient ``Σ A_i w − Σ b_i`` a gradient round would have decrypted at any w. So it learns what the
exact solver learns after d + 1 gradient rounds, and nothing more, in one round.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from common.crypto.encoding import decode
from common.protocol.errors import ProtocolViolation
from common.protocol.spec import JobSpec


def moment_values(matrix: Sequence[Sequence[int]], offset: Sequence[int], row_count: int) -> list[int]:
    """``[n_i, A_i[0][0..], A_i[1][1..], …, b_i]``: the row count, A_i's upper triangle, b_i.

    Raises
    ------
    ProtocolViolation
        When the matrix is not square of b_i's size or not symmetric: its lower triangle would
        not be what the model creator takes it for.
    """
    dimension = len(offset)
    if len(matrix) != dimension or any(len(row) != dimension for row in matrix):
        raise ProtocolViolation(f"the statistics matrix is not {dimension} × {dimension}")
    if any(matrix[i][j] != matrix[j][i] for i in range(dimension) for j in range(i)):
        raise ProtocolViolation("the statistics matrix is not symmetric")
    triangle = [int(matrix[i][j]) for i in range(dimension) for j in range(i, dimension)]
    return [int(row_count), *triangle, *(int(b) for b in offset)]


@dataclass(frozen=True)
class Moments:
    """The summed encoded statistics of a member set: integers, at the job's scales."""

    row_count: int
    matrix: tuple[tuple[int, ...], ...]
    offset: tuple[int, ...]
    data_frac_bits: int
    gradient_frac_bits: int

    @classmethod
    def from_sums(cls, values: Sequence[int], spec: JobSpec, where: str) -> Moments:
        """The moments from an unpacked sum of :func:`moment_values` lists.

        Raises
        ------
        ProtocolViolation
            When the values are not as many as the job's moments, or the row count is not positive.
        """
        dimension = spec.dimension
        if len(values) != spec.reply_values("moments"):
            raise ProtocolViolation(f"{where}: expected {spec.reply_values('moments')} values, got {len(values)}")
        row_count = int(values[0])
        if row_count <= 0:
            raise ProtocolViolation(f"{where}: the aggregate's row count is {row_count}")
        rows = [[0] * dimension for _ in range(dimension)]
        position = 1
        for i in range(dimension):
            for j in range(i, dimension):
                rows[i][j] = rows[j][i] = int(values[position])
                position += 1
        offset = tuple(int(v) for v in values[position:])
        return cls(row_count, tuple(tuple(row) for row in rows), offset, spec.data_frac_bits, spec.gradient_frac_bits)

    def quadratic(self, penalty: Sequence[Fraction]) -> tuple[list[list[Fraction]], list[Fraction]]:
        """(M, r) of the objective ½wᵀMw − rᵀw whose gradient every gradient round would decrypt.

        ``M = ΣA_i + diag(penalty)`` and ``r = Σb_i``, exactly, so that ``M w − r`` is the
        penalised gradient the model creator takes from a gradient round at any w.
        """
        matrix = [
            [decode(a, self.data_frac_bits) + (penalty[i] if i == j else 0) for j, a in enumerate(row)]
            for i, row in enumerate(self.matrix)
        ]
        return matrix, [decode(b, self.gradient_frac_bits) for b in self.offset]
