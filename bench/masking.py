"""``python -m bench.masking``: what masked aggregation costs a data owner, side by side.

Two figures, both measured in one process on the same key, data and weights, interleaved:

* a data owner's round at d = 10 and d = 50 (3 owners): the reply with masking (admission: the
  member list's signatures checked, pairwise masks derived, added to the packed constants) against
  the same reply without it; the aggregate of the masked replies is decrypted and checked against
  numpy, and so is the unmasked one;
* a job's key agreement with 3, 10 and 50 owners: per owner, the job key made and signed at the
  join, and per round the member list's signatures checked and the masks derived.

What both leave out is the same on each side (HTTP, JSON), so the ratio is the cost of masking.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.federation import KeyMaterial, check_gradient, make_federation
from bench.ours import job_spec
from common.crypto.encoding import decode
from common.crypto.identity import IdentityKey
from common.crypto.masking import JobKeyPair, MaskContext, member_masks
from common.crypto.packing import unpack_sum
from common.crypto.randomness import ObfuscatorPool
from common.protocol.messages import MemberKey
from coordinator.policy import aggregate
from data_owner.affine import EncryptedAffineMap

HERE = Path(__file__).resolve().parent


def median_seconds(work: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class Owner:
    """One data owner of the benchmark's job: its statistics, identity and job key."""

    def __init__(self, name: str, statistics_map: EncryptedAffineMap, identity: IdentityKey) -> None:
        self.name = name
        self.map = statistics_map
        self.identity = identity
        self.job_keys = JobKeyPair.generate()
        self.member: MemberKey | None = None


def round_comparison(keys: KeyMaterial, dimension: int, owners: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """Median seconds of one owner's reply with and without masking, and the check of both sums."""
    federation = make_federation(dimension, rows_per_owner=500, owners=owners, seed=dimension)
    public_key = keys.private_key.public_key
    spec = job_spec(public_key, federation.dimension)
    party = [
        Owner(
            f"owner-{index}",
            EncryptedAffineMap.prepare(spec, owner.features, owner.labels, f"owner-{index}"),
            IdentityKey.load_or_create(workdir / f"identity-{dimension}-{index}.pem"),
        )
        for index, owner in enumerate(federation.owners)
    ]
    for owner in party:
        owner.member = MemberKey.signed(owner.name, owner.identity, owner.job_keys, spec.job_id, public_key.fingerprint)
    members = [owner.member for owner in party if owner.member is not None]
    names = tuple(sorted(owner.name for owner in party))
    context = MaskContext(spec.job_id, 0, 1, "gradient", public_key.fingerprint, names, "bench-request")
    count = spec.reply_ciphertexts()
    weights = [public_key.raw_encrypt(q) for q in federation.query]
    pool = ObfuscatorPool(public_key, count)

    def masks_of(owner: Owner) -> list[int]:
        for member in members:
            member.verify(spec.job_id, public_key.fingerprint)
        peers = {m.name: m.job_key for m in members if m.name != owner.name}
        return member_masks(owner.name, owner.job_keys, peers, context, int(public_key.n), count)

    def reply(owner: Owner, masked: bool) -> list[Any]:
        pool.fill()
        masks = masks_of(owner) if masked else None
        return owner.map.evaluate(public_key, weights, spec, pool, None, 1, masks)

    timings: dict[str, list[float]] = {"masked": [], "unmasked": []}
    for _ in range(repeats):
        for variant in ("masked", "unmasked"):
            pool.fill()
            started = time.perf_counter()
            reply(party[0], variant == "masked")
            timings[variant].append(time.perf_counter() - started)
    for variant in ("masked", "unmasked"):
        summed = aggregate(public_key.nsquare, [reply(owner, variant == "masked") for owner in party])
        plaintexts = [keys.private_key.raw_decrypt(c) for c in summed]
        contributors, values = unpack_sum(plaintexts, spec.layout, spec.reply_values(), "bench")
        assert contributors == owners
        gradient = [float(decode(v, spec.gradient_frac_bits)) for v in values[1:]]
        check_gradient(f"{variant} d={federation.dimension}", np.asarray(gradient), federation)
    masked, unmasked = statistics.median(timings["masked"]), statistics.median(timings["unmasked"])
    return {
        "dimension": federation.dimension,
        "owners": owners,
        "masked_seconds": masked,
        "unmasked_seconds": unmasked,
        "overhead": masked / unmasked - 1,
    }


def key_agreement(owners: int, repeats: int, workdir: Path) -> dict[str, Any]:
    """Per-owner seconds of a job's key agreement with ``owners`` members (a 2048-bit modulus)."""
    identities = [IdentityKey.load_or_create(workdir / f"agree-{owners}-{index}.pem") for index in range(owners)]
    fingerprint = "ab" * 32
    modulus = (1 << 2047) + 12345

    def join() -> list[tuple[JobKeyPair, MemberKey]]:
        pairs = []
        for index, identity in enumerate(identities):
            job_keys = JobKeyPair.generate()
            pairs.append((job_keys, MemberKey.signed(f"owner-{index}", identity, job_keys, "bench", fingerprint)))
        return pairs

    joined = join()
    members = [member for _, member in joined]
    names = tuple(sorted(member.name for member in members))
    context = MaskContext("bench", 0, 1, "gradient", fingerprint, names, "bench-request")

    def round_of_one_owner() -> None:
        for member in members:
            member.verify("bench", fingerprint)
        own_keys, own = joined[0]
        peers = {m.name: m.job_key for m in members if m.name != own.name}
        member_masks(own.name, own_keys, peers, context, modulus, 4)

    return {
        "owners": owners,
        "join_seconds_per_owner": median_seconds(join, repeats) / owners,
        "round_seconds_per_owner": median_seconds(round_of_one_owner, repeats),
        "member_list_bytes": len(json.dumps([m.model_dump() for m in members]).encode()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.masking", description=__doc__.splitlines()[0])
    parser.add_argument("--key-bits", type=int, default=2048, choices=[1024, 2048, 3072])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--results", type=Path, default=HERE / "results" / "masking.json")
    arguments = parser.parse_args(argv)
    keys = KeyMaterial.generate(arguments.key_bits)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        rounds = [round_comparison(keys, d, 3, arguments.repeats, workdir) for d in (10, 50)]
        agreements = [key_agreement(owners, arguments.repeats, workdir) for owners in (3, 10, 50)]
    print(f"Masking, {arguments.key_bits}-bit key, medians of {arguments.repeats} interleaved runs")
    print(f"{'d':>4} {'owners':>6} {'masked s':>10} {'unmasked s':>11} {'overhead':>9}")
    for row in rounds:
        print(
            f"{row['dimension']:>4} {row['owners']:>6} {row['masked_seconds']:>10.4f}"
            f" {row['unmasked_seconds']:>11.4f} {row['overhead']:>8.1%}"
        )
    print(f"{'owners':>6} {'join s/owner':>13} {'round s/owner':>14} {'member list B':>14}")
    for row in agreements:
        print(
            f"{row['owners']:>6} {row['join_seconds_per_owner']:>13.5f} {row['round_seconds_per_owner']:>14.5f}"
            f" {row['member_list_bytes']:>14}"
        )
    arguments.results.parent.mkdir(parents=True, exist_ok=True)
    results = {"key_bits": arguments.key_bits, "rounds": rounds, "key_agreement": agreements}
    arguments.results.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
