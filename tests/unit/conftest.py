"""Fixtures for the unit tests: one real-size (2048-bit) key pair, generated once per session."""

from __future__ import annotations

import pytest

from common.crypto.paillier import PrivateKey


@pytest.fixture(scope="session")
def real_key() -> PrivateKey:
    """A key pair of the default production size, for the few real-size checks."""
    return PrivateKey.generate(2048)
