"""The JSON wire format (common/wire.py): ciphertext vectors and checked field access."""

from __future__ import annotations

import base64
import math

import pytest

from common.protocol.errors import InvalidCiphertext, ProtocolViolation, SchemaError
from common.protocol.wire import (
    MAX_VECTOR_LENGTH,
    decode_ciphertexts,
    encode_ciphertexts,
    require_int,
    require_number,
    require_object,
    require_str,
    require_str_list,
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@pytest.fixture
def encoded(small_key):
    public_key = small_key.public_key
    ciphertexts = [public_key.raw_encrypt(v) for v in (0, 1, -1)]
    return ciphertexts, encode_ciphertexts(ciphertexts, public_key)


def test_round_trip(small_key, encoded):
    ciphertexts, strings = encoded
    public_key = small_key.public_key
    assert all(isinstance(s, str) for s in strings)
    assert all(len(base64.b64decode(s)) == public_key.ciphertext_bytes for s in strings)
    assert decode_ciphertexts(strings, public_key, "body.x") == ciphertexts
    assert decode_ciphertexts(strings, public_key, "body.x", length=3) == ciphertexts


def test_fixed_width_whatever_the_value(small_key):
    """A small ciphertext is left-padded: message size reveals nothing about values."""
    public_key = small_key.public_key
    strings = encode_ciphertexts([1, public_key.nsquare - 1], public_key)
    assert len(strings[0]) == len(strings[1])
    assert decode_ciphertexts(strings, public_key, "b") == [1, public_key.nsquare - 1]


def test_real_size_round_trip(real_key):
    public_key = real_key.public_key
    ciphertexts = [public_key.raw_encrypt(v) for v in range(-3, 4)]
    strings = encode_ciphertexts(ciphertexts, public_key)
    assert {len(base64.b64decode(s)) for s in strings} == {512}
    assert decode_ciphertexts(strings, public_key, "body.x", 7) == ciphertexts


def _replace_second(strings, item):
    return [strings[0], item, strings[2]]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s, k: _replace_second(s, "!!!!"), "body.x[1]: not valid base64"),
        (lambda s, k: _replace_second(s, s[1][:-1]), "body.x[1]: not valid base64"),
        (lambda s, k: _replace_second(s, s[1] + "\n"), "body.x[1]: not valid base64"),
        (lambda s, k: _replace_second(s, "é" * 8), "body.x[1]: not valid base64"),
        (lambda s, k: _replace_second(s, 12345), "body.x[1]: expected a base64 string"),
        (lambda s, k: _replace_second(s, None), "body.x[1]: expected a base64 string"),
        (lambda s, k: _replace_second(s, [s[1]]), "body.x[1]: expected a base64 string"),
        (lambda s, k: _replace_second(s, s[1].encode()), "body.x[1]: expected a base64 string"),
        (lambda s, k: [], "body.x: expected 1 to 4096 ciphertexts"),
        (lambda s, k: s * (MAX_VECTOR_LENGTH // 3 + 1), "body.x: expected 1 to 4096 ciphertexts"),
        (lambda s, k: s[0], "body.x: expected a list of ciphertexts"),
        (lambda s, k: {"0": s[0]}, "body.x: expected a list of ciphertexts"),
        (lambda s, k: None, "body.x: expected a list of ciphertexts"),
    ],
    ids=["bad-chars", "bad-padding", "newline", "non-ascii", "int", "none", "nested",
         "bytes", "empty-list", "too-many", "string", "object", "null"],
)
def test_decode_schema_errors(small_key, encoded, mutate, message):
    _, strings = encoded
    with pytest.raises(SchemaError) as info:
        decode_ciphertexts(mutate(strings, small_key.public_key), small_key.public_key, "body.x")
    assert info.value.message.startswith(message)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: _replace_second(s, b64(b"\x01" * 255)), "body.x[1]: expected 256 bytes, got 255"),
        (lambda s: _replace_second(s, b64(b"\x01" * 257)), "body.x[1]: expected 256 bytes, got 257"),
        (lambda s: _replace_second(s, ""), "body.x[1]: expected 256 bytes, got 0"),
    ],
    ids=["short", "long", "empty-string"],
)
def test_decode_wrong_width(small_key, encoded, mutate, message):
    """The width is the key's n², which no message's type can state: not a schema error."""
    _, strings = encoded
    with pytest.raises(InvalidCiphertext) as info:
        decode_ciphertexts(mutate(strings), small_key.public_key, "body.x")
    assert info.value.message.startswith(message)


