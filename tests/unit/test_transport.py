"""Transport rules: plain HTTP only on loopback unless explicitly allowed."""

from __future__ import annotations

import pytest
from flask import Flask

from common.protocol.errors import UpstreamError
from common.service.http import PeerClient, is_loopback
from common.service.app import serve


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("10.231.7.2", False), ("192.168.1.5", False), ("0.0.0.0", False), ("example.org", False), ("", False)],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("url", ["http://10.231.7.2:8080/jobs", "http://example.org/jobs", "http://0.0.0.0:1/x"])
def test_the_client_refuses_plain_http_to_other_hosts_before_sending(url):
    sent = []
    client = PeerClient(1.0, recorder=lambda direction, peer, body: sent.append(peer))
    with pytest.raises(UpstreamError, match="refusing plain HTTP to a non-loopback peer"):
        client.post(url, {"x": 1})
    assert sent == []


def test_the_server_refuses_plain_http_on_other_addresses():
    with pytest.raises(SystemExit, match="refusing plain HTTP on 10.231.7.2"):
        serve(Flask("probe"), "10.231.7.2", 1)
    with pytest.raises(SystemExit, match="give both --tls-cert and --tls-key"):
        serve(Flask("probe"), "127.0.0.1", 1, certificate="cert.pem")
