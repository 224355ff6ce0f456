"""The coordinator's configuration: defaults, overridable by ``FT_COORDINATOR_*`` variables."""

ENV_PREFIX = "FT_COORDINATOR"

DEFAULTS = {
    "STATE_DIR": "var/coordinator",
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    "REQUEST_TIMEOUT": 30.0,
    "ROUND_TIMEOUT": 300.0,
    "ROUND_RETRIES": 2,
    "RETRY_DELAY": 2.0,
    "FAN_OUT_THREADS": 16,
    "TRAFFIC_LOG": None,
}
