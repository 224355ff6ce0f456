"""Packing many fixed-point values into the slots of one Paillier plaintext.

A message of m signed values becomes ``ceil((m + 1) / slots_per_ciphertext)`` ciphertexts. Slot 0
of the first ciphertext is the *contributor count*: every party puts 1 there, so after the
coordinator multiplies the ciphertexts of K parties the model creator decrypts K itself and does
not have to trust the coordinator's word for it. Every other slot holds ``value + bias`` with
``bias = 2**value_bits``, which is non-negative because each party checks ``|value| < bias``;
``count_bits`` spare bits above each slot absorb the carries of a sum over up to
``2**count_bits − 1`` parties, so slots never spill into one another.

Slot k of a ciphertext occupies bits ``[k·slot_bits, (k+1)·slot_bits)`` of the plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from common.crypto.bigint import mpz, powmod
from common.crypto.paillier import PublicKey
from common.protocol.errors import EncodingOverflow, ProtocolViolation
from common.protocol.fields import INTEGRAL

SlotCount = Annotated[int, Field(strict=True, ge=1, le=4096), INTEGRAL]


class SlotLayout(BaseModel):
    """How values are laid out in plaintexts: the same for every party of a job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value_bits: SlotCount
    count_bits: SlotCount
    slots_per_ciphertext: SlotCount

    @classmethod
    def for_key(cls, key_bits: int, value_bits: int, max_contributors: int) -> SlotLayout:
        """The densest layout for a key size, a value bound and a maximum number of parties."""
        count_bits = max(1, int(max_contributors).bit_length())
        slot_bits = value_bits + 1 + count_bits
        # Keep the packed sum below 2**(key_bits - 2) <= n / 2, so it never wraps around n.
        slots = (key_bits - 2) // slot_bits
        if slots < 2:
            raise EncodingOverflow(f"a slot of {slot_bits} bits does not fit twice in a {key_bits}-bit plaintext")
        return cls(value_bits=value_bits, count_bits=count_bits, slots_per_ciphertext=slots)

    @property
    def slot_bits(self) -> int:
        """Width of one slot: the biased value, its sign bit and room for carries."""
        return self.value_bits + 1 + self.count_bits

    @property
    def bias(self) -> int:
        """What each party adds to each signed value so its slot stays non-negative."""
        return 1 << self.value_bits

    @property
    def max_contributors(self) -> int:
        """The most parties whose packed messages may be summed without a carry overflow."""
        return (1 << self.count_bits) - 1

    def ciphertext_count(self, value_count: int) -> int:
        """Ciphertexts needed for ``value_count`` values plus the contributor count."""
        return -(-(value_count + 1) // self.slots_per_ciphertext)

    def fits(self, key_bits: int) -> bool:
        """Whether a full plaintext of this layout stays below n / 2 for a key of ``key_bits``."""
        return self.slots_per_ciphertext * self.slot_bits <= key_bits - 2


def _slot_groups(layout: SlotLayout, value_count: int) -> list[list[int]]:
    """Value indices per ciphertext, with ``-1`` standing for the contributor-count slot."""
    indices = [-1, *range(value_count)]
    step = layout.slots_per_ciphertext
    return [indices[i : i + step] for i in range(0, len(indices), step)]


def check_values(values: Sequence[int], layout: SlotLayout, what: str) -> None:
    """Raise unless every signed value fits its slot: ``|value| < 2**value_bits``."""
    for index, value in enumerate(values):
        if abs(value) >= layout.bias:
            raise EncodingOverflow(
                f"{what}[{index}] needs {abs(int(value)).bit_length()} bits; the job's slots hold {layout.value_bits}"
            )


def pack_plain(values: Sequence[int], layout: SlotLayout) -> list[int]:
    """The plaintexts one party's signed values pack into (contributor count 1 included)."""
    check_values(values, layout, "value")
    plaintexts = []
    for group in _slot_groups(layout, len(values)):
        packed = 0
        for slot, index in enumerate(group):
            slot_value = 1 if index < 0 else values[index] + layout.bias
            packed |= slot_value << (slot * layout.slot_bits)
        plaintexts.append(packed)
    return plaintexts


def pack_encrypted(
    public_key: PublicKey, ciphertexts: Sequence[mpz], layout: SlotLayout, masks: Sequence[int] | None = None
) -> list[mpz]:
    """Pack ciphertexts of signed values into the layout, homomorphically.

    Shifting a ciphertext by a slot multiplies its plaintext by ``2**slot_bits``, which Horner's
    rule does with ``slot_bits`` squarings per slot below the top one; the biases, the contributor
    count and this party's mask (``masks[i]`` for output ``i``, mod n; see
    :mod:`common.crypto.masking`) are added as one plaintext constant per output ciphertext, so
    masking costs no exponentiation.
    """
    nsquare = public_key.nsquare
    shift = mpz(1) << layout.slot_bits
    packed: list[mpz] = []
    for group in _slot_groups(layout, len(ciphertexts)):
        accumulator = None
        constant = 0
        for slot in reversed(range(len(group))):
            index = group[slot]
            term = ciphertexts[index] if index >= 0 else mpz(1)
            if accumulator is None:
                accumulator = term
            else:
                accumulator = powmod(accumulator, shift, nsquare) * term % nsquare
            constant |= (1 if index < 0 else layout.bias) << (slot * layout.slot_bits)
        assert accumulator is not None  # every group has at least one slot
        mask = masks[len(packed)] if masks is not None else 0
        packed.append(public_key.raw_add_constant(accumulator, constant + mask))
    return packed


def unpack_sum(
    plaintexts: Sequence[int | mpz], layout: SlotLayout, value_count: int, what: str
) -> tuple[int, list[int]]:
    """Split decrypted packed sums into (contributor count K, the K-party sum of each value).

    Raises when a plaintext has bits above its slots, K exceeds what the slots can carry, or a
    value lies beyond what K contributors can sum: each means the sum overflowed or was not made
    by the protocol (a masked sum missing a member, say), and no value is returned.
    """
    groups = _slot_groups(layout, value_count)
    if len(plaintexts) != len(groups):
        raise ProtocolViolation(f"{what}: expected {len(groups)} packed ciphertexts, got {len(plaintexts)}")
    mask = (1 << layout.slot_bits) - 1
    slots: dict[int, int] = {}
    for plaintext, group in zip(plaintexts, groups, strict=True):
        plaintext = int(plaintext)
        if plaintext >> (len(group) * layout.slot_bits):
            raise EncodingOverflow(f"{what}: packed plaintext has bits beyond its slots")
        for slot, index in enumerate(group):
            slots[index] = (plaintext >> (slot * layout.slot_bits)) & mask
    contributors = slots[-1]
    if not 0 < contributors <= layout.max_contributors:
        raise EncodingOverflow(f"{what}: contributor count {contributors} is outside 1..{layout.max_contributors}")
    offset = contributors * layout.bias
    values = [slots[i] - offset for i in range(value_count)]
    # Each contributor's |value| < bias, so K of them sum to less than K·bias in magnitude. A slot
    # outside that window was not summed by the protocol: masks left uncancelled by a missing,
    # repeated or forged contribution give a uniformly random plaintext, which fails here (or above)
    # with overwhelming probability.
    for index, value in enumerate(values):
        if abs(value) >= offset:
            raise EncodingOverflow(f"{what}: value {index} is outside what {contributors} contributor(s) can sum")
    return contributors, values
