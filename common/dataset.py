"""Reading a party's CSV file: columns by name, every used value checked.

Owners may order their columns differently and carry extra ones; only the named columns are read.
Every problem is a :class:`~common.protocol.errors.DataError` naming the file, the column and the row
(rows count from 1 after the header line), so an owner can find and fix it. The message never
quotes the cell itself: a data owner's refusal travels to the coordinator and the model creator,
and a misplaced value (a name in a number column) must not travel with it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import overload

import numpy as np
import numpy.typing as npt

from common.protocol.errors import DataError


@overload
def load_columns(
    path: str | Path, features: Sequence[str], label: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
@overload
def load_columns(path: str | Path, features: Sequence[str], label: None) -> tuple[npt.NDArray[np.float64], None]: ...
@overload
def load_columns(
    path: str | Path, features: Sequence[str], label: str | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]: ...
def load_columns(
    path: str | Path, features: Sequence[str], label: str | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """The feature matrix and label vector (``None`` when ``label`` is) read from a CSV file."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return read_columns(handle, features, label, str(path))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})", "no_data") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})", "no_data") from exc


@overload
def read_columns(
    lines: Iterable[str], features: Sequence[str], label: str, source: str, allow_extra: bool = True
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
@overload
def read_columns(
    lines: Iterable[str], features: Sequence[str], label: None, source: str, allow_extra: bool = True
) -> tuple[npt.NDArray[np.float64], None]: ...
@overload
def read_columns(
    lines: Iterable[str], features: Sequence[str], label: str | None, source: str, allow_extra: bool = True
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]: ...
def read_columns(
    lines: Iterable[str], features: Sequence[str], label: str | None, source: str, allow_extra: bool = True
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """As :func:`load_columns`, from lines of CSV text; ``source`` names them in errors.

    With ``allow_extra=False`` a column that is neither a feature nor the label is an error.
    """
    columns = [*features, *([label] if label is not None else [])]
    try:
        reader = csv.reader(lines)
        header = next(reader, None)
        if not header or not any(name.strip() for name in header):
            raise DataError(f"{source}: file is empty (no header line)", "no_data")
        header = [name.strip() for name in header]
        if not allow_extra:
            extra = [name for name in header if name not in columns]
            if extra:
                raise DataError(f"{source}: unknown column(s) {', '.join(map(repr, extra))}")
        positions = _column_positions(source, header, columns)
        values = [
            _parse_row(source, number, row, columns, positions)
            for number, row in enumerate(reader, 1)
            if any(cell.strip() for cell in row)
        ]
    except csv.Error as exc:
        raise DataError(f"{source}: not a readable CSV file ({exc})", "no_data") from exc
    if not values:
        raise DataError(f"{source}: file has a header but no rows", "no_data")
    table = np.array(values, dtype=np.float64).reshape(len(values), len(columns))
    if label is None:
        return table, None
    return table[:, :-1], table[:, -1]


def read_header(path: str | Path) -> list[str]:
    """The column names of a CSV file's header line."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read ({exc})", "no_data") from exc
    if not header:
        raise DataError(f"{path}: file is empty (no header line)", "no_data")
    return [name.strip() for name in header]


def _column_positions(path: str, header: list[str], columns: Sequence[str]) -> list[int]:
    missing = [name for name in columns if name not in header]
    if missing:
        raise DataError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)} (the header has: {', '.join(header)})",
            "missing_column",
            missing[0],
        )
    duplicated = [name for name in columns if header.count(name) > 1]
    if duplicated:
        raise DataError(
            f"{path}: column {duplicated[0]!r} appears more than once in the header", "bad_value", duplicated[0]
        )
    return [header.index(name) for name in columns]


def _parse_row(path: str, number: int, row: list[str], columns: Sequence[str], positions: list[int]) -> list[float]:
    parsed = []
    for name, position in zip(columns, positions, strict=True):
        if position >= len(row):
            raise DataError(f"{path}: row {number}, column {name!r}: value is missing (short row)", "bad_value", name)
        text = row[position].strip()
        try:
            value = float(text)
        except ValueError:
            problem = "value is empty" if not text else "value is not a number"
            raise DataError(f"{path}: row {number}, column {name!r}: {problem}", "bad_value", name) from None
        if not math.isfinite(value):
            raise DataError(f"{path}: row {number}, column {name!r}: value is not a finite number", "bad_value", name)
        parsed.append(value)
    return parsed
