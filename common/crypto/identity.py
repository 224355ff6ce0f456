"""A data owner's long-term Ed25519 identity key, and the checking of signatures made with one.

Each data owner makes its identity key at first start and keeps it, readable by its own user
only, for as long as it exists (PROTOCOL.md section 9). The public half is registered at
enrolment; from then on the owner's name is bound to it: re-enrolling under that name, and
offering an ephemeral X25519 key for a job's masks, both need a signature by it. The coordinator
only relays these signed statements, so it cannot put a key of its own in a member's place (it
would then know the member's masks).

What gets signed is always :func:`canonical` bytes of a mapping that names its ``purpose``, so a
signature is bound to one kind of statement and cannot be replayed as another.

Text forms are fixed: a public key is standard base64 of its 32 raw bytes, a signature standard
base64 of its 64 raw bytes, a fingerprint the lowercase hex SHA-256 of the raw public key. Each
value has exactly one accepted text form, so a key text compared or stored as a string names one
key only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.protocol.errors import Forbidden, SchemaError

logger = logging.getLogger(__name__)

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
PRIVATE_KEY_MODE = 0o600

_FIELD_PRIME = 2**255 - 19
# The y-coordinates of the eight Ed25519 points of order dividing 8: the identity (1), order 2
# (p - 1), order 4 (0) and order 8 (these two, and with either sign of x). libsodium refuses the
# same keys (its has_small_order list).
_SMALL_ORDER_Y = frozenset(
    {
        0,
        1,
        _FIELD_PRIME - 1,
        2707385501144840649318225287225658788936804267575313519463743609750303402022,
        55188659117513257062467267217118295137698188065244968500265048394206261417927,
    }
)


def decode_fixed_base64(text: object, length: int) -> bytes | None:
    """The ``length`` bytes that ``text`` is the canonical standard base64 of, or ``None``.

    Parameters
    ----------
    text
        Anything; only a ``str`` can be accepted.
    length
        The exact number of bytes expected.

    Returns
    -------
    bytes or None
        ``None`` for anything else: a non-string, characters outside the base64 alphabet, wrong
        padding, another length, or a non-canonical encoding (non-zero unused bits), which would
        give one key or signature several text forms.

    Notes
    -----
    Never raises: the input usually comes from a peer, and junk must become a clean refusal by the
    caller, not a traceback.
    """
    if not isinstance(text, str) or len(text) != 4 * math.ceil(length / 3):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != length or base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def is_small_order(raw_public: bytes) -> bool:
    """Whether a raw Ed25519 public key encodes a point of small order (in any encoding).

    OpenSSL's Ed25519 verification accepts such keys, and for them it accepts signatures that
    anyone can make without a private key (the all-zero signature, for instance, is valid for
    about a quarter of all messages under the all-zero key). A name bound to one could be spoken
    for by anybody, so these keys are refused wherever one is read.
    """
    y = int.from_bytes(raw_public, "little") & ((1 << 255) - 1)
    return y % _FIELD_PRIME in _SMALL_ORDER_Y


def _encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _check_json_value(value: object, where: str) -> None:
    """Raise :class:`SchemaError` unless ``value`` has exactly one JSON text form."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(f"{where}: {value!r} has no JSON form")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                # json.dumps would silently turn 1 into "1": two statements, one text.
                raise SchemaError(f"{where}: key {key!r} is not a string")
            _check_json_value(item, f"{where}.{key}")
        return
    raise SchemaError(f"{where}: a {type(value).__name__} has no JSON form")


def canonical(fields: Mapping[str, object]) -> bytes:
    """The bytes that get signed for a statement: canonical JSON of ``fields``.

    JSON with sorted keys, separators ``(",", ":")``, ``ensure_ascii=True``, encoded as UTF-8
    (hence ASCII): signer and verifier build the same bytes from the same fields, whatever order
    they were written in.

    Every signed statement must carry a ``purpose`` string naming what kind of statement it is
    (``"enrol"``, ``"job-key"``, ...). Without it, a signature made for one purpose could be
    replayed as a statement of another whose fields happen to look alike; with it, the signed
    bytes of two purposes never coincide.

    Parameters
    ----------
    fields
        The statement: string keys; values that are ``None``, strings, booleans, integers, finite
        floats, lists or tuples of these, or mappings with string keys of these.

    Returns
    -------
    bytes
        The canonical encoding.

    Raises
    ------
    SchemaError
        ``purpose`` is missing or not a non-empty string, or a value or key has no unique JSON
        form (a non-string key, NaN or infinity, any other type).
    """
    purpose = fields.get("purpose")
    if not isinstance(purpose, str) or not purpose:
        raise SchemaError("a signed statement needs a non-empty 'purpose' string")
    _check_json_value(fields, "statement")
    text = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("utf-8")


def public_fingerprint(public_text: str) -> str:
    """The fingerprint of an Ed25519 public key given in its text form.

    Parameters
    ----------
    public_text
        Standard base64 of the 32 raw bytes of the key.

    Returns
    -------
    str
        Lowercase hex SHA-256 of the raw key: the same value as :attr:`IdentityKey.fingerprint`.

    Raises
    ------
    SchemaError
        ``public_text`` is not the canonical base64 of exactly 32 bytes, or it is a point of small
        order (:func:`is_small_order`), which no one should be allowed to register.
    """
    raw = decode_fixed_base64(public_text, PUBLIC_KEY_BYTES)
    if raw is None:
        raise SchemaError(f"an identity public key must be base64 of {PUBLIC_KEY_BYTES} bytes")
    if is_small_order(raw):
        raise SchemaError("an identity public key is a point of small order, for which anyone can sign")
    return hashlib.sha256(raw).hexdigest()


