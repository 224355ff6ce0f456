"""Fixtures of the API tests: stub peers standing in for other parties on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_support import StubPeer


@pytest.fixture
def stub_peer() -> Iterator:
    """Call with an optional ``answer(method, path, body)``; every stub started is closed after the test."""
    started: list[StubPeer] = []

    def start(answer=None) -> StubPeer:
        peer = StubPeer(answer)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.close()

