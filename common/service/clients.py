"""Typed clients of each party's inter-party API: the one place that knows the URLs.

A client sends a typed message of :mod:`common.protocol.messages`, checks the answer against its
type and returns it; an error the peer answers with is raised as the class its ``type`` names
(:mod:`common.service.http`), so a caller writes ``except NotFound`` rather than comparing
statuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from common.protocol.errors import UpstreamError
from common.protocol.messages import (
    Accepted,
    Aggregate,
    Contribution,
    DataOwnerList,
    Deregistered,
    Deregistration,
    Enrolled,
    Enrolment,
    FinishJob,
    JobFailure,
    JobFinished,
    JobJoined,
    JobLeft,
    JobOpened,
    JoinJob,
    OpenJob,
    Refusal,
    RoundAccepted,
    RoundOrder,
    RoundRequest,
    RoundStarted,
)
from common.service.http import PeerClient

A = TypeVar("A", bound=BaseModel)
Token = str | Callable[[], str | None] | None


class _Client:
    """Calls to one peer at ``base_url`` with a bearer token (a value, or a function giving it)."""

    def __init__(self, http: PeerClient, base_url: str, token: Token = None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self._token = token

    def _call(self, method: str, path: str, answer: type[A], message: BaseModel | None = None) -> A:
        token = self._token() if callable(self._token) else self._token
        payload = None if message is None else _payload(message)
        url = f"{self.base_url}{path}"
        reply: Any = self.http.request(method, url, payload, token=token)
        try:
            return answer.model_validate(reply)
        except ValidationError as exc:
            raise UpstreamError(f"{method} {url}: unexpected answer ({exc.error_count()} error(s))", peer=url) from None


def _payload(message: BaseModel) -> Any:
    """The JSON value a message travels as (fields never set, and ``None`` ones, left out)."""
    return message.model_dump(mode="json", exclude_none=True)


def wire_size(message: BaseModel) -> int:
    """Bytes of the body a client sends for ``message`` (:meth:`PeerClient.request` encodes it so)."""
    return len(json.dumps(_payload(message)).encode())


class CoordinatorClient(_Client):
    """The coordinator's API, for data owners and the model creator."""

    def enrol(self, message: Enrolment) -> Enrolled:
        return self._call("POST", "/data_owners", Enrolled, message)

    def deregister(self, name: str, message: Deregistration) -> Deregistered:
        return self._call("POST", f"/data_owners/{name}/deregistration", Deregistered, message)

    def data_owners(self) -> DataOwnerList:
        return self._call("GET", "/data_owners", DataOwnerList)

    def open_job(self, message: OpenJob) -> JobOpened:
        return self._call("POST", "/jobs", JobOpened, message)

    def order_round(self, job_id: str, message: RoundOrder) -> RoundStarted:
        return self._call("POST", f"/jobs/{job_id}/rounds", RoundStarted, message)

    def finish_job(self, job_id: str, message: FinishJob) -> JobFinished:
        return self._call("POST", f"/jobs/{job_id}/finish", JobFinished, message)

    def contribute(self, job_id: str, round_number: int, message: Contribution) -> Accepted:
        return self._call("POST", f"/jobs/{job_id}/rounds/{round_number}/contributions", Accepted, message)

    def refuse(self, job_id: str, round_number: int, message: Refusal) -> Accepted:
        return self._call("POST", f"/jobs/{job_id}/rounds/{round_number}/refusals", Accepted, message)


class DataOwnerClient(_Client):
    """A data owner's API, for the coordinator (with the token it issued for that owner)."""

    def join(self, job_id: str, message: JoinJob) -> JobJoined:
        return self._call("PUT", f"/jobs/{job_id}", JobJoined, message)

    def request_round(self, job_id: str, message: RoundRequest) -> RoundAccepted:
        return self._call("POST", f"/jobs/{job_id}/rounds", RoundAccepted, message)

    def leave(self, job_id: str) -> JobLeft:
        return self._call("DELETE", f"/jobs/{job_id}", JobLeft)


class ModelCreatorClient(_Client):
    """The model creator's callbacks, for the coordinator."""

    def deliver(self, job_id: str, message: Aggregate) -> Accepted:
        return self._call("POST", f"/jobs/{job_id}/aggregates", Accepted, message)

    def report_failure(self, job_id: str, message: JobFailure) -> Accepted:
        return self._call("POST", f"/jobs/{job_id}/failure", Accepted, message)
