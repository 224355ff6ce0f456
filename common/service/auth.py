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

import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

from flask import g, request

from common.protocol.errors import Forbidden, Unauthorized

COORDINATOR = "coordinator"
MODEL_CREATOR = "model_creator"
DATA_OWNER = "data_owner"
ENROLMENT = "enrolment"
USER = "user"

SECRET_NAMES = ("enrolment_secret", "model_creator_token", "coordinator_token")


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
    return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class Authenticator:
    """Maps bearer tokens to callers: fixed tokens per role, plus a lookup for issued ones."""

    def __init__(self, fixed: dict[str, str | None], lookup: Callable[[str], Caller | None] | None = None) -> None:
        self._fixed = [(token, role) for role, token in fixed.items() if token]
        self._lookup = lookup

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


def requires(*roles: str) -> Callable:
    """View decorator: authenticate with the app's authenticator (``app.extensions['auth']``)."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from flask import current_app

            authenticate(current_app.extensions["auth"], roles)
            return view(*args, **kwargs)

        wrapper.required_roles = roles
        return wrapper

    return decorate


def load_or_create_secrets(path: str | Path) -> dict[str, str]:
    """The federation's shared secrets from a JSON file (mode 0600), created if missing.

    This is what lets every party started from one checkout find the same secrets with no set-up;
    parties on different hosts are given the values they need through their configuration.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            values = json.loads(path.read_text())
            if all(isinstance(values.get(name), str) and values[name] for name in SECRET_NAMES):
                return values
        values = {name: new_token() for name in SECRET_NAMES}
        temporary = path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(values, handle)
        os.replace(temporary, path)
        return values


def resolve_secrets(config: dict[str, Any], names: Iterable[str]) -> None:
    """Fill each ``config[NAME]`` (e.g. ``ENROLMENT_SECRET``) left empty from the secrets file.

    Raises ``ValueError`` naming the setting when a secret is neither configured nor in a file.
    """
    missing = [name for name in names if not config.get(name.upper())]
    if not missing:
        return
    if not config.get("SECRETS_FILE"):
        raise ValueError(f"{missing[0].upper()} is not configured and no SECRETS_FILE is given")
    values = load_or_create_secrets(config["SECRETS_FILE"])
    for name in missing:
        config[name.upper()] = values[name]
