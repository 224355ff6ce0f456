"""Encryption randomness made ahead of need: fresh, never handed out twice, never wrong."""

from __future__ import annotations

import math
import secrets
import time

import pytest

from common.crypto import paillier
from common.crypto.bigint import gcd, mpz, powmod
from common.crypto.paillier import PrivateKey, PublicKey
from common.crypto.randomness import (
    DJN_EXPONENT_BITS,
    FixedBasePowers,
    ObfuscatorPool,
    ShortExponentRandomness,
    obfuscator_maker,
)


def test_a_private_key_makes_encryptions_of_zero_by_crt(small_key):
    values = {small_key.raw_obfuscator() for _ in range(20)}
    assert len(values) == 20
    assert all(small_key.raw_decrypt(value) == 0 for value in values)
    encrypted = small_key.public_key.raw_encrypt(-42, small_key.raw_obfuscator())
    assert small_key.raw_decrypt(encrypted) == small_key.public_key.n - 42


def test_the_pool_hands_out_each_value_once(small_key):
    pool = ObfuscatorPool(small_key.public_key, 8)
    pool.fill()
    assert len(pool) == 8
    taken = [pool.take() for _ in range(8)]
    assert len(set(taken)) == 8 and len(pool) == 0
    assert pool.misses == 0
    assert all(small_key.raw_decrypt(value) == 0 for value in taken)


def test_an_empty_pool_still_answers_with_a_fresh_value(small_key):
    pool = ObfuscatorPool(small_key.public_key, 4, small_key.raw_obfuscator)
    first, second = pool.take(), pool.take()
    assert first != second and pool.misses == 2 and pool.taken == 2
    assert small_key.raw_decrypt(first) == 0


def test_the_background_filler_refills_after_takes_and_stops(small_key):
    pool = ObfuscatorPool(small_key.public_key, 5).start()
    try:
        deadline = time.monotonic() + 30
        while len(pool) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(pool) == 5
        handed = {pool.take() for _ in range(3)}
        while len(pool) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(pool) == 5
        assert not handed & {pool.take() for _ in range(5)}
    finally:
        pool.stop()


def test_a_fixed_base_table_gives_the_powers_powmod_gives(small_key):
    nsquare = small_key.public_key.nsquare
    base = powmod(mpz(123456789), small_key.public_key.n, nsquare)
    powers = FixedBasePowers(base, nsquare, 100, window=6)
    exponents = [0, 1, 2, 63, 64, 65, 2**99, 2**100 - 1, *(secrets.randbits(100) for _ in range(20))]
    assert [powers.power(e) for e in exponents] == [powmod(base, e, nsquare) for e in exponents]
    for bad in (-1, 2**100):
        with pytest.raises(ValueError, match=r"exponent must be in \[0, 2\*\*100\)"):
            powers.power(bad)


def test_djn_obfuscators_are_fresh_encryptions_of_zero_from_a_base_of_the_partys_own(small_key):
    public_key = small_key.public_key
    djn = ShortExponentRandomness(public_key)
    assert djn.exponent_bits == DJN_EXPONENT_BITS[1024] == 320
    values = [djn() for _ in range(50)]
    assert len(set(values)) == 50
    assert all(0 < v < public_key.nsquare and gcd(v, public_key.n) == 1 for v in values)
    assert all(small_key.raw_decrypt(v) == 0 for v in values)
    assert small_key.raw_decrypt(public_key.raw_encrypt(-42, djn())) == public_key.n - 42
    # Each party draws its own base: two makers share no obfuscator.
    assert not set(values) & {ShortExponentRandomness(public_key)() for _ in range(50)}


def test_djn_exponents_are_the_literatures_for_each_security_level():
    assert DJN_EXPONENT_BITS[2048] == 448 and DJN_EXPONENT_BITS[3072] == 512


def test_the_job_names_the_scheme_each_party_makes_its_randomness_with(small_key):
    public_key = small_key.public_key
    assert obfuscator_maker(public_key, "standard") == public_key.raw_obfuscator
    assert obfuscator_maker(public_key, "standard", small_key.raw_obfuscator) == small_key.raw_obfuscator
    assert isinstance(obfuscator_maker(public_key, "djn"), ShortExponentRandomness)
    with pytest.raises(ValueError, match="unknown randomness scheme 'fast'"):
        obfuscator_maker(public_key, "fast")
    pool = ObfuscatorPool(public_key, 4, obfuscator_maker(public_key, "djn"))
    pool.fill()
    assert all(small_key.raw_decrypt(pool.take()) == 0 for _ in range(4))


def test_the_key_holders_obfuscators_have_the_distribution_of_r_to_the_n(monkeypatch):
    """Over every unit r of a toy key, r ↦ obfuscator hits each n-th residue once, as r ↦ r^n does."""
    key = PrivateKey(PublicKey(mpz(5 * 7)), mpz(5), mpz(7))
    n, nsquare = 35, 35 * 35
    units = [r for r in range(1, n) if math.gcd(r, n) == 1]
    drawn = iter(units)
    monkeypatch.setattr(paillier, "random_unit", lambda _: mpz(next(drawn)))
    obfuscators = [int(key.raw_obfuscator()) for _ in units]
    assert sorted(obfuscators) == sorted(pow(r, n, nsquare) for r in units)
    assert len(set(obfuscators)) == len(units) == 24


def test_every_obfuscator_is_an_nth_residue(small_key):
    phi = (small_key.p - 1) * (small_key.q - 1)
    nsquare = small_key.public_key.nsquare
    makers = [small_key.raw_obfuscator, small_key.public_key.raw_obfuscator,
              ShortExponentRandomness(small_key.public_key)]
    assert all(powmod(make(), phi, nsquare) == 1 for make in makers for _ in range(5))
    # A unit that is not an n-th residue fails the same test.
    assert powmod(small_key.public_key.n + 2, phi, nsquare) != 1
