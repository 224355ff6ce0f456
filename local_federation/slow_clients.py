"""``python -m local_federation.slow_clients``: how many slow clients a party's server takes.

Starts a model creator alone on a free loopback port, then, for each count N, opens N connections
that send a request's headers one byte a second (a "slowloris"), waits two seconds, and times
``GET /health`` from a well-behaved client while they hang on, for at most ``--patience`` seconds.
Prints one line per N: the answer's latency, or that none came. The README's reliability section
reports its figures, before and after the server's read deadlines, thread count and per-address
share of threads.

With ``--reconnect`` each slow client opens a new connection as soon as the server cuts its own,
and ``/health`` is timed once the first ones were cut (after ``HEADER_SECONDS`` + 2 s). The slow
clients call from ``--source`` (default 127.0.0.2, another loopback address than the well-behaved
client's 127.0.0.1: the server shares its threads out per client address).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import requests

from common.service.server import HEADER_SECONDS
from local_federation.cluster import LocalFederation, Party, free_port

#: The address the slow clients call from, unless told otherwise.
SLOW_SOURCE = "127.0.0.2"


def _hold(port: int, stop: threading.Event, source: str, reconnect: bool) -> None:
    """One slow client: a request line, then a header byte a second until ``stop`` (or cut, then again)."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as connection:
                connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while not stop.wait(1.0):
                    connection.sendall(b"X")
        except OSError:
            pass
        if not reconnect:
            return


def health_latency(
    port: int, slow_clients: int, patience: float, source: str = "127.0.0.1", reconnect: bool = False
) -> float | None:
    """Seconds ``GET /health`` took while ``slow_clients`` hang on; ``None`` when no answer came in time.

    The slow clients call from ``source``; with ``reconnect`` each opens a new connection when its
    own is cut, and ``/health`` is timed once the first ones were cut.
    """
    stop = threading.Event()
    holders = [
        threading.Thread(target=_hold, args=(port, stop, source, reconnect), daemon=True) for _ in range(slow_clients)
    ]
    for holder in holders:
        holder.start()
    time.sleep(HEADER_SECONDS + 2.0 if reconnect else 2.0)
    started = time.monotonic()
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=patience)
        latency: float | None = time.monotonic() - started if answer.status_code == 200 else None
    except requests.RequestException:
        latency = None
    stop.set()
    for holder in holders:
        holder.join(10)
    time.sleep(1.0)
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local_federation.slow_clients", description=__doc__)
    parser.add_argument("--counts", default="8,12,16,20,32,64,100,200", help="slow client counts (comma-separated)")
    parser.add_argument("--patience", type=float, default=15.0, help="seconds to wait for /health (default 15)")
    parser.add_argument("--reconnect", action="store_true", help="slow clients reconnect as soon as they are cut")
    parser.add_argument(
        "--source", default=SLOW_SOURCE, help=f"address the slow clients call from (default {SLOW_SOURCE})"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        federation = LocalFederation(Path(workdir), [], key_bits=1024)
        party = Party(
            "model_creator",
            "model_creator",
            free_port(),
            [
                "--state-dir",
                f"{workdir}/model_creator",
                "--coordinator",
                "http://127.0.0.1:9",
                "--key-bits",
                "1024",
                "--test-only-small-keys",
                "--secrets-file",
                str(federation.secrets_file("model_creator")),
            ],
            Path(workdir) / "model_creator.log",
        )
        federation.parties["model_creator"] = party
        federation.start_party(party, {"PYTHONUNBUFFERED": "1", **dict(os.environ)})
        try:
            for count in (int(text) for text in options.counts.split(",")):
                latency = health_latency(party.port, count, options.patience, options.source, options.reconnect)
                shown = (
                    f"answered in {latency:.2f} s" if latency is not None else f"no answer in {options.patience:g} s"
                )
                print(f"{count:4d} slow clients: /health {shown}", flush=True)
        finally:
            federation.stop()


if __name__ == "__main__":
    main()
