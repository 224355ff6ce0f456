"""Typed settings every service shares, validated once at start-up.

Each service's settings class (``coordinator.config.CoordinatorSettings`` and the like) derives
from :class:`ServiceSettings`. Values come, in rising precedence, from the defaults, environment
variables with the service's prefix (``FT_COORDINATOR_ROUND_TIMEOUT=30``; lists and objects as
JSON) and the mapping the command line or a test gives. A bad value stops the service at once
with a :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.service.cli import CHECKOUT

SECRET_NAMES = ("enrolment_secret", "model_creator_token", "coordinator_token")

Seconds = Annotated[float, Field(gt=0, le=86_400)]


class SettingsError(Exception):
    """A setting that cannot be used; the message names it."""


class ServiceSettings(BaseSettings):
    """What every service is configured with."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, validate_default=True)

    testing: bool = False
    state_dir: Path
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+$")]
    max_content_length: Annotated[int, Field(ge=1024, le=1 << 30)] = 16 * 1024 * 1024
    request_timeout: Seconds = 30.0
    connect_retries: Annotated[int, Field(ge=0, le=20)] = 3
    traffic_log: Path | None = None
    secrets_file: Path | None = CHECKOUT / "var" / "federation_secrets.json"
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False


T = TypeVar("T", bound=ServiceSettings)


def load_settings(kind: type[T], overrides: Mapping[str, Any] | None = None) -> T:
    """Settings of ``kind`` from defaults, the environment and ``overrides`` (keys in any case).

    Raises
    ------
    SettingsError
        Naming the environment variable (or key) whose value cannot be used.
    """
    given = {key.lower(): value for key, value in (overrides or {}).items()}
    prefix = str(kind.model_config.get("env_prefix", ""))
    try:
        return kind(**given)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = str(error["loc"][0]) if error["loc"] else "settings"
        where = name.upper() if name in given else f"{prefix}{name}".upper()
        raise SettingsError(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None


def with_secrets(settings: T, names: Iterable[str]) -> T:
    """``settings`` with each secret of ``names`` left empty filled from its secrets file.

    Raises
    ------
    SettingsError
        When a secret is neither configured nor obtainable from a secrets file.
    """
    missing = [name for name in names if not getattr(settings, name)]
    if not missing:
        return settings
    if settings.secrets_file is None:
        raise SettingsError(f"{missing[0].upper()} is not configured and no SECRETS_FILE is given")
    values = load_or_create_secrets(settings.secrets_file)
    return settings.model_copy(update={name: values[name] for name in missing})


def load_or_create_secrets(path: Path) -> dict[str, str]:
    """The federation's shared secrets from a JSON file (mode 0600), created if missing.

    This is what lets every party started from one checkout find the same secrets with no set-up;
    parties on different hosts are given the values they need through their configuration.
    """
    from common.service.auth import new_token

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            values = json.loads(path.read_text())
            if all(isinstance(values.get(name), str) and values[name] for name in SECRET_NAMES):
                return {name: values[name] for name in SECRET_NAMES}
        values = {name: new_token() for name in SECRET_NAMES}
        temporary = path.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(values, handle)
        os.replace(temporary, path)
        return values
