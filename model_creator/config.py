"""The model creator's settings: defaults, then ``FT_MODEL_CREATOR_*`` variables, then the command line.

The encoding parameters fix the fixed-point scales and the slot layout of every job
(PROTOCOL.md sections 3 and 6): a data owner's statistics may use ``data_bits`` integer bits,
weights ``|w| < max_abs_weight`` (per job, default ``2**default_weight_bits``). The job spec
checks their combination again for each job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.crypto.paillier import SECURE_KEY_BITS
from common.dataset import read_header
from common.protocol.errors import DataError
from common.protocol.messages import Url
from common.protocol.spec import MAX_DATA_OWNERS, ColumnName, FeatureList
from common.service.cli import CHECKOUT
from common.service.settings import Seconds, ServiceSettings

DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def _unset_if_empty(value: Any) -> Any:
    """``none`` (``--test-data none``) or an empty ``FT_MODEL_CREATOR_TEST_DATA``: no test data."""
    return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value


def _readable_csv(path: Path | None) -> Path | None:
    """The test data is checked at start-up: a missing or unreadable file stops the service at once."""
    if path is None:
        return None
    try:
        read_header(path)
    except DataError as exc:
        raise ValueError(exc.message) from None
    return path.resolve()


def _shipped_test_data() -> Path | None:
    """The shipped test split, where there is one (an installed package has none: no test data)."""
    shipped = CHECKOUT / "data" / "diabetes" / "test.csv"
    return shipped if shipped.is_file() else None


TestData = Annotated[Path | None, BeforeValidator(_unset_if_empty), AfterValidator(_readable_csv)]


class ModelCreatorSettings(ServiceSettings):
    """What the model creator is configured with.

    Attributes
    ----------
    test_data
        CSV that ``GET /prediction`` scores models on and whose header a training request's
        columns are checked against; ``None``: no test data (no metrics, no column check).
    reconcile_interval
        Seconds between two checks for jobs that a transient fault interrupted (a storage fault
        here or at the coordinator, a coordinator not reached), rounds awaited for longer than
        ``reorder_after`` seconds (ordered again: the coordinator resumes or delivers them again),
        and finished models whose job the coordinator has not closed yet.
    column_check_timeout
        Seconds ``POST /model`` waits for the coordinator's list of the federation's columns, in one
        attempt without retries: a coordinator that is away does not hold the request up (the job
        is accepted with a warning, and opened at the coordinator when it answers).
    api_token
        When set, the user API (``/model``, ``/models``, ``/prediction``, ...) requires
        ``Authorization: Bearer <api_token>``; otherwise it is open (serve it on loopback only).
    model_creator_token, coordinator_token
        The tokens shared with the coordinator; any left empty is read from the model creator's
        own secrets file (see :mod:`common.service.settings`).
    """

    model_config = SettingsConfigDict(env_prefix="FT_MODEL_CREATOR_")
    party: ClassVar[str] = "model_creator"

    coordinator_url: Url = "http://localhost:8080"
    public_url: Url = "http://127.0.0.1:9090"
    state_dir: Path = CHECKOUT / "var" / "model_creator"
    test_data: TestData = Field(default_factory=lambda: _shipped_test_data())
    default_features: FeatureList = Field(default_factory=lambda: list(DIABETES_FEATURES))
    default_label: ColumnName = "progression"
    key_bits: Literal[1024, 2048, 3072, 4096] = 2048
    # Keys under 2048 bits (about 112-bit security) only for tests, and only when said so.
    test_only_small_keys: bool = False
    data_frac_bits: Annotated[int, Field(ge=0, le=256)] = 32
    weight_frac_bits: Annotated[int, Field(ge=0, le=256)] = 32
    data_bits: Annotated[int, Field(ge=1, le=256)] = 64
    default_weight_bits: Annotated[int, Field(ge=1, le=128)] = 32
    max_data_owners: Annotated[int, Field(ge=1, le=MAX_DATA_OWNERS)] = 1000
    # Connection retries per call (with backoff up to 8 s): rides out a coordinator restart.
    connect_retries: Annotated[int, Field(ge=0, le=20)] = 8
    reconcile_interval: Seconds = 5.0
    reorder_after: Seconds = 30.0
    column_check_timeout: Seconds = 3.0
    model_creator_token: str | None = None
    coordinator_token: str | None = None
    api_token: str | None = None

    @model_validator(mode="after")
    def _secure_key(self) -> ModelCreatorSettings:
        if self.key_bits < SECURE_KEY_BITS and not self.test_only_small_keys:
            raise ValueError(
                f"KEY_BITS (--key-bits) {self.key_bits}: keys under {SECURE_KEY_BITS} bits are for tests only"
                " (say --test-only-small-keys)"
            )
        return self
