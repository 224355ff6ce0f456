"""The data owner's configuration: defaults, overridable by ``FT_DATA_OWNER_*`` variables."""

from common.service.cli import CHECKOUT

ENV_PREFIX = "FT_DATA_OWNER"

DEFAULTS = {
    "NAME": "data-owner",
    "DATA": str(CHECKOUT / "data" / "diabetes" / "train.csv"),
    "COORDINATOR_URL": "http://localhost:8080",
    "PUBLIC_URL": "http://127.0.0.1:5000",
    "STATE_DIR": "var/data_owner",
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    "REQUEST_TIMEOUT": 30.0,
    # Connection retries per call (with backoff up to 8 s): rides out a coordinator restart.
    "CONNECT_RETRIES": 8,
    "REGISTER_INTERVAL": 2.0,
    "TRAFFIC_LOG": None,
    # The enrolment secret; if empty it is read from (or created in) SECRETS_FILE.
    "SECRETS_FILE": str(CHECKOUT / "var" / "federation_secrets.json"),
    "ENROLMENT_SECRET": None,
    # Processes sharing each round's encrypted matrix–vector product; None: one per core.
    "WORKER_PROCESSES": None,
}
