"""Who is calling: bearer credentials, the roles they stand for, and the check on each endpoint.

Every call between parties carries ``Authorization: Bearer <token>``:

=====================  =============================  =========================================
caller → callee        credential                     how it is known to the callee
=====================  =============================  =========================================
data owner → TC        enrolment secret               shared out of band; only ``POST /data_owners``
data owner → TC        the owner's own credential     issued by the TC at enrolment (stored hashed)
TC → data owner        a per-owner coordinator token  issued by the TC at enrolment, kept by the owner
model creator → TC     model-creator token            shared out of band
TC → model creator     coordinator token              shared out of band
user → model creator   optional API token             shared out of band
=====================  =============================  =========================================

A missing or unknown credential is a 401, a known one of the wrong role a 403; nothing changes
in either case. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import g, request

from common.protocol.errors import Forbidden, Unauthorized

COORDINATOR = "coordinator"
MODEL_CREATOR = "model_creator"
DATA_OWNER = "data_owner"
ENROLMENT = "enrolment"
USER = "user"
OPERATOR = "operator"

V = TypeVar("V", bound=Callable[..., Any])


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its role and, for a data owner, its name."""

    role: str
    name: str | None = None


def new_token() -> str:
    """A fresh random credential (256 bits)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored of a credential: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class Authenticator:
    """Maps bearer tokens to callers: fixed tokens per role, plus a lookup for issued ones.

    ``open_roles`` are roles whose endpoints need no credential (the model creator's user API
    when no API token is configured).
    """

    def __init__(
        self,
        fixed: dict[str, str | None],
        lookup: Callable[[str], Caller | None] | None = None,
        open_roles: frozenset[str] = frozenset(),
    ) -> None:
        self._fixed = [(token, role) for role, token in fixed.items() if token]
        self._lookup = lookup
        self.open_roles = open_roles

    def identify(self, token: str | None) -> Caller | None:
        if not token:
            return None
        for expected, role in self._fixed:
            if same_token(token, expected):
                return Caller(role)
        return self._lookup(token) if self._lookup else None


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate(authenticator: Authenticator, roles: Iterable[str]) -> Caller:
    """The caller of the current request, who must hold one of ``roles``."""
    caller = authenticator.identify(bearer_token())
    if caller is None:
        raise Unauthorized("missing or unknown credentials (send 'Authorization: Bearer <token>')")
    if caller.role not in roles:
        raise Forbidden(f"a {caller.role.replace('_', ' ')} may not call {request.method} {request.path}")
    g.caller = caller
    return caller


def requires(*roles: str) -> Callable[[V], V]:
    """Mark a view as callable by ``roles`` only.

    The check runs before anything of the request is parsed (:func:`check_caller`), so a caller
    without credentials learns nothing from validation errors.
    """

    def mark(view: V) -> V:
        view.required_roles = roles  # type: ignore[attr-defined]
        return view

    return mark


def check_caller() -> None:
    """Before each request: authenticate the caller when its view is marked by :func:`requires`."""
    from flask import current_app

    view = current_app.view_functions.get(request.endpoint or "")
    roles = getattr(view, "required_roles", None)
    if roles:
        authenticator: Authenticator = current_app.extensions["auth"]
        if not set(roles) <= authenticator.open_roles:
            authenticate(authenticator, roles)
