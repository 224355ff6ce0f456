"""Typed settings every service shares, validated once at start-up, and each party's secrets.

Each service's settings class (``coordinator.config.CoordinatorSettings`` and the like) derives
from :class:`ServiceSettings`. Values come, in rising precedence, from the defaults, environment
variables with the service's prefix (``FT_COORDINATOR_ROUND_TIMEOUT=30``; lists and objects as
JSON) and the mapping the command line or a test gives. A bad value stops the service at once
with a :class:`SettingsError` naming the variable.

Secrets
-------
Each party holds only the secrets of its role (:data:`SECRETS_OF`): the coordinator all three
(it is the federation's authority for them), the model creator the two tokens it shares with the
coordinator, a data owner the enrolment secret alone, so that a data owner's files never let it
act as the model creator. A secret comes from the party's settings (``FT_<PARTY>_<NAME>``) or else
from the party's own secrets file (``SECRETS_FILE``, a JSON object of its names only, mode 0600;
default ``<SECRETS_DIR>/<party>.json``, ``SECRETS_DIR`` defaulting to ``var/secrets`` in the
checkout). A party opens its own file and no other; ``SECRETS_FILE`` set to ``None`` means no file.

Where the file is missing:

- at the default location, the party provisions the whole checkout: under a lock in
  ``SECRETS_DIR`` it writes one file per role at once (fresh shared values, each file with only its
  role's names, each written atomically with mode 0600), then reads its own. This is what lets
  ``./run_federated_training.sh``, ``./run_data_owner.sh`` and ``./run_model_deployer.sh`` in one
  checkout find matching secrets with no set-up step;
- elsewhere, the coordinator creates its own file with fresh values (its operator then hands the
  enrolment secret to the data owners and the two tokens to the model creator); a data owner or a
  model creator stops with a :class:`SettingsError` naming the file and what to put in it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.service.cli import CHECKOUT
from common.service.files import PRIVATE_MODE, tighten, write_private

logger = logging.getLogger(__name__)

SECRET_NAMES = ("enrolment_secret", "model_creator_token", "coordinator_token")

#: The secrets each party holds, by party.
SECRETS_OF: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "coordinator": SECRET_NAMES,
        "model_creator": ("model_creator_token", "coordinator_token"),
        "data_owner": ("enrolment_secret",),
    }
)

#: Where the parties of one checkout provision their secrets files.
DEFAULT_SECRETS_DIR = CHECKOUT / "var" / "secrets"

Seconds = Annotated[float, Field(gt=0, le=86_400)]


class SettingsError(Exception):
    """A setting that cannot be used; the message names it."""


class ServiceSettings(BaseSettings):
    """What every service is configured with.

    Attributes
    ----------
    party
        The party the settings are for (a key of :data:`SECRETS_OF`), set by each subclass.
    secrets_dir
        Where the parties of one checkout provision their secrets files.
    secrets_file
        This party's own secrets file; by default ``secrets_dir / "<party>.json"``; ``None``: no
        file (every secret the party needs is then configured directly).
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True, validate_default=True)

    party: ClassVar[str] = ""

    testing: bool = False
    state_dir: Path
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+$")]
    max_content_length: Annotated[int, Field(ge=1024, le=1 << 30)] = 16 * 1024 * 1024
    request_timeout: Seconds = 30.0
    connect_retries: Annotated[int, Field(ge=0, le=20)] = 3
    # Tries again of a call answered 502, 503 or 504, each after the peer's Retry-After or a backoff.
    status_retries: Annotated[int, Field(ge=0, le=20)] = 3
    # Start even if a state database cannot be used: it is moved aside and an empty one begun.
    reset_state: bool = False
    traffic_log: Path | None = None
    secrets_dir: Path = DEFAULT_SECRETS_DIR
    secrets_file: Path | None = None
    ca_bundle: Path | None = None
    allow_insecure_http: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_secrets_file(cls, data: Any) -> Any:
        """An unset ``secrets_file`` is the party's file in ``secrets_dir`` (an explicit ``None`` stays)."""
        if isinstance(data, dict) and "secrets_file" not in data and cls.party:
            directory = data.get("secrets_dir") or DEFAULT_SECRETS_DIR
            return {**data, "secrets_file": Path(directory) / f"{cls.party}.json"}
        return data

    def provisions_secrets(self) -> bool:
        """Whether this party's secrets file is the default one, which it may provision with the others'."""
        default = self.secrets_dir / f"{self.party}.json"
        return self.secrets_file is not None and os.path.abspath(self.secrets_file) == os.path.abspath(default)


