"""The coordinator with many owners: decode and validate every reply, then aggregate.

Replies are random elements of Z*_{n²} — exactly what valid ciphertexts look like to anyone
without the private key — in the product's wire format, at the width of a d-coefficient job.
Timed (best of a few passes): ``json.loads`` and :func:`common.protocol.wire.decode_ciphertexts` (with its
range and gcd checks) of every owner's message, then :func:`coordinator.policy.aggregate`.

Memory is measured in a fresh process, so that heap left free by earlier work cannot hide the
growth: :mod:`tracemalloc` sees the Python objects (lists, strings, mpz headers) but not the
limbs GMP allocates for each mpz, so the growth of the process's peak resident set (Linux's
VmHWM, reset through /proc/self/clear_refs) is reported next to it.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import re
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from bench.ours import job_spec
from bench.timing import best_of
from common.crypto.bigint import mpz, random_unit
from common.crypto.paillier import PublicKey
from common.protocol.wire import decode_ciphertexts, encode_ciphertexts
from coordinator.policy import aggregate

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    if not STATUS.exists():
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ≥ 4.0)."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def owner_messages(public_key: PublicKey, count: int, owners: int) -> list[str]:
    """``owners`` reply bodies of ``count`` random valid ciphertexts each, as data owners post them."""
    return [
        json.dumps(
            {
                "data_owner": f"owner-{index}",
                "attempt": 1,
                "key_fingerprint": public_key.fingerprint,
                "ciphertexts": encode_ciphertexts([random_unit(public_key.nsquare) for _ in range(count)], public_key),
            }
        )
        for index in range(owners)
    ]


def collect(public_key: PublicKey, messages: list[str], count: int) -> list[list[mpz]]:
    """Do what the coordinator's contributions view does with each reply: parse, check, keep."""
    replies = []
    for message in messages:
        body = json.loads(message)
        public_key.check_fingerprint(body["key_fingerprint"], "body.key_fingerprint")
        replies.append(decode_ciphertexts(body["ciphertexts"], public_key, "body.ciphertexts", count))
    return replies


def memory_in_fresh_process(modulus: int, count: int, owners: int) -> dict[str, int | None]:
    """Peak memory of collecting and aggregating ``owners`` replies, measured in this (new) process."""
    public_key = PublicKey(mpz(modulus))
    messages = owner_messages(public_key, count, owners)
    gc.collect()
    rss_before = _status_kib("VmRSS")
    peak_reset = _reset_peak_rss()
    aggregate(public_key.nsquare, collect(public_key, messages, count))
    rss_peak = _status_kib("VmHWM")
    gc.collect()
    tracemalloc.start()
    aggregate(public_key.nsquare, collect(public_key, messages, count))
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    growth = None
    if peak_reset and rss_before is not None and rss_peak is not None:
        growth = 1024 * (rss_peak - rss_before)
    return {"tracemalloc_peak_bytes": traced_peak, "rss_peak_growth_bytes": growth}


def coordinator_scaling(
    public_key: PublicKey, dimension: int, owner_counts: tuple[int, ...], repeats: int
) -> list[dict[str, Any]]:
    """Time and peak memory of one aggregation for each number of owners."""
    count = job_spec(public_key, dimension).reply_ciphertexts()
    results = []
    context = multiprocessing.get_context("spawn")
    for owners in owner_counts:
        messages = owner_messages(public_key, count, owners)
        decode_seconds = best_of(partial(collect, public_key, messages, count), repeats)
        aggregate_seconds = best_of(
            partial(aggregate, public_key.nsquare, collect(public_key, messages, count)), repeats
        )
        with ProcessPoolExecutor(1, mp_context=context) as fresh:
            memory = fresh.submit(memory_in_fresh_process, int(public_key.n), count, owners).result()
        seconds = decode_seconds + aggregate_seconds
        results.append(
            {
                "owners": owners,
                "dimension": dimension,
                "ciphertexts_per_owner": count,
                "message_bytes": len(messages[0].encode()),
                "repeats": repeats,
                "decode_seconds": decode_seconds,
                "aggregate_seconds": aggregate_seconds,
                "seconds": seconds,
                "seconds_per_owner": seconds / owners,
                **memory,
                "ciphertext_payload_bytes": owners * count * public_key.ciphertext_bytes,
            }
        )
    return results
