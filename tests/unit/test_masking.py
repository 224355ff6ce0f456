"""Pairwise masks (common/crypto/masking.py): cancellation, uniformity over subsets, freshness, refusals."""

from __future__ import annotations

import base64
import itertools
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from support import CURVE25519_P, SLOW, base64_text

from common.crypto.masking import JobKeyPair, MaskContext, member_masks, pair_seed, prg_values
from common.protocol.errors import ProtocolViolation, SchemaError

# The largest prime below 2**64: a 64-bit modulus whose top bit is set about half the time.
MODULUS_64 = 2**64 - 59
# A 2048-bit odd modulus, the size of a real Paillier n.
MODULUS_2048 = (1 << 2047) + 0x1234567 * 2 + 1
# Chi-square critical value for 15 degrees of freedom (16 buckets) at a false-alarm rate of 1e-6:
# P(X > 56.49) = 1.0e-6 for X ~ chi2(15). A correct implementation fails this test once in a
# million seeds; the seed below is fixed, so the test is deterministic.
CHI2_15_CRITICAL_1E6 = 56.49
# Two-sided normal quantile for a false-alarm rate of 1e-6.
Z_1E6 = 4.892
DRAWS = 2000
BUCKETS = 16

# u-coordinates of the points of order 1, 2, 4 and 8 on Curve25519, and non-canonical encodings
# (p, p + 1) of two of them: each makes every X25519 shared secret all zero.
LOW_ORDER_POINTS = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    CURVE25519_P - 1,
    CURVE25519_P,
    CURVE25519_P + 1,
]


def key_pair(secret: bytes) -> JobKeyPair:
    return JobKeyPair(X25519PrivateKey.from_private_bytes(secret))


def seeded_keys(names: list[str], rng: random.Random) -> dict[str, JobKeyPair]:
    return {name: key_pair(rng.randbytes(32)) for name in names}


def all_masks(keys: dict[str, JobKeyPair], context: MaskContext, modulus: int, count: int) -> dict[str, list[int]]:
    """Every member's masks, each computed from the public keys of the others only."""
    publics = {name: pair.public_text for name, pair in keys.items()}
    return {
        name: member_masks(
            name, keys[name], {peer: text for peer, text in publics.items() if peer != name}, context, modulus, count
        )
        for name in context.members
    }


def subset_sum(masks: dict[str, list[int]], subset: tuple[str, ...], modulus: int) -> list[int]:
    return [sum(column) % modulus for column in zip(*(masks[name] for name in subset), strict=True)]


def context_for(members: list[str] | tuple[str, ...] | str, **changes: object) -> MaskContext:
    fields: dict[str, object] = {
        "job_id": "job-1",
        "round": 3,
        "attempt": 0,
        "kind": "gradient",
        "key_fingerprint": "ab" * 32,
        "members": members if isinstance(members, str) else tuple(members),
        "request": "digest-of-the-round-request",
    }
    fields.update(changes)
    return MaskContext(**fields)  # type: ignore[arg-type]


# --- cancellation over the whole member set ------------------------------------------------------

member_names = st.lists(st.text(min_size=1, max_size=10), min_size=2, max_size=8, unique=True)
contexts = st.fixed_dictionaries(
    {
        "job_id": st.text(min_size=1, max_size=20),
        "round": st.integers(0, 10**6),
        "attempt": st.integers(0, 100),
        "kind": st.sampled_from(["gradient", "statistics", "hessian"]),
        "key_fingerprint": st.text(alphabet="0123456789abcdef", min_size=1, max_size=64),
        "request": st.text(alphabet="0123456789abcdef", min_size=1, max_size=64),
    }
)


@settings(SLOW, max_examples=60)
@given(
    names=member_names,
    context_fields=contexts,
    modulus=st.integers(2, 2**2048),
    count=st.integers(0, 4),
    data=st.data(),
)
def test_masks_cancel_over_the_member_set(
    names: list[str], context_fields: dict[str, object], modulus: int, count: int, data: st.DataObject
) -> None:
    secrets = data.draw(st.lists(st.binary(min_size=32, max_size=32), min_size=len(names), max_size=len(names)))
    keys = {name: key_pair(secret) for name, secret in zip(names, secrets, strict=True)}
    if len({pair.public_text for pair in keys.values()}) < len(keys):
        return  # two equal keys: refused, tested below
    context = MaskContext(members=tuple(names), **context_fields)  # type: ignore[arg-type]
    masks = all_masks(keys, context, modulus, count)

    assert all(len(member) == count and all(0 <= m < modulus for m in member) for member in masks.values())
    assert subset_sum(masks, context.members, modulus) == [0] * count

    plaintexts = {
        name: data.draw(st.lists(st.integers(0, modulus - 1), min_size=count, max_size=count)) for name in names
    }
    masked = {name: [(x + m) % modulus for x, m in zip(plaintexts[name], masks[name], strict=True)] for name in names}
    assert [sum(column) % modulus for column in zip(*masked.values(), strict=True)] == [
        sum(column) % modulus for column in zip(*plaintexts.values(), strict=True)
    ]


