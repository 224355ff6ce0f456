"""Slot packing (common/packing.py): layouts, plain and homomorphic packing, unpacking K-party sums."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from support import SLOW

from common.protocol.errors import EncodingOverflow, ProtocolViolation, SchemaError
from common.crypto.packing import SlotLayout, check_values, pack_encrypted, pack_plain, unpack_sum
from common.protocol.messages import parse
from coordinator.policy import aggregate



def decrypt_all(key, ciphertexts):
    return [int(key.raw_decrypt(c)) for c in ciphertexts]


def encrypted_reply(key, values, layout):
    """What one party sends: its signed values encrypted one by one, then packed homomorphically."""
    public_key = key.public_key
    return pack_encrypted(public_key, [public_key.raw_encrypt(v) for v in values], layout)


# --- SlotLayout -------------------------------------------------------------------------------


def test_for_key_densest_layout():
    layout = SlotLayout.for_key(1024, 100, 7)
    assert layout == SlotLayout(value_bits=100, count_bits=3, slots_per_ciphertext=9)
    assert layout.slot_bits == 104
    assert layout.bias == 2**100
    assert layout.max_contributors == 7
    assert layout.fits(1024)
    assert not SlotLayout(value_bits=100, count_bits=3, slots_per_ciphertext=10).fits(1024)


@pytest.mark.parametrize(("requested", "count_bits", "maximum"), [(1, 1, 1), (2, 2, 3), (3, 2, 3), (4, 3, 7),
                                                                  (1000, 10, 1023), (1023, 10, 1023), (1024, 11, 2047)])
def test_for_key_count_bits(requested, count_bits, maximum):
    layout = SlotLayout.for_key(2048, 64, requested)
    assert layout.count_bits == count_bits
    assert layout.max_contributors == maximum >= requested


@settings(max_examples=200, deadline=None)
@given(key_bits=st.sampled_from([1024, 2048, 3072, 4096]), value_bits=st.integers(1, 1200),
       max_contributors=st.integers(1, 100_000))
def test_for_key_always_fits_and_is_densest(key_bits, value_bits, max_contributors):
    try:
        layout = SlotLayout.for_key(key_bits, value_bits, max_contributors)
    except EncodingOverflow:
        assert 2 * (value_bits + 1 + max_contributors.bit_length()) > key_bits - 2
        return
    assert layout.value_bits == value_bits
    assert layout.max_contributors >= max_contributors
    assert layout.slots_per_ciphertext >= 2
    assert layout.fits(key_bits)
    denser = SlotLayout(value_bits=layout.value_bits, count_bits=layout.count_bits, slots_per_ciphertext=layout.slots_per_ciphertext + 1)
    assert not denser.fits(key_bits)


def test_for_key_refuses_slots_that_do_not_fit_twice():
    with pytest.raises(EncodingOverflow, match="does not fit twice in a 1024-bit plaintext"):
        SlotLayout.for_key(1024, 510, 1)
    assert SlotLayout.for_key(1024, 508, 1).slots_per_ciphertext == 2


@pytest.mark.parametrize(("values", "slots", "expected"), [(0, 4, 1), (3, 4, 1), (4, 4, 2), (7, 4, 2), (8, 4, 3),
                                                             (1, 2, 1), (2, 2, 2), (11, 1, 12)])
def test_ciphertext_count(values, slots, expected):
    assert SlotLayout(value_bits=8, count_bits=2, slots_per_ciphertext=slots).ciphertext_count(values) == expected


def test_layout_json_round_trip():
    layout = SlotLayout.for_key(2048, 160, 1000)
    payload = layout.model_dump(mode="json")
    assert payload == {"value_bits": 160, "count_bits": 10, "slots_per_ciphertext": 11}
    assert parse(SlotLayout, payload, "spec.layout") == layout


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, "spec.layout: expected an object"),
        ([1, 2, 3], "spec.layout: expected an object"),
        ({"count_bits": 2, "slots_per_ciphertext": 3}, "spec.layout.value_bits"),
        ({"value_bits": 0, "count_bits": 2, "slots_per_ciphertext": 3}, "spec.layout.value_bits"),
        ({"value_bits": -4, "count_bits": 2, "slots_per_ciphertext": 3}, "spec.layout.value_bits"),
        ({"value_bits": 4097, "count_bits": 2, "slots_per_ciphertext": 3}, "spec.layout.value_bits"),
        ({"value_bits": 8.5, "count_bits": 2, "slots_per_ciphertext": 3}, "spec.layout.value_bits"),
        ({"value_bits": "8", "count_bits": 2, "slots_per_ciphertext": 3}, "spec.layout.value_bits"),
        ({"value_bits": 8, "count_bits": True, "slots_per_ciphertext": 3}, "spec.layout.count_bits"),
        ({"value_bits": 8, "count_bits": 2, "slots_per_ciphertext": 0}, "spec.layout.slots_per_ciphertext"),
        ({"value_bits": 8, "count_bits": 2, "slots_per_ciphertext": None}, "spec.layout.slots_per_ciphertext"),
    ],
)
def test_layout_from_json_rejects(payload, message):
    with pytest.raises(SchemaError) as info:
        parse(SlotLayout, payload, "spec.layout")
    assert message in info.value.message


@pytest.mark.parametrize("fields", [(0, 1, 1), (1, 0, 1), (1, 1, 0), (-3, 2, 2)])
def test_layout_constructor_rejects_non_positive(fields):
    with pytest.raises(ValidationError):
        SlotLayout(**dict(zip(("value_bits", "count_bits", "slots_per_ciphertext"), fields, strict=True)))


# --- pack_plain / check_values ----------------------------------------------------------------


def test_pack_plain_bit_layout():
    """Slot 0 is the count 1, then value + bias in successive slot_bits-wide slots."""
    layout = SlotLayout(value_bits=4, count_bits=2, slots_per_ciphertext=3)  # slot_bits = 7, bias = 16
    packed = pack_plain([5, -3, 15, -15], layout)
    assert packed == [1 | (21 << 7) | (13 << 14), 31 | (1 << 7)]
    assert len(packed) == layout.ciphertext_count(4)


def test_pack_plain_empty_vector_is_just_the_count():
    assert pack_plain([], SlotLayout(value_bits=4, count_bits=2, slots_per_ciphertext=3)) == [1]


@pytest.mark.parametrize("bad", [16, -16, 17, -(2**40)])
def test_pack_plain_rejects_values_at_or_over_the_bound(bad):
    layout = SlotLayout(value_bits=4, count_bits=2, slots_per_ciphertext=3)
    pack_plain([15, -15], layout)
    with pytest.raises(EncodingOverflow, match=r"value\[1\] needs \d+ bits; the job's slots hold 4"):
        pack_plain([0, bad, 0], layout)


def test_check_values_names_quantity():
    layout = SlotLayout(value_bits=8, count_bits=2, slots_per_ciphertext=3)
    check_values([255, -255, 0], layout, "g")
    with pytest.raises(EncodingOverflow, match=r"^gradient\[2\] needs 9 bits"):
        check_values([1, 2, -256], layout, "gradient")


@st.composite
def layouts_and_vector(draw, max_values=12):
    value_bits = draw(st.integers(1, 250))
    count_bits = draw(st.integers(1, 6))
    slot_bits = value_bits + 1 + count_bits
    densest = (1022 // slot_bits)
    slots = draw(st.integers(1, max(1, densest)))
    layout = SlotLayout(value_bits=value_bits, count_bits=count_bits, slots_per_ciphertext=slots)
    bound = 2**value_bits - 1
    values = draw(st.lists(st.integers(-bound, bound), max_size=max_values))
    return layout, values


@settings(max_examples=200, deadline=None)
@given(case=layouts_and_vector())
def test_pack_plain_then_unpack_one_party(case):
    layout, values = case
    plaintexts = pack_plain(values, layout)
    assert len(plaintexts) == layout.ciphertext_count(len(values))
    assert all(0 <= p < 2 ** (layout.slots_per_ciphertext * layout.slot_bits) for p in plaintexts)
    assert unpack_sum(plaintexts, layout, len(values), "x") == (1, values)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_plain_sum_of_k_parties_unpacks_to_exact_sums(data):
    """Integer sums of K packed vectors (the plaintext side of aggregation) never carry between slots."""
    layout, first = data.draw(layouts_and_vector())
    parties = data.draw(st.integers(1, layout.max_contributors).filter(lambda k: k <= 64))
    bound = layout.bias - 1
    vectors = [first] + [data.draw(st.lists(st.integers(-bound, bound), min_size=len(first), max_size=len(first)))
                         for _ in range(parties - 1)]
    packed = [pack_plain(v, layout) for v in vectors]
    total = [sum(column) for column in zip(*packed)]
    assert unpack_sum(total, layout, len(first), "x") == (parties, [sum(column) for column in zip(*vectors)])


def test_worst_case_sum_at_max_contributors():
    """max_contributors parties all at ±(2**value_bits − 1) still unpack exactly."""
    layout = SlotLayout(value_bits=6, count_bits=3, slots_per_ciphertext=4)
    top = layout.bias - 1
    vectors = [[top, -top, top, top, -top]] * layout.max_contributors
    total = [sum(column) for column in zip(*(pack_plain(v, layout) for v in vectors))]
    assert unpack_sum(total, layout, 5, "x") == (7, [7 * top, -7 * top, 7 * top, 7 * top, -7 * top])


# --- unpack_sum rejections --------------------------------------------------------------------


def test_unpack_rejects_bits_beyond_slots():
    layout = SlotLayout(value_bits=4, count_bits=2, slots_per_ciphertext=3)
    plaintexts = pack_plain([1, 2, 3, 4], layout)  # groups of 3 and 2 slots
    with pytest.raises(EncodingOverflow, match="job j round 2: packed plaintext has bits beyond its slots"):
        unpack_sum([plaintexts[0] + (1 << 21), plaintexts[1]], layout, 4, "job j round 2")
    # The last ciphertext only has 2 slots: a bit in its (unused) third slot is also beyond.
    with pytest.raises(EncodingOverflow, match="beyond its slots"):
        unpack_sum([plaintexts[0], plaintexts[1] + (1 << 14)], layout, 4, "w")


def test_unpack_rejects_zero_contributors():
    layout = SlotLayout(value_bits=4, count_bits=2, slots_per_ciphertext=3)
    plaintexts = pack_plain([1, 2], layout)
    with pytest.raises(EncodingOverflow, match=r"contributor count 0 is outside 1\.\.3"):
        unpack_sum([plaintexts[0] - 1], layout, 2, "w")
    with pytest.raises(EncodingOverflow, match="contributor count 0"):
        unpack_sum([0], layout, 2, "w")


def test_unpack_rejects_too_many_contributors():
    layout = SlotLayout(value_bits=4, count_bits=2, slots_per_ciphertext=3)
    vectors = [[0, 1]] * (layout.max_contributors + 1)
    total = [sum(column) for column in zip(*(pack_plain(v, layout) for v in vectors))]
    with pytest.raises(EncodingOverflow, match=r"contributor count 4 is outside 1\.\.3"):
        unpack_sum(total, layout, 2, "w")


@pytest.mark.parametrize("count", [0, 1, 3])
def test_unpack_rejects_wrong_number_of_plaintexts(count):
    layout = SlotLayout(value_bits=4, count_bits=2, slots_per_ciphertext=3)
    with pytest.raises(ProtocolViolation, match=f"expected 2 packed ciphertexts, got {count}"):
        unpack_sum([1] * count, layout, 4, "w")


# --- pack_encrypted ---------------------------------------------------------------------------


def test_pack_encrypted_decrypts_to_pack_plain(small_key):
    layout = SlotLayout.for_key(small_key.public_key.bits, 40, 7)
    values = [0, 1, -1, 2**40 - 1, -(2**40 - 1), 123456789, -987654321] * 5
    packed = encrypted_reply(small_key, values, layout)
    assert len(packed) == layout.ciphertext_count(len(values)) > 1
    assert decrypt_all(small_key, packed) == pack_plain(values, layout)


@SLOW
@given(case=layouts_and_vector())
def test_pack_encrypted_matches_pack_plain(small_key, case):
    """Homomorphic packing of encrypted signed values decrypts to exactly the plain packing."""
    layout, values = case
    packed = encrypted_reply(small_key, values, layout)
    assert decrypt_all(small_key, packed) == pack_plain(values, layout)


@st.composite
def party_vectors(draw):
    value_bits = draw(st.integers(1, 240))
    parties = draw(st.integers(1, 8))
    max_contributors = draw(st.integers(parties, 100))
    count = draw(st.integers(1, 10))
    bound = 2**value_bits - 1
    edge = st.sampled_from([bound, -bound, 0])
    vector = st.lists(st.one_of(st.integers(-bound, bound), edge), min_size=count, max_size=count)
    return value_bits, max_contributors, draw(st.lists(vector, min_size=parties, max_size=parties))


@SLOW
@given(case=party_vectors())
def test_aggregate_of_k_encrypted_replies_unpacks_to_exact_sums(small_key, case):
    """decrypt(aggregate(pack(E(x_i)))) unpacks to (K, Σ x_i) exactly, for any in-bound values."""
    value_bits, max_contributors, vectors = case
    layout = SlotLayout.for_key(small_key.public_key.bits, value_bits, max_contributors)
    replies = [encrypted_reply(small_key, v, layout) for v in vectors]
    total = aggregate(small_key.public_key.nsquare, replies)
    contributors, sums = unpack_sum(decrypt_all(small_key, total), layout, len(vectors[0]), "x")
    assert contributors == len(vectors)
    assert sums == [sum(column) for column in zip(*vectors)]


@SLOW
@given(case=party_vectors(), data=st.data())
def test_values_at_or_over_the_bound_are_refused(case, data):
    value_bits, max_contributors, vectors = case
    layout = SlotLayout.for_key(1024, value_bits, max_contributors)
    vector = list(vectors[0])
    index = data.draw(st.integers(0, len(vector) - 1))
    vector[index] = data.draw(st.sampled_from([1, -1])) * data.draw(st.integers(2**value_bits, 2 ** (value_bits + 8)))
    with pytest.raises(EncodingOverflow, match=rf"value\[{index}\]"):
        pack_plain(vector, layout)


def test_real_size_layout_round_trip(real_key):
    """The model creator's default layout on a 2048-bit key: three parties sum exactly."""
    layout = SlotLayout.for_key(real_key.public_key.bits, 64 + 32 + 32 + 32, 1000)
    bound = layout.bias - 1
    vectors = [[bound, -bound, 5, 0, 7, -3, 2**100, -(2**150), 1, 2, 3, 4, 5, 6],
               [bound, -bound, -5, 0, 7, 3, 2**100, -(2**150), 0, 0, 0, 0, 0, 0],
               [bound, -bound, 0, 0, 7, -1, 0, 1, -1, -2, -3, -4, -5, -6]]
    replies = [encrypted_reply(real_key, v, layout) for v in vectors]
    assert len(replies[0]) == 2
    total = aggregate(real_key.public_key.nsquare, replies)
    assert unpack_sum(decrypt_all(real_key, total), layout, 14, "x") == (3, [sum(c) for c in zip(*vectors)])
