"""Outbound HTTP between parties: one session per service, explicit timeouts, no redirects.

Connection failures and connections dropped before an answer are retried by urllib3's ``Retry``,
for every method: each call between parties is idempotent by design (a repeated round request
picks up the same round, a repeated reply is a 409 that changes nothing). So are the transient
answers 502, 503 and 504 (a peer whose storage failed answers 503 with ``Retry-After``, which is
honoured), with backoff, inside a bounded budget: ``status_retries`` tries, each waiting the
peer's ``Retry-After`` or the backoff (at most ``backoff_max`` seconds). A read timeout is never
retried: the call's timeout is its deadline, not one of several in a row. A peer that cannot be
reached is a :class:`~common.protocol.errors.PeerUnreachable`; an error a peer answers with is
re-raised as the class its ``type`` names (:func:`~common.protocol.errors.from_peer`), with
``peer`` set, so callers branch on what went wrong, never on statuses.

A client with an :class:`OutboundAudit` (a data owner's) records each request's exact body in it
before the request leaves, and the answer's status after: an audit that cannot be written stops
the request, so nothing leaves unrecorded.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

from common.protocol.errors import PeerUnreachable, UpstreamError, from_peer

TrafficRecorder = Callable[[str, str, bytes], None]

#: Seconds to wait for a peer to accept the connection (the call's own timeout, if shorter). A peer
#: that is stopped or hung still has its listening socket, whose backlog fills: without a short
#: connect timeout each connection retry would wait the whole call timeout.
CONNECT_TIMEOUT = 5.0

#: The answers that say "try again later": a gateway's failure or timeout, a peer's storage fault.
TRANSIENT_STATUSES = frozenset({502, 503, 504})


class OutboundAudit(Protocol):
    """Where a party records every request it sends, before it leaves."""

    def sending(self, method: str, url: str, body: bytes) -> int:
        """Record a request about to leave with these exact body bytes; returns the record's id.

        Raises
        ------
        StorageUnavailable
            When the record cannot be written: the request must then not be sent.
        """
        ...

    def answered(self, record: int, status: int | None) -> None:
        """The status the request of ``record`` was answered with (``None``: no answer came)."""
        ...


class PeerRetry(Retry):
    """urllib3's ``Retry``, except that a read timeout ends the call at once.

    Retrying a peer that accepted the connection but did not answer in time would multiply the
    call's deadline by the retries (three 30 s waits on a hung peer instead of one).
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if isinstance(error, ReadTimeoutError):
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)


class PeerClient:
    """JSON calls to other parties with a fixed timeout, connection retries and retries of transient answers."""

    def __init__(
        self,
        timeout: float,
        connect_retries: int = 3,
        status_retries: int = 3,
        recorder: TrafficRecorder | None = None,
        token: str | None = None,
        verify: str | bool = True,
        allow_insecure_http: bool = False,
        audit: OutboundAudit | None = None,
    ) -> None:
        self.allow_insecure_http = allow_insecure_http
        self.timeout = timeout
        self.recorder = recorder
        self.audit = audit
        self.token = token
        self.verify = verify
        self.session = requests.Session()
        retry = PeerRetry(
            total=connect_retries + status_retries,
            connect=connect_retries,
            read=connect_retries,
            status=status_retries,
            other=0,
            redirect=0,
            allowed_methods=None,
            status_forcelist=TRANSIENT_STATUSES,
            respect_retry_after_header=True,
            backoff_factor=0.25,
            backoff_max=8,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=32, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def request(
        self, method: str, url: str, payload: Any | None = None, timeout: float | None = None, token: str | None = None
    ) -> Any:
        """Send ``payload`` as JSON and return the decoded JSON answer (``None`` for no body).

        ``token`` (default: the client's own) goes in the ``Authorization`` header. With an audit,
        the request is recorded there first (a retry of a connection resends the same bytes).

        Raises
        ------
        StorageUnavailable
            When the audit cannot record the request; it was not sent.
        """
        target = urlsplit(url)
        if target.scheme == "http" and not self.allow_insecure_http and not is_loopback(target.hostname or ""):
            raise PeerUnreachable(f"{method} {url}: refusing plain HTTP to a non-loopback peer (use https)", peer=url)
        body = None if payload is None else json.dumps(payload).encode()
        record = None if self.audit is None else self.audit.sending(method, url, body or b"")
        if self.recorder is not None and body is not None:
            self.recorder("sent", url, body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token or self.token:
            headers["Authorization"] = f"Bearer {token or self.token}"
        try:
            response = self.session.request(
                method,
                url,
                data=body,
                timeout=(min(CONNECT_TIMEOUT, timeout or self.timeout), timeout or self.timeout),
                allow_redirects=False,
                headers=headers,
                verify=self.verify,
            )
        except requests.RequestException as exc:
            raise PeerUnreachable(f"{method} {url}: {type(exc).__name__}: {exc}", peer=url) from exc
        if self.audit is not None and record is not None:
            self.audit.answered(record, response.status_code)
        if self.recorder is not None:
            self.recorder("received", url, response.content)
        if response.status_code >= 300:
            type_name, text = _error_of(response)
            raise from_peer(type_name, f"{method} {url}: HTTP {response.status_code}: {text}", url)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise UpstreamError(f"{method} {url}: answer is not JSON", peer=url) from exc

    def post(self, url: str, payload: Any, timeout: float | None = None, token: str | None = None) -> Any:
        return self.request("POST", url, payload, timeout, token)

    def put(self, url: str, payload: Any, timeout: float | None = None, token: str | None = None) -> Any:
        return self.request("PUT", url, payload, timeout, token)

    def get(self, url: str, timeout: float | None = None, token: str | None = None) -> Any:
        return self.request("GET", url, None, timeout, token)

    def delete(self, url: str, timeout: float | None = None, token: str | None = None) -> Any:
        return self.request("DELETE", url, None, timeout, token)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error_of(response: requests.Response) -> tuple[str | None, str]:
    """The ``type`` and text of an error answer (``None`` and the raw text when it is not ours)."""
    try:
        payload = response.json()
    except ValueError:
        return None, response.text[:300] or response.reason
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        type_name = payload.get("type")
        return (type_name if isinstance(type_name, str) else None), payload["error"]
    return None, str(payload)[:300]
