"""Errors shared by every party; none of them knows anything of HTTP.

Hierarchy::

    FederatedError                       anything this project raises on purpose
    ├── BadRequest                       the caller sent something unusable
    │   └── SchemaError                  malformed JSON, missing or mistyped field
    ├── Unauthorized                     no credentials, or credentials nobody issued
    ├── Forbidden                        valid credentials of a party whose role may not call this
    ├── NotFound                         unknown job, model, round
    ├── Conflict                         a message for a round or job in another state
    ├── DataError                        a data owner's data cannot serve the job
    ├── Refused                          a data owner refuses a job or round: a code, nothing more
    ├── EncodingOverflow                 a value does not fit the fixed-point range or slot
    ├── ProtocolViolation                a well-formed message that breaks the job's rules
    │   ├── InvalidCiphertext            not n²'s width, or not 0 < c < n² with gcd(c, n) = 1
    │   └── KeyMismatch                  message names another public key than the job's
    ├── TrainingError                    the maths cannot go on (e.g. a singular design)
    ├── StorageUnavailable               this party cannot use its state storage now (disk full, I/O error)
    └── UpstreamError                    another party failed, timed out or answered an error
        └── PeerUnreachable              it could not be reached or did not answer in time

Only what a party's API document itself rules out is a :class:`BadRequest` (400). A message the
document allows but that contradicts the job's key, the URL's job or what the party holds (a
stored model, say) is no malformation, since no document can say which values fit: a ciphertext
that is not one under the job's key, or a fingerprint that is not the job's, is therefore a
:class:`ProtocolViolation` (422), like any other value that breaks the job's rules.

An error that a peer answered with is re-raised on the caller's side as the class its ``type``
names, with ``peer`` set to who said it (:func:`from_peer`), so callers branch on what went wrong
(``except NotFound``), never on numeric statuses. The one table that maps errors to HTTP statuses
is :data:`common.service.app.STATUS_OF`; every error renders as ``{"error": message, "type": class
name}`` there, and no traceback ever reaches a client.
"""

from __future__ import annotations


class FederatedError(Exception):
    """Base class.

    Parameters
    ----------
    message
        What went wrong, naming the field, job, round or quantity concerned (and, for an error
        from a peer, the call that got it).
    peer
        The URL of the party that answered with this error, or could not be reached; ``None``
        when this process raised it.
    """

    def __init__(self, message: str, peer: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.peer = peer

    def to_json(self) -> dict[str, str]:
        """The body of the error response."""
        return {"error": self.message, "type": type(self).__name__}


class BadRequest(FederatedError):
    """The caller sent something this party cannot use."""


class SchemaError(BadRequest):
    """A request body or field does not have the expected shape."""


class Unauthorized(FederatedError):
    """No credentials, or credentials that nobody issued."""


class Forbidden(FederatedError):
    """Valid credentials of a party whose role may not make this call."""


class NotFound(FederatedError):
    """An unknown job, model or round."""


class Conflict(FederatedError):
    """A message for a job or round that is in another state (late, repeated, closed)."""


class DataError(FederatedError):
    """A data owner's CSV cannot serve the job (missing column, NaN, empty file, ...).

    ``code`` and ``column`` are what a data owner may tell others of it (see :class:`Refused`);
    the message, with file, row and cause, stays with the owner.
    """

    def __init__(self, message: str, code: str = "bad_value", column: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.column = column


#: Every code a data owner's refusal may carry: its data, then its policy (data_owner/policy.py).
REFUSAL_CODES = (
    "missing_column",
    "bad_value",
    "not_binary",
    "no_data",
    "bound_exceeded",
    "internal",
    "policy:key",
    "policy:key_size",
    "policy:model",
    "policy:columns",
    "policy:max_weight_bits",
    "policy:max_rounds",
    "policy:min_peers",
    "policy:members",
    "policy:identity",
    "policy:differencing",
    "policy:bounds",
    "policy:budget",
)


class Refused(FederatedError):
    """A data owner's refusal as it travels: a fixed code and the job column concerned, if any.

    PROTOCOL.md section 7: a refusal names no value, row, file path or schema beyond the job's own
    columns, since it reaches the coordinator and the model creator, who may provoke refusals at
    will to learn about the owner's data. ``detail`` is what happened, for the owner's own log and
    status page only; it is never rendered in an answer.

    The codes are :data:`REFUSAL_CODES`.
    """

    def __init__(self, code: str, column: str | None = None, detail: str | None = None) -> None:
        super().__init__(code if column is None else f"{code} (column {column!r})")
        self.code = code
        self.column = column
        self.detail = detail or self.message


class EncodingOverflow(FederatedError):
    """A value outside the range its fixed-point encoding or packing slot can hold.

    Raised instead of letting modular arithmetic wrap around: an overflow is an error,
    never a wrong model.
    """


class ProtocolViolation(FederatedError):
    """A well-formed message that breaks the job's rules (e.g. too few contributors)."""


class InvalidCiphertext(ProtocolViolation):
    """A value that cannot be a Paillier ciphertext under the job's key (width, range, gcd)."""


class KeyMismatch(ProtocolViolation):
    """A message encrypted under, or naming, another public key than the job's."""


class TrainingError(FederatedError):
    """The optimisation cannot proceed, e.g. the pooled design matrix is singular."""


class StorageUnavailable(FederatedError):
    """The party cannot use its state storage right now (the disk is full, an I/O error): try again later.

    Nothing was written (the transaction was rolled back); the request may be sent again as it
    was, and a job it belongs to goes on once the storage works again.
    """


class UpstreamError(FederatedError):
    """Another party answered with an error this project does not know by name."""


class PeerUnreachable(UpstreamError):
    """Another party could not be reached, or did not answer within the call's timeout."""


_BY_NAME: dict[str, type[FederatedError]] = {
    cls.__name__: cls
    for cls in (
        BadRequest,
        SchemaError,
        InvalidCiphertext,
        KeyMismatch,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        DataError,
        Refused,
        EncodingOverflow,
        ProtocolViolation,
        TrainingError,
        StorageUnavailable,
        UpstreamError,
        PeerUnreachable,
    )
}


def is_transient(error: FederatedError) -> bool:
    """Whether the same call may succeed later: a storage fault here or at a peer, or a peer not reached.

    A job meeting such an error waits and tries again; any other error is an answer that trying
    again would not change.
    """
    return isinstance(error, StorageUnavailable | PeerUnreachable)


def from_peer(type_name: object, message: str, peer: str) -> FederatedError:
    """The error a peer answered with, as the class its ``type`` names (else :class:`UpstreamError`)."""
    cls = _BY_NAME.get(type_name, UpstreamError) if isinstance(type_name, str) else UpstreamError
    error = cls.__new__(cls)
    FederatedError.__init__(error, message, peer)
    return error
