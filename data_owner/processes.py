"""A lazily started pool of worker processes for the big-integer work that splits well.

Processes, not threads: the data owner's matrix–vector product is tens of thousands of small
modular multiplications, and only separate interpreters run those on several cores at once. The
pool uses the ``forkserver`` start method, since forking a process that already runs server
threads is unsafe.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor


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
                self._executor = ProcessPoolExecutor(self.parts, mp_context=context)
            return self._executor

    def shutdown(self, wait: bool = False) -> None:
        """Stop the workers (``wait``: until they have exited, as the owner does when it stops)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=wait, cancel_futures=True)
                self._executor = None
