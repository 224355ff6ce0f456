"""Paillier keys and raw operations (common/paillier.py)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import SLOW

from common.crypto.bigint import invert, powmod
from common.protocol.errors import InvalidCiphertext, KeyMismatch, SchemaError
from common.crypto.paillier import PrivateKey, PublicKey

signed = st.integers(-(2**300), 2**300)


@SLOW
@given(value=signed)
def test_encrypt_decrypt_round_trip_mod_n(small_key, value):
    public_key = small_key.public_key
    assert small_key.raw_decrypt(public_key.raw_encrypt(value)) == value % public_key.n


@pytest.mark.parametrize("value", [0, 1, -1, 2, -(2**200)])
def test_negative_values_wrap_to_n_minus(small_key, value):
    n = small_key.public_key.n
    plaintext = small_key.raw_decrypt(small_key.public_key.raw_encrypt(value))
    assert plaintext == (n - abs(value) if value < 0 else value)


def test_boundary_plaintexts(small_key):
    n = small_key.public_key.n
    for value in (n - 1, n, n + 3, 2 * n - 1):
        assert small_key.raw_decrypt(small_key.public_key.raw_encrypt(value)) == value % n


@SLOW
@given(x=signed, y=signed, k=signed)
def test_homomorphic_operations(small_key, x, y, k):
    public_key = small_key.public_key
    n = public_key.n
    ex, ey = public_key.raw_encrypt(x), public_key.raw_encrypt(y)
    assert small_key.raw_decrypt(ex * ey % public_key.nsquare) == (x + y) % n
    assert small_key.raw_decrypt(public_key.raw_add_constant(ex, k)) == (x + k) % n
    assert small_key.raw_decrypt(_multiply(public_key, ex, k)) == (x * k) % n


def _multiply(public_key, ciphertext, scalar):
    """E(x), k → E(k·x): a power of the ciphertext, of its inverse for negative k."""
    if scalar < 0:
        return powmod(invert(ciphertext, public_key.nsquare), -scalar, public_key.nsquare)
    return powmod(ciphertext, scalar, public_key.nsquare)


@pytest.mark.parametrize("scalar", [0, 1, -1, 2, -2, -(2**64) + 1, 2**1500])
def test_scalar_multiplication_either_sign(small_key, scalar):
    public_key = small_key.public_key
    encrypted = public_key.raw_encrypt(-12345)
    assert small_key.raw_decrypt(_multiply(public_key, encrypted, scalar)) == (-12345 * scalar) % public_key.n


def test_raw_constant_has_no_randomness(small_key):
    public_key = small_key.public_key
    assert public_key.raw_constant(7) == public_key.raw_constant(7) == 1 + 7 * public_key.n
    assert small_key.raw_decrypt(public_key.raw_constant(-7)) == public_key.n - 7


def test_fresh_randomness_per_encryption(small_key):
    public_key = small_key.public_key
    ciphertexts = {public_key.raw_encrypt(42) for _ in range(10)}
    assert len(ciphertexts) == 10
    assert all(small_key.raw_decrypt(c) == 42 for c in ciphertexts)
    assert public_key.raw_constant(42) not in ciphertexts


def test_rerandomise_changes_ciphertext_not_plaintext(small_key):
    public_key = small_key.public_key
    original = public_key.raw_encrypt(-99)
    copies = [public_key.rerandomise(original) for _ in range(5)]
    assert original not in copies
    assert len(set(copies)) == 5
    assert all(small_key.raw_decrypt(c) == public_key.n - 99 for c in copies)
    # Even an unrandomised constant becomes unrecognisable.
    assert public_key.rerandomise(public_key.raw_constant(3)) != public_key.raw_constant(3)


def test_wrong_private_key_does_not_decrypt(small_key, other_small_key):
    value = 123456789
    ciphertext = small_key.public_key.raw_encrypt(value)
    assert other_small_key.raw_decrypt(ciphertext % other_small_key.public_key.nsquare) != value
    assert small_key.public_key.fingerprint != other_small_key.public_key.fingerprint


# --- check_ciphertext -------------------------------------------------------------------------


def test_check_ciphertext_accepts_real_ciphertexts(small_key):
    public_key = small_key.public_key
    ciphertext = public_key.raw_encrypt(5)
    assert public_key.check_ciphertext(int(ciphertext), "c") == ciphertext
    assert public_key.check_ciphertext(1, "c") == 1
    assert public_key.check_ciphertext(public_key.nsquare - 1, "c") == public_key.nsquare - 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda k: 0, "not in the range"),
        (lambda k: -1, "not in the range"),
        (lambda k: -k.public_key.raw_encrypt(1), "not in the range"),
        (lambda k: k.public_key.nsquare, "not in the range"),
        (lambda k: k.public_key.nsquare + 1, "not in the range"),
        (lambda k: 2**4096, "not in the range"),
        (lambda k: k.public_key.n, "shares a factor"),
        (lambda k: k.p, "shares a factor"),
        (lambda k: k.q * 12345, "shares a factor"),
        (lambda k: k.p * (k.public_key.raw_encrypt(1) % k.q), "shares a factor"),
        (lambda k: k.public_key.nsquare - k.public_key.n, "shares a factor"),
    ],
    ids=["zero", "minus-one", "negative", "n-squared", "above-n-squared", "2^4096", "n", "p", "multiple-of-q",
         "p-times-unit", "n-squared-minus-n"],
)
def test_check_ciphertext_rejects(small_key, make, message):
    with pytest.raises(InvalidCiphertext, match=rf"^body\.weights\[3\]: .*{message}"):
        small_key.public_key.check_ciphertext(make(small_key), "body.weights[3]")


# --- fingerprints and JSON --------------------------------------------------------------------


def test_fingerprint_is_sha256_of_n(small_key):
    n = int(small_key.public_key.n)
    assert small_key.public_key.fingerprint == hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()


def test_check_fingerprint(small_key, other_small_key):
    public_key = small_key.public_key
    public_key.check_fingerprint(public_key.fingerprint, "body")
    for wrong in (other_small_key.public_key.fingerprint, "", None, public_key.fingerprint.upper(), 17):
        with pytest.raises(KeyMismatch, match=r"^body\.key_fingerprint: key fingerprint"):
            public_key.check_fingerprint(wrong, "body.key_fingerprint")


def test_public_key_json_round_trip(small_key):
    public_key = small_key.public_key
    payload = public_key.to_json()
    assert payload == {"n": format(int(public_key.n), "x"), "fingerprint": public_key.fingerprint}
    parsed = PublicKey.from_json(payload)
    assert parsed == public_key
    assert parsed.fingerprint == public_key.fingerprint
    assert parsed.nsquare == public_key.nsquare
    assert PublicKey.from_json({"n": payload["n"]}) == public_key


def test_public_key_from_json_wrong_fingerprint(small_key, other_small_key):
    payload = {"n": small_key.public_key.to_json()["n"], "fingerprint": other_small_key.public_key.fingerprint}
    with pytest.raises(KeyMismatch, match="^job.public_key: key fingerprint"):
        PublicKey.from_json(payload, "job.public_key")


def _odd(bits: int) -> str:
    return format((1 << (bits - 1)) | 1, "x")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda k: None, "expected an object with a hexadecimal 'n'"),
        (lambda k: "abc", "expected an object with a hexadecimal 'n'"),
        (lambda k: {}, "expected an object with a hexadecimal 'n'"),
        (lambda k: {"n": int(k.public_key.n)}, "expected an object with a hexadecimal 'n'"),
        (lambda k: {"n": ""}, "n: not a hexadecimal integer"),
        (lambda k: {"n": "xyz"}, "n: not a hexadecimal integer"),
        (lambda k: {"n": "12 34"}, "n: not a hexadecimal integer"),
        (lambda k: {"n": format(int(k.public_key.n) + 1, "x")}, "n: an odd modulus"),
        (lambda k: {"n": _odd(1023)}, "n: an odd modulus"),
        (lambda k: {"n": _odd(1025)}, "n: an odd modulus"),
        (lambda k: {"n": _odd(512)}, "n: an odd modulus"),
        (lambda k: {"n": "1"}, "n: an odd modulus"),
        (lambda k: {"n": "0"}, "n: an odd modulus"),
        (lambda k: {"n": "-" + format(int(k.public_key.n), "x")}, "public_key.n"),
    ],
    ids=["none", "string", "empty-object", "n-as-int", "empty-hex", "non-hex", "inner-space", "even",
         "1023-bits", "1025-bits", "512-bits", "one", "zero", "negative-n"],
)
def test_public_key_from_json_rejects_junk(small_key, make, message):
    with pytest.raises(SchemaError) as info:
        PublicKey.from_json(make(small_key))
    assert info.value.message.startswith("public_key")
    assert message in info.value.message


def test_private_key_json_round_trip(small_key):
    payload = small_key.to_json()
    assert set(payload) == {"p", "q"}
    restored = PrivateKey.from_json(payload)
    assert restored.public_key == small_key.public_key
    assert (restored.p, restored.q) == (small_key.p, small_key.q)
    ciphertext = small_key.public_key.raw_encrypt(-77)
    assert restored.raw_decrypt(ciphertext) == small_key.public_key.n - 77


def test_private_key_sorts_and_checks_primes(small_key):
    swapped = PrivateKey(small_key.public_key, small_key.q, small_key.p)
    assert swapped.p < swapped.q
    assert swapped.raw_decrypt(small_key.public_key.raw_encrypt(9)) == 9
    with pytest.raises(ValueError, match="not the distinct factors"):
        PrivateKey(small_key.public_key, small_key.p, small_key.q + 2)


def test_generate_rejects_unsupported_sizes():
    with pytest.raises(ValueError, match="key size must be one of"):
        PrivateKey.generate(1000)


def test_real_size_key(real_key):
    public_key = real_key.public_key
    assert public_key.bits == 2048
    assert public_key.ciphertext_bytes == 512
    assert public_key.n % 2 == 1
    for value in (0, 1, -1, 2**2000, -(2**1000)):
        assert real_key.raw_decrypt(public_key.raw_encrypt(value)) == value % public_key.n
    encrypted = public_key.raw_encrypt(-3)
    assert real_key.raw_decrypt(_multiply(public_key, encrypted, -(2**500))) == 3 * 2**500
    assert PublicKey.from_json(public_key.to_json()) == public_key


def test_small_key_shape(small_key):
    assert small_key.public_key.bits == 1024
    assert small_key.public_key.ciphertext_bytes == 256
    assert small_key.p * small_key.q == small_key.public_key.n
