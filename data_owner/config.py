"""The data owner's settings: defaults, then ``FT_DATA_OWNER_*`` variables, then the command line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.dataset import read_header
from common.protocol.errors import DataError
from common.protocol.messages import OwnerName, Url
from common.service.cli import CHECKOUT
from common.service.settings import Seconds, ServiceSettings


def _readable_csv(path: Path) -> Path:
    """A data file is checked at start-up: a missing or unreadable one stops the owner at once."""
    try:
        read_header(path)
    except DataError as exc:
        raise ValueError(exc.message) from None
    return path.resolve()


#: Where the data owners of one checkout keep their state, one directory per owner name.
DATA_OWNERS_DIR = CHECKOUT / "var" / "data_owner"


class DataOwnerSettings(ServiceSettings):
    """What a data owner is configured with.

    Its ``state_dir`` defaults to ``var/data_owner/<name>`` in the checkout, so that several
    owners started from one checkout never share their identity keys, ledgers or policies.
    """

    model_config = SettingsConfigDict(env_prefix="FT_DATA_OWNER_")
    party: ClassVar[str] = "data_owner"

    name: OwnerName = "data-owner"
    data: Annotated[Path, AfterValidator(_readable_csv)] = CHECKOUT / "data" / "diabetes" / "train.csv"
    coordinator_url: Url = "http://localhost:8080"
    public_url: str = "http://127.0.0.1:5000"
    state_dir: Path
    # Connection retries per call (with backoff up to 8 s): rides out a coordinator restart.
    connect_retries: Annotated[int, Field(ge=0, le=20)] = 8
    register_interval: Seconds = 2.0
    # How long a reply (contribution or refusal) is tried again while the coordinator cannot take
    # it (503, not reached) or this owner's audit cannot record it: retried with back-off, off the
    # worker, until the coordinator takes it or closes the attempt (409).
    delivery_seconds: Seconds = 120.0
    # The enrolment secret; if empty it is read from the owner's own SECRETS_FILE.
    enrolment_secret: str | None = None
    # Processes sharing each round's encrypted matrix–vector product; None: one per core.
    worker_processes: Annotated[int, Field(ge=1, le=256)] | None = None
    # The owner's privacy policy, over the policy file in the state dir (data_owner/policy.py
    # holds its fields and limits; FT_DATA_OWNER_POLICY='{"min_peers": 3}' or the command line).
    policy: dict[str, Any] = Field(default_factory=dict)
    # The bearer token of this owner's operator (GET /status); if empty, one is made at first start
    # in the state dir (operator_token, mode 0600).
    operator_token: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _state_dir_of_name(cls, data: Any) -> Any:
        """An unset ``state_dir`` is the owner's own directory under :data:`DATA_OWNERS_DIR`.

        A name that cannot be a directory name (``.``, ``..``, or not a valid name, which its
        own check reports) leaves it unset, and the owner is told to give one.
        """
        if isinstance(data, dict) and "state_dir" not in data:
            name = data.get("name", cls.model_fields["name"].default)
            if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) and name.strip(".") != "":
                return {**data, "state_dir": DATA_OWNERS_DIR / name}
        return data