def verify(public_text: str, payload: bytes, signature: str, what: str) -> None:
    """Check that ``signature`` is the Ed25519 signature of ``payload`` by the key ``public_text``.

    Parameters
    ----------
    public_text
        The signer's registered public key, standard base64 of its 32 raw bytes.
    payload
        The signed bytes, normally :func:`canonical` of the statement rebuilt by the verifier from
        what it expects (never bytes taken from the sender as they are).
    signature
        Standard base64 of the 64-byte signature.
    what
        What the signature vouches for (e.g. ``"job key of owner 'alice'"``), named in the refusal.

    Raises
    ------
    Forbidden
        The key text or the signature text is malformed (not canonical base64, wrong length, not a
        string), the key is a point of small order (:func:`is_small_order`: anyone can sign for
        it), or the signature does not verify. Junk input always ends here: no other exception
        and no traceback, since these values come from peers.

    Notes
    -----
    OpenSSL's Ed25519 verification rejects non-canonical signature scalars, so a valid signature
    cannot be altered into a second valid one for the same payload.
    """
    raw_key = decode_fixed_base64(public_text, PUBLIC_KEY_BYTES)
    if raw_key is None:
        raise Forbidden(f"{what}: the public key is not base64 of {PUBLIC_KEY_BYTES} bytes")
    if is_small_order(raw_key):
        raise Forbidden(f"{what}: the public key is a point of small order, for which anyone can sign")
    raw_signature = decode_fixed_base64(signature, SIGNATURE_BYTES)
    if raw_signature is None:
        raise Forbidden(f"{what}: the signature is not base64 of {SIGNATURE_BYTES} bytes")
    if not isinstance(payload, bytes):
        raise Forbidden(f"{what}: nothing signable to check the signature against")
    try:
        key = Ed25519PublicKey.from_public_bytes(raw_key)
        key.verify(raw_signature, payload)
    except (InvalidSignature, ValueError) as error:
        raise Forbidden(f"{what}: the signature is not valid") from error


class IdentityKey:
    """A data owner's long-term Ed25519 signing key.

    The private key never leaves this object except into its key file, which only the owner's
    user may read: whoever reads it can enrol and offer job keys in the owner's name.

    Parameters
    ----------
    private_key
        The key; normally obtained through :meth:`load_or_create`.
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._raw_public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def load_or_create(cls, path: Path) -> IdentityKey:
        """The key kept at ``path``, made and written there first if there is none.

        A new key is written to a temporary file in the same directory created with mode 0600
        (``os.open``, so it is never readable by others, not even for an instant), synced, then
        moved into place with ``os.replace``: a crash leaves either no key or the whole key, never
        a truncated one that would lock the owner out of its name. A key file readable or writable
        by group or others is tightened to 0600 with a warning (it may already have been read).

        Parameters
        ----------
        path
            The key file (PEM, PKCS#8, unencrypted). Missing parent directories are created with
            mode 0700.

        Returns
        -------
        IdentityKey
            The loaded or new key.

        Raises
        ------
        ValueError
            The file exists but does not hold an Ed25519 private key; it is left untouched, since
            replacing it would silently change the owner's identity.
        OSError
            The file or its directory cannot be read, created or written.
        """
        path = Path(path)
        if path.exists():
            return cls._load(path)
        return cls._create(path)

    @classmethod
    def _load(cls, path: Path) -> IdentityKey:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            logger.warning("%s was accessible by group or others (mode %o); restricting it to 0600", path, mode)
            path.chmod(PRIVATE_KEY_MODE)
        try:
            private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path} does not hold an unencrypted PEM private key") from error
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ValueError(f"{path} holds a {type(private_key).__name__}, not an Ed25519 identity key")
        key = cls(private_key)
        logger.info("loaded identity key %s from %s", key.fingerprint[:16], path)
        return key

    @classmethod
    def _create(cls, path: Path) -> IdentityKey:
        key = cls(Ed25519PrivateKey.generate())
        pem = key._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        descriptor = os.open(temporary, flags, PRIVATE_KEY_MODE)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _sync_directory(path.parent)
        logger.info("generated identity key %s in %s", key.fingerprint[:16], path)
        return key

    @property
    def public_text(self) -> str:
        """Standard base64 of the 32 raw bytes of the public key: what gets registered."""
        return _encode(self._raw_public)

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of the raw public key."""
        return hashlib.sha256(self._raw_public).hexdigest()

    def sign(self, payload: bytes) -> str:
        """The Ed25519 signature of ``payload``, as standard base64 of its 64 bytes.

        Parameters
        ----------
        payload
            The bytes to sign: always :func:`canonical` bytes of a statement with a ``purpose``,
            so the signature cannot be replayed as a statement of another kind.
        """
        return _encode(self._private_key.sign(payload))

    def __repr__(self) -> str:
        # Never the private key, even in a debug log.
        return f"IdentityKey(fingerprint={self.fingerprint[:16]}...)"


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable, where the platform allows it (best effort)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
