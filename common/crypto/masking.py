"""Pairwise additive masks mod n, which cancel in the sum over the whole member set only.

PROTOCOL.md section 9. For a job, each member makes an ephemeral X25519 key pair
(:class:`JobKeyPair`), signs its public half with its identity key, and the coordinator relays the
signed keys of the member set. Every pair of members (i, j) shares an X25519 secret; from it and
the :class:`MaskContext` of a round's attempt both derive the same pair seed and from that the same
pseudorandom values ``m_ij`` mod n, one per packed plaintext. Member i adds

    Σ_{j > i} m_ij − Σ_{j < i} m_ij  (mod n)

to each plaintext before re-randomisation, members ordered by name (Python string order, i.e.
by code point). Each ``m_ij`` is added once (by the member named first) and subtracted once (by
the other), so the masks cancel exactly in the sum over all members. Over any strict subset at
least one pair is split, and its value is a pseudorandom number mod n that the coordinator does
not know: the model creator then decrypts noise and the aggregate fails its contributor count and
slot bounds. A forwarded subset, a duplicated or replayed contribution, or a ciphertext the
coordinator made itself are refused that way.

Masks are fresh per job, round, attempt, kind of message, model creator key and member set: all
of them are bound into every pair seed, so a mask is never used twice and contributions of two
attempts cannot be combined into a cancelling sum.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from common.crypto.identity import canonical, decode_fixed_base64
from common.protocol.errors import ProtocolViolation, SchemaError

X25519_KEY_BYTES = 32
# Extra pseudorandom bits drawn per value above the modulus's own: the bias bound is 2**-128.
PRG_MARGIN_BITS = 128
MIN_SEED_BYTES = 16
# ChaCha20's 32-bit block counter covers 2**32 blocks of 64 bytes; stay well inside it.
MAX_KEYSTREAM_BYTES = 1 << 36

MASK_CONTEXT_PURPOSE = "federated_trainer/mask-context/v1"
PAIR_SEED_PURPOSE = "federated_trainer/mask-pair-seed/v1"
PRG_PURPOSE = "federated_trainer/mask-prg/v1"


class JobKeyPair:
    """An ephemeral X25519 key pair, made for one job and kept in memory only.

    A fresh key per job means that a member's pair secrets of one job tell nothing about those of
    another, and that nothing on disk can ever reveal past masks.

    Parameters
    ----------
    private_key
        The key; normally made by :meth:`generate`.
    """

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._private_key = private_key
        self._raw_public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> JobKeyPair:
        """A new key pair from the operating system's randomness."""
        return cls(X25519PrivateKey.generate())

    @property
    def public_text(self) -> str:
        """Standard base64 of the 32 raw bytes of the public key: what the member signs and sends."""
        return base64.b64encode(self._raw_public).decode("ascii")

    def shared_secret(self, peer_public_text: str) -> bytes:
        """The 32-byte X25519 secret shared with the holder of ``peer_public_text``.

        Symmetric: member i with j's public key gets what member j gets with i's.

        Parameters
        ----------
        peer_public_text
            The peer's public key, standard base64 of its 32 raw bytes.

        Returns
        -------
        bytes
            The raw shared secret; feed it to a KDF, never use it as a key directly.

        Raises
        ------
        SchemaError
            ``peer_public_text`` is not canonical base64 of 32 bytes, or it is a low-order point
            (or a non-canonical encoding of one). Such a point makes the shared secret all zero,
            whatever our private key: a rogue relay could then compute the pair's masks itself.
        """
        raw = decode_fixed_base64(peer_public_text, X25519_KEY_BYTES)
        if raw is None:
            raise SchemaError(f"a job key must be base64 of {X25519_KEY_BYTES} bytes")
        try:
            secret = self._private_key.exchange(X25519PublicKey.from_public_bytes(raw))
        except ValueError as error:
            # OpenSSL itself refuses the all-zero result of a low-order point.
            raise SchemaError("a job key is a low-order point (it gives an all-zero shared secret)") from error
        if secret == bytes(len(secret)):
            raise SchemaError("a job key is a low-order point (it gives an all-zero shared secret)")
        return secret

    def __repr__(self) -> str:
        # Never the private key, even in a debug log.
        return f"JobKeyPair(public_text={self.public_text!r})"