T = TypeVar("T", bound=ServiceSettings)


def load_settings(kind: type[T], overrides: Mapping[str, Any] | None = None) -> T:
    """Settings of ``kind`` from defaults, the environment and ``overrides`` (keys in any case).

    Raises
    ------
    SettingsError
        Naming the environment variable (or key) whose value cannot be used.
    """
    given = {key.lower(): value for key, value in (overrides or {}).items()}
    prefix = _prefix(kind)
    try:
        return kind(**given)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:  # a check across settings: its message names them
            raise SettingsError(message) from None
        name = str(error["loc"][0])
        where = name.upper() if name in given else f"{prefix}{name}".upper()
        raise SettingsError(f"{where}: {message}") from None


def with_secrets(settings: T) -> T:
    """``settings`` with each secret of its party left empty filled from the party's own secrets file.

    The file is opened only when a secret is missing; it is provisioned or created first where the
    module docstring says.

    Raises
    ------
    SettingsError
        When a secret is neither configured nor obtainable from the party's secrets file, or the
        file holds a secret that is not this party's.
    """
    prefix = _prefix(type(settings))
    missing = [name for name in SECRETS_OF[settings.party] if not getattr(settings, name)]
    if not missing:
        return settings
    path = settings.secrets_file
    if path is None:
        raise SettingsError(f"{prefix}{missing[0].upper()}: not configured, and no secrets file is given")
    where = f"{prefix}SECRETS_FILE"
    try:
        values = _own_secrets(settings, path, where)
    except OSError as exc:
        raise SettingsError(f"{where}: cannot use {path}: {exc.strerror or exc}") from None
    for name in missing:
        if name not in values:
            raise SettingsError(f"{where}: {path} holds no {name} (and {prefix}{name.upper()} is not set)")
    return settings.model_copy(update={name: values[name] for name in missing})


def provision_secrets(directory: Path) -> dict[str, str]:
    """Every party's secrets, one file per party in ``directory``, made first if there is none.

    For whoever starts every party of a federation itself (``local_federation``): it reads every
    party's file, which no party does.

    Raises
    ------
    SettingsError
        When only some of the files exist, or they disagree.
    """
    with _locked(directory):
        present = [party for party in SECRETS_OF if _file_of(directory, party).exists()]
        if not present:
            return _create_all(directory)
        if len(present) < len(SECRETS_OF):
            raise SettingsError(_partial(directory))
        values: dict[str, str] = {}
        for party, names in SECRETS_OF.items():
            path = _file_of(directory, party)
            held = _read_secrets(path, party, str(path))
            for name in names:
                if name not in held or values.setdefault(name, held[name]) != held[name]:
                    raise SettingsError(f"{path}: {name} is missing or differs from another party's")
        return values


def load_or_create_token(path: Path) -> str:
    """The token kept in ``path`` (mode 0600, tightened if looser), made and written there first if missing.

    For a secret a party makes for itself (e.g. a data owner's operator token in its state dir).

    Raises
    ------
    SettingsError
        When the file exists but is empty, or cannot be read or written.
    """
    from common.service.auth import new_token

    try:
        with _locked(path.parent, f".{path.name}.lock"):
            if path.exists():
                tighten(path)
                token = path.read_text(encoding="utf-8").strip()
                if not token:
                    raise SettingsError(f"{path} is empty; remove it to have a new token made")
                return token
            token = new_token()
            write_private(path, token + "\n")
            return token
    except OSError as exc:
        raise SettingsError(f"cannot use {path}: {exc.strerror or exc}") from None


