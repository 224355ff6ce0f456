"""The coordinator's configuration: defaults, overridable by ``FT_COORDINATOR_*`` variables."""

from common.service.cli import CHECKOUT

ENV_PREFIX = "FT_COORDINATOR"

DEFAULTS = {
    "STATE_DIR": "var/coordinator",
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    "REQUEST_TIMEOUT": 30.0,
    # Connection retries per call; a round has its own deadline and retries, so keep this low.
    "CONNECT_RETRIES": 2,
    "ROUND_TIMEOUT": 300.0,
    "ROUND_RETRIES": 2,
    "RETRY_DELAY": 2.0,
    "FAN_OUT_THREADS": 16,
    "TRAFFIC_LOG": None,
    # Shared secrets; any left empty is read from (or created in) SECRETS_FILE.
    "SECRETS_FILE": str(CHECKOUT / "var" / "federation_secrets.json"),
    "ENROLMENT_SECRET": None,
    "MODEL_CREATOR_TOKEN": None,
    "COORDINATOR_TOKEN": None,
}
