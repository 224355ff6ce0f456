"""A lazily started pool of worker processes for the big-integer work that splits well.

Processes, not threads: the data owner's matrix–vector product is tens of thousands of small
modular multiplications, and only separate interpreters run those on several cores at once. The
pool uses the ``forkserver`` start method, since forking a process that already runs server
threads is unsafe.

A worker outlives its owner unless told otherwise: after a ``kill -9`` of the owner, Python's
workers (and the fork server waiting on them) would block on their task queue for ever. Each
worker therefore watches the owner's process and exits as soon as it is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import ProcessPoolExecutor

# How often a worker checks that its owner lives, where the system has no process descriptors.
PARENT_POLL_SECONDS = 1.0


class ProcessPool:
    """Creates its executor on first use; ``workers <= 1`` means work stays in the caller."""

    def __init__(self, workers: int | None) -> None:
        self.parts = max(1, int(workers if workers is not None else os.cpu_count() or 1))
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def executor(self) -> ProcessPoolExecutor | None:
        if self.parts <= 1:
            return None
        with self._lock:
            if self._executor is None:
                context = multiprocessing.get_context("forkserver")
                self._executor = ProcessPoolExecutor(
                    self.parts, mp_context=context, initializer=exit_with, initargs=(os.getpid(),)
                )
            return self._executor

    def shutdown(self, wait: bool = False) -> None:
        """Stop the workers (``wait``: until they have exited, as the owner does when it stops)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=wait, cancel_futures=True)
                self._executor = None


def exit_with(owner: int) -> None:
    """In a worker: end this process as soon as process ``owner`` has ended (a daemon thread waits).

    On Linux the wait is on a process descriptor (``pidfd_open``), which becomes readable when the
    process exits and cannot be confused with a later process given the same id; elsewhere the
    thread polls whether ``owner`` is still this worker's ancestor by its id.
    """
    if hasattr(os, "pidfd_open"):
        try:
            descriptor = os.pidfd_open(owner)
        except ProcessLookupError:
            os._exit(0)
        threading.Thread(target=_exit_when_readable, args=(descriptor,), name="owner-watch", daemon=True).start()
    else:
        threading.Thread(target=_exit_when_gone, args=(owner,), name="owner-watch", daemon=True).start()


def _exit_when_readable(descriptor: int) -> None:
    select.select([descriptor], [], [])
    os._exit(0)


def _exit_when_gone(owner: int) -> None:
    while True:
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(0)
        time.sleep(PARENT_POLL_SECONDS)
