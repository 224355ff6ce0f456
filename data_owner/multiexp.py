"""Simultaneous multi-exponentiation for the data owner's encrypted matrix–vector product.

It computes ``Π_k base_k ** a_jk mod m`` for every row j of a fixed integer matrix.

One ``powmod`` per term would spend a full square-and-multiply chain on each of the d² terms.
Straus' method instead shares the squarings of a row among all its bases, and the sliding-window
tables of odd powers ``base ** 1, 3, 5, …`` are built once per round and shared by every row.
A negative coefficient uses the table of the base's inverse, so each base costs at most one
modular inversion per round. Because the matrix is fixed for a whole job, its window recoding
(:class:`MatrixPowerPlan`) is computed once per job; a round only multiplies.

Rows are independent, so :meth:`MatrixPowerPlan.evaluate` can split them over worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from common.crypto.bigint import invert, mpz

# Below this many multiplications, shipping the work to other processes costs more than it saves.
PARALLEL_MIN_MULTIPLICATIONS = 10_000

# (bit position, base index, odd digit, negative?) for every window of a row, highest first.
Window = tuple[int, int, int, bool]


def _recode(exponent: int, width: int) -> list[tuple[int, int]]:
    """Sliding-window recoding of a non-negative integer: (bit position, odd digit) pairs."""
    windows = []
    position = 0
    while exponent:
        if exponent & 1:
            digit = exponent & ((1 << width) - 1)
            windows.append((position, digit))
            exponent >>= width
            position += width
        else:
            exponent >>= 1
            position += 1
    return windows


def window_width(max_bits: int, rows: int) -> int:
    """A window width that balances table size (shared by all rows) against multiplications."""
    if max_bits <= 8:
        return 2
    width = 3
    while width < 8 and (1 << width) * 2 < max_bits * rows / (width + 1) / 4:
        width += 1
    return width


@dataclass(frozen=True)
class MatrixPowerPlan:
    """The precomputed schedule of ``Π_k base_k ** matrix[j][k]`` for a fixed matrix."""

    width: int
    columns: int
    row_bits: tuple[int, ...]
    schedules: tuple[tuple[Window, ...], ...]
    negative_columns: frozenset[int]
    positive_columns: frozenset[int]

    @classmethod
    def for_matrix(cls, matrix: Sequence[Sequence[int]]) -> MatrixPowerPlan:
        columns = len(matrix[0]) if matrix else 0
        max_bits = max((abs(int(a)).bit_length() for row in matrix for a in row), default=0)
        width = window_width(max_bits, len(matrix))
        schedules, row_bits = [], []
        negative: set[int] = set()
        positive: set[int] = set()
        for row in matrix:
            windows: list[Window] = []
            for column, coefficient in enumerate(row):
                coefficient = int(coefficient)
                if coefficient:
                    (negative if coefficient < 0 else positive).add(column)
                for position, digit in _recode(abs(coefficient), width):
                    windows.append((position, column, digit, coefficient < 0))
            windows.sort(reverse=True)
            schedules.append(tuple(windows))
            row_bits.append(max((abs(int(a)).bit_length() for a in row), default=0))
        return cls(width, columns, tuple(row_bits), tuple(schedules), frozenset(negative), frozenset(positive))

    @property
    def multiplications(self) -> int:
        """Modular multiplications of one evaluation (tables, squarings, window products)."""
        table = (1 << (self.width - 1)) * (len(self.negative_columns) + len(self.positive_columns))
        return table + sum(self.row_bits) + sum(len(s) for s in self.schedules)

    def evaluate(
        self, bases: Sequence[mpz], modulus: mpz, executor: Executor | None = None, parts: int = 1
    ) -> list[mpz]:
        """``[Π_k bases[k] ** matrix[j][k] mod modulus for each row j]``.

        With an ``executor`` and ``parts > 1`` the rows of a large enough product are split into
        ``parts`` contiguous chunks evaluated in parallel (each worker builds the tables it needs).
        """
        if len(bases) != self.columns:
            raise ValueError(f"expected {self.columns} bases, got {len(bases)}")
        rows = list(range(len(self.schedules)))
        if executor is None or parts <= 1 or len(rows) < 2 or self.multiplications < PARALLEL_MIN_MULTIPLICATIONS:
            return _evaluate_rows(self, rows, list(bases), modulus)
        size = -(-len(rows) // parts)
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        futures = [
            executor.submit(_evaluate_rows, self._subplan(chunk), list(range(len(chunk))), list(bases), modulus)
            for chunk in chunks
        ]
        return [value for future in futures for value in future.result()]

    def _subplan(self, rows: list[int]) -> MatrixPowerPlan:
        schedules = tuple(self.schedules[r] for r in rows)
        used = {(column, negative) for schedule in schedules for _, column, _, negative in schedule}
        return MatrixPowerPlan(
            self.width,
            self.columns,
            tuple(self.row_bits[r] for r in rows),
            schedules,
            frozenset(c for c, n in used if n),
            frozenset(c for c, n in used if not n),
        )


def _odd_powers(base: mpz, width: int, modulus: mpz) -> list[mpz]:
    """``[base ** 1, base ** 3, …, base ** (2**width − 1)] mod modulus``."""
    square = base * base % modulus
    powers = [base]
    for _ in range((1 << (width - 1)) - 1):
        powers.append(powers[-1] * square % modulus)
    return powers


def _evaluate_rows(plan: MatrixPowerPlan, rows: list[int], bases: list[mpz], modulus: mpz) -> list[mpz]:
    modulus = mpz(modulus)
    tables: dict[tuple[int, bool], list[mpz]] = {}
    for column in plan.positive_columns:
        tables[(column, False)] = _odd_powers(mpz(bases[column]), plan.width, modulus)
    for column in plan.negative_columns:
        tables[(column, True)] = _odd_powers(invert(mpz(bases[column]), modulus), plan.width, modulus)
    results = []
    for row in rows:
        schedule = plan.schedules[row]
        accumulator = mpz(1)
        index = 0
        for bit in range(plan.row_bits[row] - 1, -1, -1):
            accumulator = accumulator * accumulator % modulus
            while index < len(schedule) and schedule[index][0] == bit:
                _, column, digit, negative = schedule[index]
                accumulator = accumulator * tables[(column, negative)][digit >> 1] % modulus
                index += 1
        results.append(accumulator)
    return results