def test_two_members_formula() -> None:
    """With two members, the first by name adds the pair's PRG values and the second subtracts them."""
    rng = random.Random(7)
    keys = seeded_keys(["bob", "alice"], rng)
    context = context_for(["bob", "alice"])
    assert context.members == ("alice", "bob")
    masks = all_masks(keys, context, MODULUS_2048, 5)
    publics = {name: pair.public_text for name, pair in keys.items()}
    seed = pair_seed(keys["alice"].shared_secret(publics["bob"]), context, publics)
    assert seed == pair_seed(keys["bob"].shared_secret(publics["alice"]), context, publics)
    expected = prg_values(seed, MODULUS_2048, 5)
    assert masks["alice"] == expected
    assert masks["bob"] == [(-value) % MODULUS_2048 for value in expected]


# --- strict subsets: never cancelling, uniform ---------------------------------------------------


def bucket_counts(values: list[int], modulus: int) -> list[int]:
    counts = [0] * BUCKETS
    for value in values:
        counts[value * BUCKETS // modulus] += 1
    return counts


def chi_square(counts: list[int]) -> float:
    expected = sum(counts) / len(counts)
    return sum((count - expected) ** 2 / expected for count in counts)


def test_no_strict_subset_cancels() -> None:
    rng = random.Random(11)
    names = ["ann", "ben", "cat", "dan", "eve"]
    keys = seeded_keys(names, rng)
    for attempt in range(20):
        context = context_for(names, attempt=attempt)
        masks = all_masks(keys, context, MODULUS_64, 3)
        assert subset_sum(masks, context.members, MODULUS_64) == [0, 0, 0]
        for size in range(1, len(names)):
            for subset in itertools.combinations(names, size):
                assert all(value != 0 for value in subset_sum(masks, subset, MODULUS_64)), subset


def test_strict_subset_sums_are_uniform() -> None:
    """2,000 contexts, one strict subset each: chi-square on 16 buckets and the top bit, at 1e-6."""
    rng = random.Random(20240917)
    names = ["owner-a", "owner-b", "owner-c", "owner-d"]
    keys = seeded_keys(names, rng)
    sums = []
    for draw in range(DRAWS):
        context = context_for(
            names, job_id=f"job-{draw}", round=rng.randrange(1000), attempt=rng.randrange(3), kind="gradient"
        )
        masks = all_masks(keys, context, MODULUS_64, 1)
        assert subset_sum(masks, context.members, MODULUS_64) == [0]
        subset = tuple(rng.sample(names, rng.randrange(1, len(names))))
        (value,) = subset_sum(masks, subset, MODULUS_64)
        assert value != 0
        sums.append(value)

    assert len(set(sums)) == DRAWS
    assert chi_square(bucket_counts(sums, MODULUS_64)) < CHI2_15_CRITICAL_1E6

    top_bit_probability = (MODULUS_64 - 2**63) / MODULUS_64
    expected = DRAWS * top_bit_probability
    deviation = Z_1E6 * (DRAWS * top_bit_probability * (1 - top_bit_probability)) ** 0.5
    assert abs(sum(value >> 63 for value in sums) - expected) < deviation

    # The same statistics reject an obviously skewed sample: the test is able to fail.
    assert chi_square(bucket_counts([value // 2 for value in sums], MODULUS_64)) > CHI2_15_CRITICAL_1E6
    assert sum((value // 2) >> 63 for value in sums) == 0


# --- freshness -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"attempt": 1},
        {"round": 4},
        {"job_id": "job-2"},
        {"kind": "statistics"},
        {"key_fingerprint": "cd" * 32},
        # A replay of the same attempt with other weights must not reuse its masks.
        {"request": "digest-of-another-request"},
    ],
)
def test_any_context_change_changes_every_mask(changes: dict[str, object]) -> None:
    rng = random.Random(3)
    names = ["alice", "bob", "carol"]
    keys = seeded_keys(names, rng)
    before = all_masks(keys, context_for(names), MODULUS_2048, 8)
    again = all_masks(keys, context_for(names), MODULUS_2048, 8)
    after = all_masks(keys, context_for(names, **changes), MODULUS_2048, 8)
    assert before == again
    for name in names:
        assert all(old != new for old, new in zip(before[name], after[name], strict=True)), name


def test_a_new_member_set_changes_every_mask() -> None:
    rng = random.Random(4)
    keys = seeded_keys(["alice", "bob", "carol", "dave"], rng)
    three = {name: keys[name] for name in ["alice", "bob", "carol"]}
    before = all_masks(three, context_for(list(three)), MODULUS_2048, 8)
    after = all_masks(keys, context_for(list(keys)), MODULUS_2048, 8)
    for name in three:
        assert all(old != new for old, new in zip(before[name], after[name], strict=True)), name
    # Not only through the new member's pairs: the seed of an old pair changes with the set too.
    publics = {name: keys[name].public_text for name in ["alice", "bob"]}
    secret = keys["alice"].shared_secret(publics["bob"])
    assert pair_seed(secret, context_for(list(three)), publics) != pair_seed(secret, context_for(list(keys)), publics)


def test_a_new_job_key_changes_the_masks() -> None:
    rng = random.Random(5)
    names = ["alice", "bob"]
    keys = seeded_keys(names, rng)
    before = all_masks(keys, context_for(names), MODULUS_2048, 4)
    keys["bob"] = key_pair(rng.randbytes(32))
    after = all_masks(keys, context_for(names), MODULUS_2048, 4)
    assert all(old != new for old, new in zip(before["alice"], after["alice"], strict=True))


# --- refusals ------------------------------------------------------------------------------------


def peers_of(keys: dict[str, JobKeyPair], own: str) -> dict[str, str]:
    return {name: pair.public_text for name, pair in keys.items() if name != own}


@pytest.fixture
def three() -> dict[str, JobKeyPair]:
    return seeded_keys(["alice", "bob", "carol"], random.Random(6))


def test_own_not_a_member(three: dict[str, JobKeyPair]) -> None:
    context = context_for(["bob", "carol"])
    with pytest.raises(ProtocolViolation, match="'alice' is not in the member set"):
        member_masks("alice", three["alice"], peers_of(three, "alice"), context, MODULUS_64, 1)


@pytest.mark.parametrize(
    "edit",
    [
        lambda peers, own: {k: v for k, v in peers.items() if k != "carol"},
        lambda peers, own: {**peers, "mallory": peers["bob"]},
        lambda peers, own: {**peers, "alice": own},
        lambda peers, own: {},
    ],
    ids=["missing", "unexpected", "self", "empty"],
)
def test_peers_must_be_exactly_the_other_members(three: dict[str, JobKeyPair], edit: object) -> None:
    context = context_for(list(three))
    peers = edit(peers_of(three, "alice"), three["alice"].public_text)  # type: ignore[operator]
    with pytest.raises(ProtocolViolation, match="other members"):
        member_masks("alice", three["alice"], peers, context, MODULUS_64, 1)


def test_reflected_or_duplicated_keys_are_refused(three: dict[str, JobKeyPair]) -> None:
    context = context_for(list(three))
    reflected = {"bob": three["alice"].public_text, "carol": three["carol"].public_text}
    duplicated = {"bob": three["carol"].public_text, "carol": three["carol"].public_text}
    for peers in (reflected, duplicated):
        with pytest.raises(ProtocolViolation, match="same job key"):
            member_masks("alice", three["alice"], peers, context, MODULUS_64, 1)


MALFORMED_KEYS: list[object] = [
    "",
    "not base64 at all!",
    base64_text(bytes(31)),
    base64_text(bytes(33)),
    base64_text(b"\x07" * 32)[:-2] + "B=",  # non-canonical: unused low bits set
    base64_text(b"\x07" * 32) + "\n",
    " " + base64_text(b"\x07" * 32)[1:],
    base64_text(b"\x07" * 32).replace("+", "-").replace("/", "_") + "ä",
    None,
    b"\x07" * 32,
    12345,
]


@pytest.mark.parametrize("peer_key", MALFORMED_KEYS)
def test_malformed_peer_key(three: dict[str, JobKeyPair], peer_key: object) -> None:
    with pytest.raises(SchemaError, match="base64 of 32 bytes"):
        three["alice"].shared_secret(peer_key)  # type: ignore[arg-type]
    context = context_for(list(three))
    peers = {**peers_of(three, "alice"), "bob": peer_key}
    with pytest.raises(SchemaError):
        member_masks("alice", three["alice"], peers, context, MODULUS_64, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("u", LOW_ORDER_POINTS + [point + 2**255 for point in LOW_ORDER_POINTS[:4]])
def test_low_order_peer_key(three: dict[str, JobKeyPair], u: int) -> None:
    peer_key = base64_text(u.to_bytes(32, "little"))
    with pytest.raises(SchemaError, match="low-order"):
        three["alice"].shared_secret(peer_key)
    context = context_for(list(three))
    with pytest.raises(SchemaError, match="low-order"):
        member_masks("alice", three["alice"], {**peers_of(three, "alice"), "carol": peer_key}, context, MODULUS_64, 1)


def test_shared_secret_is_symmetric(three: dict[str, JobKeyPair]) -> None:
    secret = three["alice"].shared_secret(three["bob"].public_text)
    assert secret == three["bob"].shared_secret(three["alice"].public_text)
    assert len(secret) == 32 and secret != three["alice"].shared_secret(three["carol"].public_text)


def test_generated_keys_are_fresh() -> None:
    first, second = JobKeyPair.generate(), JobKeyPair.generate()
    assert first.public_text != second.public_text
    assert len(base64.b64decode(first.public_text, validate=True)) == 32
    assert first.public_text in repr(first)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"members": ("alice",)}, ProtocolViolation),
        ({"members": ("alice", "bob", "alice")}, ProtocolViolation),
        ({"members": ("alice", "")}, SchemaError),
        ({"members": "alice"}, SchemaError),
        ({"job_id": ""}, SchemaError),
        ({"round": -1}, SchemaError),
        ({"attempt": True}, SchemaError),
        ({"kind": 3}, SchemaError),
    ],
)
def test_bad_contexts(changes: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        context_for(**{"members": ["alice", "bob"], **changes})  # type: ignore[arg-type]


def test_context_info_binds_every_field() -> None:
    base = context_for(["bob", "alice"])
    assert base.members == ("alice", "bob")
    assert base.info() == context_for(["alice", "bob"]).info()
    variants = [
        context_for(["alice", "bob"], attempt=1),
        context_for(["alice", "bob"], round=4),
        context_for(["alice", "bob"], job_id="job-2"),
        context_for(["alice", "bob"], kind="statistics"),
        context_for(["alice", "bob"], key_fingerprint="cd" * 32),
        context_for(["alice", "bob", "carol"]),
    ]
    assert len({base.info(), *(variant.info() for variant in variants)}) == len(variants) + 1


# --- the PRG ---------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=16, max_size=64), modulus=st.integers(2, 2**4096), count=st.integers(0, 20))
def test_prg_values_in_range_and_reproducible(seed: bytes, modulus: int, count: int) -> None:
    values = prg_values(seed, modulus, count)
    assert len(values) == count and all(0 <= value < modulus for value in values)
    assert prg_values(seed, modulus, count) == values
    assert prg_values(seed, modulus, count + 3)[:count] == values


def test_prg_values_depend_on_the_seed() -> None:
    seed = bytes(range(32))
    assert prg_values(seed, MODULUS_2048, 4) != prg_values(bytes(range(1, 33)), MODULUS_2048, 4)
    assert set(prg_values(seed, 2, 200)) == {0, 1}


@pytest.mark.parametrize(
    ("seed", "modulus", "count"),
    [(bytes(15), 7, 1), (bytes(32), 1, 1), (bytes(32), 7, -1), (bytes(32), True, 1), (bytes(32), 7, 2**40)],
)
def test_prg_values_refuses_bad_arguments(seed: bytes, modulus: int, count: int) -> None:
    with pytest.raises(ValueError):
        prg_values(seed, modulus, count)


def test_member_masks_refuses_bad_modulus(three: dict[str, JobKeyPair]) -> None:
    context = context_for(list(three))
    with pytest.raises(ValueError):
        member_masks("alice", three["alice"], peers_of(three, "alice"), context, 1, 0)


def test_pair_seed_binds_the_pair_and_its_keys(three: dict[str, JobKeyPair]) -> None:
    context = context_for(list(three))
    publics = {name: pair.public_text for name, pair in three.items()}
    secret = three["alice"].shared_secret(publics["bob"])
    seed = pair_seed(secret, context, {"alice": publics["alice"], "bob": publics["bob"]})
    assert seed == pair_seed(secret, context, {"bob": publics["bob"], "alice": publics["alice"]})
    assert seed != pair_seed(secret, context, {"alice": publics["bob"], "bob": publics["alice"]})
    assert seed != pair_seed(secret, context, {"alice": publics["alice"], "carol": publics["bob"]})
    with pytest.raises(ProtocolViolation):
        pair_seed(secret, context, {"alice": publics["alice"], "mallory": publics["bob"]})
    with pytest.raises(ProtocolViolation):
        pair_seed(secret, context, publics)
