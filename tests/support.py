"""The one support module of the test suites.

Every constant and tiny helper that more than one test file needs is defined here, once: where
the checkout and its shipped data are and what that data looks like, the secrets the in-process
apps are configured with and the credentials a data owner is handed at enrolment, the names the
services and their OpenAPI documents share, the hypothesis settings of the slower property tests,
the prime of Curve25519's field, and a few one-line computations (a file's permission bits, bytes
as base64 text, a design matrix, a brute-force AUC).

Helpers that belong to one suite stay in ``tests/api/api_support.py`` and
``tests/e2e/e2e_support.py``; both import what they need from here and redefine none of it.

Import it as ``from support import ...`` everywhere. ``tests/`` has no ``__init__.py``, so pytest
(in its default "prepend" import mode) puts ``tests/`` on ``sys.path`` to import the root
``tests/conftest.py``, which is always loaded first, just as it puts ``tests/api`` and ``tests/e2e``
there for ``api_support`` and ``e2e_support``. One import name keeps this one module: importing it
also as ``tests.support`` would make a second copy.
"""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import numpy as np
from hypothesis import settings

# --------------------------------------------------------------------------------------------
# The checkout and the shipped data set (data/diabetes)
# --------------------------------------------------------------------------------------------

CHECKOUT = Path(__file__).resolve().parents[1]
SHIPPED = CHECKOUT / "data" / "diabetes"
# The three shipped owners' files under the names the e2e federations give them ...
SHIPPED_OWNERS = [(f"owner_{letter}", SHIPPED / f"owner_{letter}.csv") for letter in "abc"]
SHIPPED_OWNER_NAMES = [name for name, _ in SHIPPED_OWNERS]
# ... and under their bare letters, as the fault and multi-host federations name them.
SHIPPED_OWNERS_ABC = [(letter, SHIPPED / f"owner_{letter}.csv") for letter in "abc"]

DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
DIABETES_LABEL = "progression"
# The columns of every shipped CSV, in order, and its header line.
DIABETES_COLUMNS = [*DIABETES_FEATURES, DIABETES_LABEL]
DIABETES_HEADER = ",".join(DIABETES_COLUMNS)
# One valid data row in those columns (written by hand, not taken from the shipped files).
DIABETES_ROW = "59,2,32.1,101,157,93.2,38,4,4.8598,87,151"

# --------------------------------------------------------------------------------------------
# Peers, secrets and credentials
# --------------------------------------------------------------------------------------------

# A loopback URL nothing listens on (the discard port): the peer of an app that must not reach one.
UNREACHABLE = "http://127.0.0.1:9"

# The secrets the in-process apps are configured with; tests present them as the parties would.
TOKENS = {"ENROLMENT_SECRET": "test-enrolment-secret", "MODEL_CREATOR_TOKEN": "test-model-creator-token",
          "COORDINATOR_TOKEN": "test-coordinator-token", "SECRETS_FILE": None}
# What a data owner is given by the coordinator at enrolment: its own credential, and the token the
# coordinator presents when it calls the owner.
OWNER_CREDENTIAL = "test-credential-of-the-owner"
OWNER_COORDINATOR_TOKEN = "test-coordinator-token-for-the-owner"


def secrets_for(*names: str) -> dict[str, str | None]:
    """The test secrets one party is configured with (each party takes only its own)."""
    return {"SECRETS_FILE": None, **{name: TOKENS[name] for name in names}}


def bearer(token: str) -> dict[str, str]:
    """An Authorization header carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


# The e2e coordinator retries a round that was not aggregated; tests need not wait the default 2 s.
FAST_RETRIES = {"FT_COORDINATOR_RETRY_DELAY": "0.1"}

# --------------------------------------------------------------------------------------------
# The services and their documents
# --------------------------------------------------------------------------------------------

# The three services, by package name (each has ``create_app`` and a ``<name>_app`` fixture).
SERVICES = ["coordinator", "data_owner", "model_creator"]
# The keys of an OpenAPI path item that are operations (the others are its parameters, summary, ...).
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})

# --------------------------------------------------------------------------------------------
# Property tests and cryptography
# --------------------------------------------------------------------------------------------

# Hypothesis settings for the property tests whose examples are slow (big integers, encryption).
SLOW = settings(max_examples=30, deadline=None)

# The prime 2**255 - 19 of the field of Curve25519 (X25519) and of its twin edwards25519 (Ed25519).
CURVE25519_P = 2**255 - 19


def base64_text(raw: bytes) -> str:
    """``raw`` as standard base64 text, the way keys and signatures travel."""
    return base64.b64encode(raw).decode("ascii")


# --------------------------------------------------------------------------------------------
# Files and numpy references
# --------------------------------------------------------------------------------------------

def file_mode(path: Path) -> int:
    """The permission bits of ``path`` (as ``0o600``)."""
    return stat.S_IMODE(path.stat().st_mode)


def design(features: np.ndarray) -> np.ndarray:
    """The design matrix: a column of ones (the intercept) before the features."""
    return np.column_stack([np.ones(len(features)), features])


def brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + ½·P(tie), over every pair."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))
