"""Reading a party's CSV file by column name (common/dataset.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import SHIPPED

from common.dataset import load_columns, read_header
from common.protocol.errors import DataError


def write(tmp_path: Path, text: str, name: str = "owner.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_named_columns(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2.5,3\n-4,5e-3,6\n")
    features, labels = load_columns(path, ["a", "b"], "y")
    assert features.dtype == np.float64 and labels.dtype == np.float64
    np.testing.assert_array_equal(features, [[1.0, 2.5], [-4.0, 0.005]])
    np.testing.assert_array_equal(labels, [3.0, 6.0])


def test_reordered_and_extra_columns_give_identical_arrays(tmp_path):
    plain = write(tmp_path, "a,b,y\n1,2,3\n4,5,6\n7,8,9\n", "plain.csv")
    shuffled = write(tmp_path, "extra,y,b,note,a\nx,3,2,hello,1\n0,6,5,,4\nz,9,8,w,7\n", "shuffled.csv")
    first = load_columns(plain, ["a", "b"], "y")
    second = load_columns(shuffled, ["a", "b"], "y")
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    # The order of the requested features decides the column order.
    swapped, _ = load_columns(shuffled, ["b", "a"], "y")
    np.testing.assert_array_equal(swapped, first[0][:, ::-1])


def test_header_names_are_stripped(tmp_path):
    path = write(tmp_path, " a , y\n 1 , 2 \n")
    features, labels = load_columns(path, ["a"], "y")
    np.testing.assert_array_equal(features, [[1.0]])
    np.testing.assert_array_equal(labels, [2.0])


def test_without_label(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,3\n")
    features, labels = load_columns(path, ["b", "a"], None)
    assert labels is None
    np.testing.assert_array_equal(features, [[2.0, 1.0]])


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "owner.csv"
    path.write_bytes(b"a,y\r\n1,2\r\n3,4\r\n")
    features, labels = load_columns(path, ["a"], "y")
    np.testing.assert_array_equal(features, [[1.0], [3.0]])


def test_messages_never_quote_the_offending_cell(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,3\n4,Jane Doe 1974-03-02,6\n")
    with pytest.raises(DataError) as caught:
        load_columns(path, ["a", "b"], "y")
    assert "row 2, column 'b': value is not a number" in caught.value.message
    assert "Jane" not in caught.value.message and "1974" not in caught.value.message


def test_blank_lines_are_skipped_and_rows_keep_their_numbers(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,3\n\n4,5,6\n\n7,x,9\n")
    with pytest.raises(DataError, match="row 5, column 'b'"):
        load_columns(path, ["a", "b"], "y")
    features, labels = load_columns(write(tmp_path, "a,b,y\n1,2,3\n\n4,5,6\n\n"), ["a", "b"], "y")
    np.testing.assert_array_equal(features, [[1.0, 2.0], [4.0, 5.0]])
    np.testing.assert_array_equal(labels, [3.0, 6.0])


def test_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffa,y\n1,2\n".encode("utf-8"))
    features, labels = load_columns(path, ["a"], "y")
    assert features.tolist() == [[1.0]] and labels.tolist() == [2.0]


def test_shipped_data():
    features, labels = load_columns(SHIPPED / "owner_a.csv", ["bmi", "age"], "progression")
    assert features.shape == (200, 2) and labels.shape == (200,)
    np.testing.assert_array_equal(features[0], [27.9, 65.0])
    assert labels[0] == 225.0


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("", ["file is empty"]),
        ("\n\n", ["file is empty"]),
        (" , \n1,2\n", ["file is empty"]),
        ("a,b,y\n", ["header but no rows"]),
        ("a,y\n1,2\n", ["missing column", "'b'"]),
        ("a,c\n1,2\n", ["missing columns", "'b'", "'y'", "the header has: a, c"]),
        ("a,b,y\n1,2,3\n4,x,6\n", ["row 2", "column 'b'", "value is not a number"]),
        ("a,b,y\n1,2,3\n4,5,nan\n", ["row 2", "column 'y'", "not a finite number"]),
        ("a,b,y\n1,NaN,3\n", ["row 1", "column 'b'", "not a finite number"]),
        ("a,b,y\n1,2,3\n4,5,6\ninf,5,6\n", ["row 3", "column 'a'", "not a finite number"]),
        ("a,b,y\n1,-Infinity,3\n", ["row 1", "column 'b'", "not a finite number"]),
        ("a,b,y\n1,2,3\n4,,6\n", ["row 2", "column 'b'", "value is empty"]),
        ("a,b,y\n1,2,3\n4,5\n", ["row 2", "column 'y'", "short row"]),
        ("a,b,a,y\n1,2,3,4\n", ["column 'a' appears more than once"]),
        ("a,b,y,y\n1,2,3,4\n", ["column 'y' appears more than once"]),
        ("a,b,y\n1,2,1e999\n", ["row 1", "column 'y'", "not a finite number"]),
    ],
    ids=["empty", "blank-lines", "blank-header", "header-only", "missing-column", "missing-columns", "non-numeric",
         "nan", "NaN", "inf", "-Infinity", "empty-cell", "short-row", "duplicate-feature",
         "duplicate-label", "float-overflow"],
)
def test_bad_csv(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_columns(path, ["a", "b"], "y")
    message = info.value.message
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_duplicate_of_an_unused_column_is_ignored(tmp_path):
    path = write(tmp_path, "a,note,note,y\n1,x,z,2\n")
    features, labels = load_columns(path, ["a"], "y")
    np.testing.assert_array_equal(features, [[1.0]])


def test_missing_file(tmp_path):
    path = tmp_path / "absent.csv"
    with pytest.raises(DataError, match="cannot be read") as info:
        load_columns(path, ["a"], "y")
    assert str(path) in info.value.message


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="cannot be read") as info:
        load_columns(tmp_path, ["a"], "y")
    assert str(tmp_path) in info.value.message


def test_not_utf8(tmp_path):
    path = tmp_path / "owner.csv"
    path.write_bytes(b"a,y\n\xff\xfe,1\n")
    with pytest.raises(DataError, match="not a readable CSV file") as info:
        load_columns(path, ["a"], "y")
    assert str(path) in info.value.message


def test_read_header(tmp_path):
    path = write(tmp_path, " age ,bmi,progression\n1,2,3\n")
    assert read_header(path) == ["age", "bmi", "progression"]
    assert read_header(SHIPPED / "train.csv")[-1] == "progression"


def test_read_header_of_header_only_file(tmp_path):
    assert read_header(write(tmp_path, "a,b\n")) == ["a", "b"]


@pytest.mark.parametrize("make", [lambda p: write(p, ""), lambda p: p / "absent.csv"], ids=["empty", "missing"])
def test_read_header_errors(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        read_header(path)
    assert info.value.message.startswith(str(path))
