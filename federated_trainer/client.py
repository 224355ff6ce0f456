"""A small Python client for the model creator's user API (the one ``/openapi.json`` documents).

Every method is one documented call; errors are raised as :class:`ClientError` with the service's
own message (which names what was wrong) and status. :meth:`Client.wait` polls a model until it
ends, handing each new state to a callback, which is how the command line draws its progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests

#: Model states after which nothing changes any more.
FINAL = ("finished", "failed", "cancelled")


class ClientError(Exception):
    """The model creator refused a call, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Client:
    """The model creator at ``url`` (``token``: its user API token, when it has one)."""

    def __init__(self, url: str = "http://localhost:9090", token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **arguments: Any) -> Any:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **arguments)
        except requests.RequestException as exc:
            raise ClientError(f"{method} {self.url}{path}: the model creator cannot be reached ({exc})") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else response.text.strip()
            raise ClientError(f"{method} {path}: HTTP {response.status_code}: {error}", response.status_code)
        return body

    def train(self, **options: Any) -> str:
        """Start a job (the ``POST /model`` body's fields, e.g. ``features=[...]``); its model id."""
        return str(self._call("POST", "/model", json=options)["model_id"])

    def model(self, model_id: str) -> dict[str, Any]:
        """``GET /model/<id>``: status, progress, history and, once finished, coefficients."""
        answer: dict[str, Any] = self._call("GET", f"/model/{model_id}")
        return answer

    def models(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self._call("GET", "/models")["models"]
        return listed

    def wait(
        self,
        model_id: str,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        poll: float = 0.5,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll a model until it is finished, failed or cancelled; ``on_update`` sees every state.

        Raises
        ------
        ClientError
            When ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            model = self.model(model_id)
            if on_update is not None:
                on_update(model)
            if model["status"] in FINAL:
                return model
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"model {model_id} is still {model['status']} after {timeout:g} s")
            time.sleep(poll)

    def cancel(self, model_id: str) -> None:
        self._call("POST", f"/model/{model_id}/cancel")

    def delete(self, model_id: str) -> None:
        self._call("DELETE", f"/model/{model_id}")

    def predict(self, rows: Sequence[Mapping[str, float]], model_id: str | None = None) -> dict[str, Any]:
        """Predictions for rows of feature values (columns the model does not use are ignored)."""
        body: dict[str, Any] = {"rows": [dict(row) for row in rows]}
        if model_id is not None:
            body["model_id"] = model_id
        answer: dict[str, Any] = self._call("POST", "/prediction", json=body)
        return answer

    def prediction(self, model_id: str | None = None) -> dict[str, Any]:
        """Metrics and predictions on the model creator's own test data."""
        answer: dict[str, Any] = self._call("GET", "/prediction", params={"model_id": model_id} if model_id else None)
        return answer

    def export(self, model_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/model/{model_id}/export")
        return answer