def _own_secrets(settings: ServiceSettings, path: Path, where: str) -> dict[str, str]:
    party = settings.party
    if path.exists():
        return _read_secrets(path, party, where)
    if settings.provisions_secrets():
        return _provision_for(party, settings.secrets_dir, where)
    if party == "coordinator":
        return _create_coordinator_file(path, where)
    names = SECRETS_OF[party]
    example = json.dumps({name: "..." for name in names})
    variables = ", ".join(f"{_prefix(type(settings))}{name.upper()}" for name in names)
    raise SettingsError(
        f"{where}: {path} does not exist; write there (mode 0600) {example} with the values the"
        f" coordinator's operator gave you, or set {variables}"
    )


def _provision_for(party: str, directory: Path, where: str) -> dict[str, str]:
    """The secrets of ``party`` from its default file, every party's file provisioned first if none exists."""
    own = _file_of(directory, party)
    with _locked(directory):
        if own.exists():  # another party of the checkout provisioned while this one waited
            return _read_secrets(own, party, where)
        if any(_file_of(directory, other).exists() for other in SECRETS_OF):
            raise SettingsError(f"{where}: {_partial(directory)}")
        values = _create_all(directory)
    return {name: values[name] for name in SECRETS_OF[party]}


def _create_all(directory: Path) -> dict[str, str]:
    from common.service.auth import new_token

    values = {name: new_token() for name in SECRET_NAMES}
    for party, names in SECRETS_OF.items():
        write_private(_file_of(directory, party), json.dumps({name: values[name] for name in names}, indent=2) + "\n")
    logger.info("provisioned the secrets of every party in %s (one file each, mode 0600)", directory)
    return values


def _create_coordinator_file(path: Path, where: str) -> dict[str, str]:
    from common.service.auth import new_token

    with _locked(path.parent, f".{path.name}.lock"):
        if path.exists():
            return _read_secrets(path, "coordinator", where)
        values = {name: new_token() for name in SECRETS_OF["coordinator"]}
        write_private(path, json.dumps(values, indent=2) + "\n")
    logger.warning(
        "created the federation's secrets in %s: give its enrolment_secret to every data owner and its"
        " model_creator_token and coordinator_token to the model creator",
        path,
    )
    return values


def _read_secrets(path: Path, party: str, where: str) -> dict[str, str]:
    """The secrets in ``path``, which must be a JSON object of ``party``'s names only (tightened to 0600)."""
    tighten(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SettingsError(f"{where}: {path} is not a JSON object of secrets") from None
    if not isinstance(values, dict):
        raise SettingsError(f"{where}: {path} is not a JSON object of secrets")
    foreign = sorted(set(values) - set(SECRETS_OF[party]))
    if foreign:
        raise SettingsError(
            f"{where}: {path} holds {', '.join(foreign)}, which a {party.replace('_', ' ')} must not hold;"
            f" give it a file with only {', '.join(SECRETS_OF[party])}"
        )
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise SettingsError(f"{where}: {path}: {name} is not a non-empty string")
    return dict(values)


def _file_of(directory: Path, party: str) -> Path:
    return directory / f"{party}.json"


def _partial(directory: Path) -> str:
    present = [party for party in SECRETS_OF if _file_of(directory, party).exists()]
    return (
        f"only the secrets files of {', '.join(present)} exist in {directory}; restore the others, or remove"
        f" {directory} (and restart every party) to provision new secrets for all"
    )


@contextmanager
def _locked(directory: Path, name: str = ".lock") -> Iterator[None]:
    """An exclusive lock on ``directory / name``, between the processes of one checkout."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(directory / name, os.O_WRONLY | os.O_CREAT, PRIVATE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _prefix(kind: type[BaseSettings]) -> str:
    return str(kind.model_config.get("env_prefix", ""))