@dataclass(frozen=True)
class MaskContext:
    """Everything a round's attempt's masks are bound to.

    Two contexts that differ in any field give unrelated masks. Binding the member set matters
    most: a retry on a new member set (PROTOCOL.md section 9) must not reuse the masks of the
    failed set, or the coordinator could combine contributions of the two attempts.

    Parameters
    ----------
    job_id
        The job.
    round
        The round number, from 0.
    attempt
        The attempt of that round, from 0; a retry gets fresh masks.
    kind
        What the masked plaintexts carry (e.g. ``"gradient"``, ``"statistics"``), so two
        messages of one round never share masks.
    key_fingerprint
        The fingerprint of the model creator's Paillier key the plaintexts are encrypted under.
    members
        The names of the members, at least two and all different; stored sorted, whatever order
        they were given in.
    request
        A digest of what the round asks (its encrypted weights). An owner asked the same attempt
        twice with other weights must not add the same masks twice: the quotient of its two
        replies would be E(A_i·Δw), its statistics unmasked. With the request bound, a replay with
        other weights gets unrelated masks, and the quotient is noise.

    Raises
    ------
    SchemaError
        A field has the wrong type, a string is empty, or a number is negative.
    ProtocolViolation
        Fewer than two members, or a name given twice.
    """

    job_id: str
    round: int
    attempt: int
    kind: str
    key_fingerprint: str
    members: tuple[str, ...]
    request: str

    def __post_init__(self) -> None:
        for name in ("job_id", "kind", "key_fingerprint", "request"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise SchemaError(f"mask context: {name} must be a non-empty string")
        for name in ("round", "attempt"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SchemaError(f"mask context: {name} must be a non-negative integer")
        if isinstance(self.members, (str, bytes)) or not all(
            isinstance(member, str) and member for member in self.members
        ):
            raise SchemaError("mask context: members must be non-empty names")
        members = tuple(sorted(self.members))
        if len(set(members)) != len(members):
            raise ProtocolViolation("mask context: a member is named twice")
        if len(members) < 2:
            raise ProtocolViolation("mask context: masking needs at least two members")
        object.__setattr__(self, "members", members)

    def fields(self) -> dict[str, object]:
        """The context as a JSON-ready mapping (members as a sorted list)."""
        return {
            "job_id": self.job_id,
            "round": self.round,
            "attempt": self.attempt,
            "kind": self.kind,
            "key_fingerprint": self.key_fingerprint,
            "members": list(self.members),
            "request": self.request,
        }

    def info(self) -> bytes:
        """Canonical bytes binding every field, under a purpose of their own."""
        return canonical({"purpose": MASK_CONTEXT_PURPOSE, **self.fields()})


def _value_width(modulus: int, count: int) -> int:
    """The bytes drawn per value; raise :class:`ValueError` for an unusable modulus or count."""
    if not isinstance(modulus, int) or isinstance(modulus, bool) or modulus < 2:
        raise ValueError("the modulus must be an integer of at least 2")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError("the count must be a non-negative integer")
    width = (modulus.bit_length() + PRG_MARGIN_BITS + 7) // 8
    if count * width > MAX_KEYSTREAM_BYTES:
        raise ValueError(f"{count} values of {width} bytes exceed one keystream")
    return width


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def prg_values(seed: bytes, modulus: int, count: int) -> list[int]:
    """``count`` pseudorandom integers, uniform mod ``modulus`` up to a bias of at most 2**-128.

    A 32-byte ChaCha20 key is derived from ``seed`` with HKDF-SHA256, its info binding the
    modulus, and its keystream (zero nonce: the key is used for this one stream only) is cut into
    ``count`` big-endian integers of ``ceil((modulus.bit_length() + 128) / 8)`` bytes, each reduced
    mod ``modulus``. An integer uniform on ``[0, 2**L)`` reduced mod n is within statistical
    distance ``n / 2**L < 2**(bit_length - L) <= 2**-128`` of uniform mod n, so a mask reveals
    nothing of the value it hides beyond that bound.

    Parameters
    ----------
    seed
        A secret of at least 16 bytes, uniformly random (e.g. a pair seed).
    modulus
        The modulus n, at least 2.
    count
        How many values, at least 0.

    Returns
    -------
    list of int
        The values, each in ``[0, modulus)``. The first k values do not depend on ``count``.

    Raises
    ------
    ValueError
        ``seed`` is too short, ``modulus`` < 2, ``count`` < 0, or the keystream would be longer
        than 2**36 bytes.
    """
    if not isinstance(seed, bytes) or len(seed) < MIN_SEED_BYTES:
        raise ValueError(f"a PRG seed must be at least {MIN_SEED_BYTES} bytes")
    width = _value_width(modulus, count)
    key = _hkdf(seed, canonical({"purpose": PRG_PURPOSE, "modulus": modulus}))
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    stream = memoryview(encryptor.update(bytes(count * width)))
    return [int.from_bytes(stream[start : start + width], "big") % modulus for start in range(0, count * width, width)]


def pair_seed(shared_secret: bytes, context: MaskContext, pair: Mapping[str, str]) -> bytes:
    """The 32-byte seed of one pair's masks, the same for both members of the pair.

    HKDF-SHA256 over the pair's X25519 secret, its info binding the whole context, the two names
    in sorted order and their two public keys in that order: both members build the same info, and
    a key relayed for one pair or context gives nothing usable for another.

    Parameters
    ----------
    shared_secret
        The pair's X25519 secret (:meth:`JobKeyPair.shared_secret`).
    context
        The round's attempt.
    pair
        The two members' names mapped to their X25519 public texts.

    Raises
    ------
    ProtocolViolation
        ``pair`` does not name exactly two members of ``context``.
    """
    names = sorted(pair)
    if len(names) != 2 or not set(names) <= set(context.members):
        raise ProtocolViolation("a mask pair must be two members of the member set")
    info = canonical(
        {
            "purpose": PAIR_SEED_PURPOSE,
            "context": context.fields(),
            "pair": names,
            "pair_keys": [pair[name] for name in names],
        }
    )
    return _hkdf(shared_secret, info)


def member_masks(
    own: str,
    own_keys: JobKeyPair,
    peers: Mapping[str, str],
    context: MaskContext,
    modulus: int,
    count: int,
) -> list[int]:
    """The masks member ``own`` adds to its ``count`` packed plaintexts in ``context``.

    ``Σ_{j > own} PRG(s_own,j) − Σ_{j < own} PRG(s_own,j) mod modulus``, members ordered by name,
    where ``s_own,j`` is :func:`pair_seed`. Summed over every member of ``context.members`` the
    masks are exactly 0 mod ``modulus``; over any strict subset they are pseudorandom.

    Parameters
    ----------
    own
        This member's name.
    own_keys
        This member's key pair for the job.
    peers
        Every other member's name mapped to its X25519 public text, as relayed (after the
        signatures on them have been checked).
    context
        The round's attempt.
    modulus
        The plaintext modulus n.
    count
        The number of packed plaintexts.

    Returns
    -------
    list of int
        One mask in ``[0, modulus)`` per plaintext.

    Raises
    ------
    ProtocolViolation
        ``own`` is not a member, ``peers`` is not exactly the other members, or two members
        present the same public key (a relay reflecting or duplicating keys).
    SchemaError
        A peer key is malformed or a low-order point.
    ValueError
        ``modulus`` or ``count`` is out of range (see :func:`prg_values`).
    """
    if own not in context.members:
        raise ProtocolViolation(f"mask: {own!r} is not in the member set")
    others = set(context.members) - {own}
    if set(peers) != others:
        missing = sorted(others - set(peers))
        unexpected = sorted(set(peers) - others)
        raise ProtocolViolation(
            f"mask: job keys must be those of the other members (missing {missing}, unexpected {unexpected})"
        )
    _value_width(modulus, count)
    own_public = own_keys.public_text
    keys = [own_public, *peers.values()]
    if len(set(keys)) != len(keys):
        raise ProtocolViolation("mask: two members present the same job key")
    masks = [0] * count
    for peer in sorted(peers):
        secret = own_keys.shared_secret(peers[peer])
        seed = pair_seed(secret, context, {own: own_public, peer: peers[peer]})
        values = prg_values(seed, modulus, count)
        if peer > own:
            masks = [mask + value for mask, value in zip(masks, values, strict=True)]
        else:
            masks = [mask - value for mask, value in zip(masks, values, strict=True)]
    return [mask % modulus for mask in masks]
