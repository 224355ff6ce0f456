"""The JSON wire format: ciphertext vectors and checked field access.

A ciphertext travels as the base64 of its fixed-width big-endian bytes (the width of n²), so a
message's size depends only on the key and the number of ciphertexts, never on the values.
Every field read from a request goes through a ``require_*`` function that names the field in
the :class:`~common.protocol.errors.SchemaError` it raises.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Any

from common.crypto.bigint import from_bytes, mpz, to_fixed_bytes
from common.crypto.paillier import PublicKey
from common.protocol.errors import InvalidCiphertext, ProtocolViolation, SchemaError

MAX_VECTOR_LENGTH = 4096


def encode_ciphertexts(ciphertexts: Sequence[int | mpz], public_key: PublicKey) -> list[str]:
    """Ciphertexts as base64 strings of ``public_key.ciphertext_bytes`` bytes each."""
    width = public_key.ciphertext_bytes
    return [base64.b64encode(to_fixed_bytes(c, width)).decode("ascii") for c in ciphertexts]


def decode_ciphertexts(payload: Any, public_key: PublicKey, where: str, length: int | None = None) -> list[mpz]:
    """Parse a list of base64 ciphertexts and check each one against ``public_key``.

    What no message's type can say is a violation of the job's rules, not malformation: a count
    other than ``length`` (what the job's spec makes of the round) is a
    :class:`~common.protocol.errors.ProtocolViolation`, and a value of another width than the
    key's n², or outside Z*_{n²}, an :class:`~common.protocol.errors.InvalidCiphertext`.
    """
    if not isinstance(payload, list):
        raise SchemaError(f"{where}: expected a list of ciphertexts")
    if not payload or len(payload) > MAX_VECTOR_LENGTH:
        raise SchemaError(f"{where}: expected 1 to {MAX_VECTOR_LENGTH} ciphertexts")
    if length is not None and len(payload) != length:
        raise ProtocolViolation(f"{where}: expected {length} ciphertexts, got {len(payload)}")
    width = public_key.ciphertext_bytes
    result = []
    for index, item in enumerate(payload):
        field = f"{where}[{index}]"
        if not isinstance(item, str):
            raise SchemaError(f"{field}: expected a base64 string")
        try:
            raw = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SchemaError(f"{field}: not valid base64") from exc
        if len(raw) != width:
            raise InvalidCiphertext(f"{field}: expected {width} bytes, got {len(raw)}")
        result.append(public_key.check_ciphertext(from_bytes(raw), field))
    return result


def require_object(payload: Any, where: str) -> dict[str, Any]:
    """``payload`` if it is a JSON object."""
    if not isinstance(payload, dict):
        raise SchemaError(f"{where}: expected a JSON object")
    return payload


def require_str(payload: dict[str, Any], name: str, where: str = "body", max_length: int = 200) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise SchemaError(f"{where}.{name}: expected a non-empty string of at most {max_length} characters")
    return value


def require_int(payload: dict[str, Any], name: str, where: str = "body", minimum: int = 0, maximum: int = 2**31) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise SchemaError(f"{where}.{name}: expected an integer from {minimum} to {maximum}")
    return value


def require_number(
    payload: dict[str, Any], name: str, where: str = "body", minimum: float = -math.inf, maximum: float = math.inf
) -> float:
    value = payload.get(name)
    if math.isinf(minimum) and math.isinf(maximum):
        message = f"{where}.{name}: expected a finite number"
    else:
        message = f"{where}.{name}: expected a number from {minimum} to {maximum}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SchemaError(message)
    try:
        number = float(value)
    except OverflowError:
        raise SchemaError(message) from None
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise SchemaError(message)
    return number


def require_str_list(payload: dict[str, Any], name: str, where: str = "body", max_items: int = 1000) -> list[str]:
    value = payload.get(name)
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= max_items
        or not all(isinstance(item, str) and item for item in value)
    ):
        raise SchemaError(f"{where}.{name}: expected a list of 1 to {max_items} non-empty strings")
    if len(set(value)) != len(value):
        raise SchemaError(f"{where}.{name}: names must not repeat")
    return value
