"""A Data Owner: keeps its rows, answers encrypted rounds with encrypted gradients.

It never decrypts anything and never learns the weights; what leaves it is ciphertexts under the
model creator's key, its name and its URL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask

from common.errors import UpstreamError
from common.http import PeerClient
from common.processes import ProcessPool
from common.service import Worker, create_base_app
from data_owner.config import DEFAULTS, ENV_PREFIX
from data_owner.jobs import JobBook
from data_owner.views import jobs

logger = logging.getLogger(__name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the data-owner app; it registers with the coordinator only when told to."""
    app = create_base_app("data_owner", DEFAULTS, ENV_PREFIX, config)
    traffic_log = app.extensions.get("traffic_log")
    app.extensions.update(
        job_book=JobBook(app.config["DATA"]),
        client=PeerClient(float(app.config["REQUEST_TIMEOUT"]), recorder=traffic_log.recorder() if traffic_log else None),
        worker=Worker("data-owner-rounds"),
        processes=ProcessPool(app.config["WORKER_PROCESSES"]),
    )
    app.register_blueprint(jobs)
    return app


def register_until_accepted(app: Flask, stop: threading.Event) -> None:
    """Announce this owner to the coordinator, retrying until the coordinator answers."""
    config = app.config
    payload = {"name": config["NAME"], "url": config["PUBLIC_URL"]}
    url = f"{config['COORDINATOR_URL'].rstrip('/')}/data_owners"
    while not stop.is_set():
        try:
            app.extensions["client"].post(url, payload)
        except UpstreamError as exc:
            logger.warning("registration with the coordinator failed, retrying: %s", exc.message)
            stop.wait(float(config["REGISTER_INTERVAL"]))
        else:
            logger.info("registered with the coordinator at %s as %r", config["COORDINATOR_URL"], config["NAME"])
            return
