"""Encryption randomness made ahead of need: fresh, never handed out twice, never wrong."""

from __future__ import annotations

import time

from common.crypto.randomness import ObfuscatorPool


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
