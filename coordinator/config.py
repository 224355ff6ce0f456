"""The coordinator's settings: defaults, then ``FT_COORDINATOR_*`` variables, then the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.service.cli import CHECKOUT
from common.service.settings import Seconds, ServiceSettings


class CoordinatorSettings(ServiceSettings):
    """What the coordinator is configured with.

    Attributes
    ----------
    round_timeout
        Seconds an attempt at a round waits for the data owners' replies.
    round_retries
        Attempts at a round after the first, when too few owners replied.
    retry_delay
        Seconds between two attempts at a round.
    fan_out_threads
        Concurrent calls to data owners when a round is sent out.
    health_interval, health_timeout, health_misses
        While an attempt waits, each member yet to reply is asked ``GET /health`` every
        ``health_interval`` seconds (``health_timeout`` each); one that misses ``health_misses``
        in a row is silent: it fails the attempt at once, and is offline (left out of later rounds
        while the quorum is met without it) until it answers health again, which is asked every
        ``health_interval`` seconds too.
    enrolment_window
        Seconds an enrolment's signing time may be off the coordinator's clock, either way. An
        enrolment outside it is refused, so a recorded one cannot be replayed later.
    enrolment_secret
        What a data owner presents to enrol.
    model_creator_token
        What the model creator presents to the coordinator.
    coordinator_token
        What the coordinator presents to the model creator.

    The three secrets left empty are read from the coordinator's own secrets file (created if
    missing; see :mod:`common.service.settings`).
    """

    model_config = SettingsConfigDict(env_prefix="FT_COORDINATOR_")
    party: ClassVar[str] = "coordinator"

    state_dir: Path = CHECKOUT / "var" / "coordinator"
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+$")] = "http://127.0.0.1:8080"
    # Connection retries per call; a round has its own deadline and retries, so keep this low.
    connect_retries: Annotated[int, Field(ge=0, le=20)] = 2
    round_timeout: Seconds = 300.0
    round_retries: Annotated[int, Field(ge=0, le=100)] = 2
    retry_delay: Annotated[float, Field(ge=0, le=3600)] = 2.0
    fan_out_threads: Annotated[int, Field(ge=1, le=1024)] = 16
    health_interval: Seconds = 2.0
    health_timeout: Seconds = 2.0
    health_misses: Annotated[int, Field(ge=1, le=100)] = 3
    enrolment_window: Seconds = 300.0
    enrolment_secret: str | None = None
    model_creator_token: str | None = None
    coordinator_token: str | None = None
    # The federation operator's bearer token (DELETE /data_owners/<name>); if empty, one is made at
    # first start in the state dir (operator_token, mode 0600).
    operator_token: str | None = None
    # Jobs under keys of fewer than 2048 bits are refused, unless this test-only flag is set.
    test_only_small_keys: bool = False
