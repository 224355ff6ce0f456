"""The owner's worker pool (data_owner/processes.py): its workers end with the owner, even after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from support import CHECKOUT

from data_owner.processes import ProcessPool

# A stand-in for the data owner: starts the pool, runs work on both workers, prints their ids, waits.
OWNER = """
import json, os, sys, time
from data_owner.processes import ProcessPool
pool = ProcessPool(2)
futures = [pool.executor().submit(time.sleep, 0.5) for _ in range(4)]
for future in futures:
    future.result()
workers = sorted(pool.executor()._processes)
print(json.dumps(workers), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended; only its parent's wait is left
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_workers_end_when_their_owner_is_killed():
    with subprocess.Popen([sys.executable, "-c", OWNER], cwd=CHECKOUT, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(CHECKOUT)}) as owner:
        try:
            workers = json.loads(owner.stdout.readline())
            assert len(workers) == 2 and all(alive(pid) for pid in workers)
            owner.send_signal(signal.SIGKILL)
            owner.wait(timeout=10)
            deadline = time.monotonic() + 10
            while any(alive(pid) for pid in workers):
                assert time.monotonic() < deadline, f"workers {[p for p in workers if alive(p)]} outlived their owner"
                time.sleep(0.1)
        finally:
            owner.kill()


def test_a_pool_of_one_keeps_the_work_in_the_caller():
    assert ProcessPool(1).executor() is None