@pytest.mark.parametrize(("length", "got"), [(2, 3), (4, 3), (0, 3)])
def test_decode_wrong_length(small_key, encoded, length, got):
    """How many a round carries is the job's spec's to say: a violation of the job's rules."""
    _, strings = encoded
    with pytest.raises(ProtocolViolation, match=rf"^body\.x: expected {length} ciphertexts, got {got}"):
        decode_ciphertexts(strings, small_key.public_key, "body.x", length=length)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (lambda k: 0, "not in the range"),
        (lambda k: k.nsquare, "not in the range"),
        (lambda k: (1 << (8 * k.ciphertext_bytes)) - 1, "not in the range"),
        (lambda k: k.n, "shares a factor"),
        (lambda k: 2 * k.n, "shares a factor"),
    ],
    ids=["zero", "n-squared", "all-ones", "n", "2n"],
)
def test_decode_invalid_ciphertext_names_field(small_key, encoded, value, message):
    _, strings = encoded
    public_key = small_key.public_key
    bad = b64(int(value(public_key)).to_bytes(public_key.ciphertext_bytes, "big"))
    with pytest.raises(InvalidCiphertext, match=rf"^body\.x\[1\]: .*{message}"):
        decode_ciphertexts(_replace_second(strings, bad), public_key, "body.x")


def test_decode_checks_against_the_given_key(small_key, other_small_key):
    """A multiple of another key's prime factor is refused; unrelated valid values are not."""
    public_key = small_key.public_key
    bad = b64(int(small_key.p * 3).to_bytes(public_key.ciphertext_bytes, "big"))
    with pytest.raises(InvalidCiphertext, match=r"^w\[0\]: ciphertext shares a factor with n"):
        decode_ciphertexts([bad], public_key, "w")
    assert decode_ciphertexts([bad], other_small_key.public_key, "w") == [small_key.p * 3]


# --- require_* --------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [None, [], "x", 3, [("a", 1)]])
def test_require_object_rejects(payload):
    with pytest.raises(SchemaError, match=r"^spec: expected a JSON object"):
        require_object(payload, "spec")


def test_require_object_accepts():
    assert require_object({"a": 1}, "spec") == {"a": 1}


def test_require_str():
    assert require_str({"name": "owner-a"}, "name") == "owner-a"
    assert require_str({"name": "x" * 200}, "name") == "x" * 200


@pytest.mark.parametrize("value", [None, "", 5, ["a"], {"a": 1}, "x" * 201, True, b"abc"])
def test_require_str_rejects(value):
    with pytest.raises(SchemaError, match=r"^spec\.label: expected a non-empty string of at most 200 characters"):
        require_str({"label": value}, "label", "spec")


def test_require_str_missing_field():
    with pytest.raises(SchemaError, match=r"^body\.label"):
        require_str({}, "label")


@pytest.mark.parametrize("value", [0, 5, 2**31])
def test_require_int_accepts(value):
    assert require_int({"n": value}, "n") == value


@pytest.mark.parametrize("value", [True, False, None, 1.0, 2.5, "3", -1, 2**31 + 1, 10**400, [1], math.nan])
def test_require_int_rejects(value):
    with pytest.raises(SchemaError, match=r"^body\.n: expected an integer from 0 to 2147483648"):
        require_int({"n": value}, "n")


def test_require_int_custom_range():
    assert require_int({"n": 7}, "n", "spec", 7, 9) == 7
    with pytest.raises(SchemaError, match=r"^spec\.n: expected an integer from 7 to 9"):
        require_int({"n": 10}, "n", "spec", 7, 9)
    with pytest.raises(SchemaError, match=r"^spec\.n"):
        require_int({"n": 6}, "n", "spec", 7, 9)


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (3, 3.0), (-2.5, -2.5), (1e300, 1e300)])
def test_require_number_accepts(value, expected):
    result = require_number({"x": value}, "x")
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, True, False, None, "1.5", [1.0], 10**400, -(10**400)],
    ids=["nan", "inf", "-inf", "true", "false", "none", "string", "list", "huge-int", "huge-negative-int"],
)
def test_require_number_rejects(value):
    with pytest.raises(SchemaError, match=r"^body\.x: expected a finite number$"):
        require_number({"x": value}, "x")


def test_require_number_range():
    assert require_number({"x": 1e-12}, "x", minimum=1e-12, maximum=1e6) == 1e-12
    for value in (0, 1e-13, 1e6 + 1, -1):
        with pytest.raises(SchemaError, match=r"^body\.x: expected a number from 1e-12 to 1000000"):
            require_number({"x": value}, "x", minimum=1e-12, maximum=1e6)


def test_require_str_list_accepts():
    assert require_str_list({"f": ["a", "b"]}, "f") == ["a", "b"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "expected a list of 1 to 3 non-empty strings"),
        ("ab", "expected a list of 1 to 3 non-empty strings"),
        ([], "expected a list of 1 to 3 non-empty strings"),
        (["a", ""], "expected a list of 1 to 3 non-empty strings"),
        (["a", 1], "expected a list of 1 to 3 non-empty strings"),
        (["a", None], "expected a list of 1 to 3 non-empty strings"),
        (["a", "b", "c", "d"], "expected a list of 1 to 3 non-empty strings"),
        ({"a": 1}, "expected a list of 1 to 3 non-empty strings"),
        (["a", "b", "a"], "names must not repeat"),
        (["bmi", "bmi"], "names must not repeat"),
    ],
)
def test_require_str_list_rejects(value, message):
    with pytest.raises(SchemaError) as info:
        require_str_list({"features": value}, "features", "spec", max_items=3)
    assert info.value.message == f"spec.features: {message}"
