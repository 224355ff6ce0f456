"""The model creator's configuration: defaults, overridable by ``FT_MODEL_CREATOR_*`` variables.

The encoding parameters fix the fixed-point scales and the slot layout of every job
(PROTOCOL.md sections 3 and 6): a data owner's statistics may use ``DATA_BITS`` integer bits,
weights ``|w| < max_abs_weight`` (per job, default ``2**DEFAULT_WEIGHT_BITS``).
"""

from common.service.cli import CHECKOUT

ENV_PREFIX = "FT_MODEL_CREATOR"

DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]

DEFAULTS = {
    "STATE_DIR": "var/model_creator",
    "COORDINATOR_URL": "http://localhost:8080",
    "PUBLIC_URL": "http://127.0.0.1:9090",
    "TEST_DATA": str(CHECKOUT / "data" / "diabetes" / "test.csv"),
    "DEFAULT_FEATURES": DIABETES_FEATURES,
    "DEFAULT_LABEL": "progression",
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    "REQUEST_TIMEOUT": 30.0,
    # Connection retries per call (with backoff up to 8 s): rides out a coordinator restart.
    "CONNECT_RETRIES": 8,
    "KEY_BITS": 2048,
    "DATA_FRAC_BITS": 32,
    "WEIGHT_FRAC_BITS": 32,
    "DATA_BITS": 64,
    "DEFAULT_WEIGHT_BITS": 32,
    "MAX_DATA_OWNERS": 1000,
    "TRAFFIC_LOG": None,
    # Tokens shared with the coordinator; any left empty is read from (or created in) SECRETS_FILE.
    "SECRETS_FILE": str(CHECKOUT / "var" / "federation_secrets.json"),
    "MODEL_CREATOR_TOKEN": None,
    "COORDINATOR_TOKEN": None,
    # When set, the user API (/model, /models, /prediction, ...) requires 'Authorization: Bearer <API_TOKEN>'.
    "API_TOKEN": None,
}
