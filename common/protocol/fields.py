"""Field types and validation errors shared by the messages, the job spec and the slot layout.

Two kinds of refusal come out of validation, and they answer differently:

* a value that the API document itself rules out (a string for a number, a number out of its
  bounds, a missing field) is a :class:`~common.protocol.errors.SchemaError`, 400;
* a value that the document allows but that contradicts another (a label that is also a feature,
  slots too narrow for the weights, a key that is not the spec's) is *inconsistent*: a
  :class:`~common.protocol.errors.ProtocolViolation`, 422.

So a body valid by the document is never refused as malformed.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

from common.protocol.errors import FederatedError, ProtocolViolation, SchemaError

INCONSISTENT = "inconsistent"


def _integral(value: Any) -> Any:
    """JSON has one number type: 3.0 is the integer 3, as JSON Schema's ``integer`` says."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


INTEGRAL = BeforeValidator(_integral)
"""The last mark of every integer field: a JSON number with no fractional part is an integer.

Written after the field's bounds (``Annotated[int, Field(strict=True, ge=0, le=256), INTEGRAL]``)
so the bounds stay in the API document; strict, so a boolean or a string is never an integer.
"""


def inconsistent(message: str) -> PydanticCustomError:
    """The error a validator raises for values that contradict each other (answered with 422)."""
    return PydanticCustomError(INCONSISTENT, message)


# Steps pydantic names in an error's location that are no field: union members, validators.
_VALIDATOR_STEP = re.compile(
    r"^(function-\w+|list|dict|tuple|set|nullable|union|tagged-union|constrained-\w+)(\[.*\])?$"
)

_PLAIN_WORDS = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "dataclass_type": "expected an object",
    "dataclass_exact_type": "expected an object",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
}


def validation_error(exc: ValidationError, where: str = "body") -> FederatedError:
    """The first error of a validation as ``where.field[index]: what was expected``.

    A :class:`ProtocolViolation` for inconsistent values, a :class:`SchemaError` for the rest.
    """
    error = exc.errors(include_url=False)[0]
    location = where
    for part in error["loc"]:
        if isinstance(part, str) and _VALIDATOR_STEP.match(part):
            continue
        location += f"[{part}]" if isinstance(part, int) else f".{part}"
    message = _PLAIN_WORDS.get(error["type"]) or error["msg"].removeprefix("Value error, ")
    if error["type"] == INCONSISTENT:
        return ProtocolViolation(f"{location}: {message}")
    return SchemaError(f"{location}: {message}")
