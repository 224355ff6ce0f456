"""The data owner's settings: defaults, then ``FT_DATA_OWNER_*`` variables, then the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field
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


class DataOwnerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FT_DATA_OWNER_")

    name: OwnerName = "data-owner"
    data: Annotated[Path, AfterValidator(_readable_csv)] = CHECKOUT / "data" / "diabetes" / "train.csv"
    coordinator_url: Url = "http://localhost:8080"
    public_url: str = "http://127.0.0.1:5000"
    state_dir: Path = CHECKOUT / "var" / "data_owner"
    # Connection retries per call (with backoff up to 8 s): rides out a coordinator restart.
    connect_retries: Annotated[int, Field(ge=0, le=20)] = 8
    register_interval: Seconds = 2.0
    # The enrolment secret; if empty it is read from (or created in) SECRETS_FILE.
    enrolment_secret: str | None = None
    # Processes sharing each round's encrypted matrix–vector product; None: one per core.
    worker_processes: Annotated[int, Field(ge=1, le=256)] | None = None
