"""Errors shared by every party, each knowing the HTTP status it maps to.

Hierarchy::

    FederatedError (500)                 anything this project raises on purpose
    ├── BadRequest (400)                 the caller sent something unusable
    │   ├── SchemaError                  malformed JSON, missing or mistyped field
    │   ├── InvalidCiphertext            not an integer c with 0 < c < n², gcd(c, n) = 1
    │   └── KeyMismatch                  message names another public key than the job's
    ├── Unauthorized (401)               no credentials, or credentials nobody issued
    ├── Forbidden (403)                  valid credentials of a party whose role may not call this
    ├── NotFound (404)                   unknown job, model, round
    ├── Conflict (409)                   a message for a round or job in another state
    ├── DataError (422)                  a data owner's data cannot serve the job
    ├── EncodingOverflow (422)           a value does not fit the fixed-point range or slot
    ├── ProtocolViolation (422)          a well-formed message that breaks the job's rules
    ├── TrainingError (422)              the maths cannot go on (e.g. a singular design)
    └── UpstreamError (502)              another party failed, timed out or answered an error

Every error renders as ``{"error": message, "type": class name}`` through
:func:`common.service.app.register_error_handlers`; no traceback ever reaches a client.
"""

from __future__ import annotations


class FederatedError(Exception):
    """Base class; ``status`` is the HTTP status a service answers with."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, str]:
        """The body of the error response."""
        return {"error": self.message, "type": type(self).__name__}


class BadRequest(FederatedError):
    status = 400


class SchemaError(BadRequest):
    """A request body or field does not have the expected shape."""


class InvalidCiphertext(BadRequest):
    """A value that cannot be a Paillier ciphertext under the job's key."""


class KeyMismatch(BadRequest):
    """A message encrypted under, or naming, another public key than the job's."""


class Unauthorized(FederatedError):
    status = 401


class Forbidden(FederatedError):
    status = 403


class NotFound(FederatedError):
    status = 404


class Conflict(FederatedError):
    status = 409


class DataError(FederatedError):
    """A data owner's CSV cannot serve the job (missing column, NaN, empty file, ...)."""

    status = 422


class EncodingOverflow(FederatedError):
    """A value outside the range its fixed-point encoding or packing slot can hold.

    Raised instead of letting modular arithmetic wrap around: an overflow is an error,
    never a wrong model.
    """

    status = 422


class ProtocolViolation(FederatedError):
    """A well-formed message that breaks the job's rules (e.g. too few contributors)."""

    status = 422


class TrainingError(FederatedError):
    """The optimisation cannot proceed, e.g. the pooled design matrix is singular."""

    status = 422


class UpstreamError(FederatedError):
    """Another party could not be reached, timed out, or answered with an error.

    ``peer_status`` is the HTTP status the peer answered with, ``None`` when it did not answer.
    """

    status = 502

    def __init__(self, message: str, peer_status: int | None = None) -> None:
        super().__init__(message)
        self.peer_status = peer_status
