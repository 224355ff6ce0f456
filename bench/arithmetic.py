"""How close a data owner's round is to the cost of its big-integer arithmetic.

Three independent views of :meth:`data_owner.affine.EncryptedAffineMap.evaluate` (one process):

1. **Operation counts × unit costs.** The product's own
   :attr:`~data_owner.multiexp.MatrixPowerPlan.multiplications`, plus the packing squarings
   (``slot_bits`` per slot, Horner's rule in :func:`common.crypto.packing.pack_encrypted`), the packing
   products, the plaintext constants and the re-randomisations, each multiplied by the measured
   time of that operation on operands of the key's size (``a * b % n²`` in a Python loop; one
   squaring inside ``powmod``; one ``invert``). Their sum is the arithmetic floor of the round
   as the product schedules it; the measured time over that floor is the distance to it.
2. **The same schedule on a tiny modulus.** Running the owner's matrix product with a 61-bit
   modulus leaves only the interpreter's share (loops, tuple unpacking, dict look-ups); what it
   saves against the real run is the share of gmpy2.
3. **cProfile.** Where the owner's time goes by function. The ``*`` and ``%`` of two mpz run
   inline in the bytecode, so cProfile books them to the function containing them
   (``_evaluate_rows``); ``powmod`` and ``invert`` are builtins it shows by name.
"""

from __future__ import annotations

import cProfile
import pickle
import pstats
import time
from pathlib import Path
from typing import Any

from bench.federation import Federation, KeyMaterial
from bench.ours import OursRound, all_cores
from bench.timing import best_of
from common.crypto.bigint import invert, mpz, powmod, random_unit
from common.crypto.packing import pack_encrypted
from common.crypto.paillier import PublicKey
from common.crypto.randomness import ObfuscatorPool
from common.protocol.spec import JobSpec
from data_owner.affine import EncryptedAffineMap
from data_owner.multiexp import PARALLEL_MIN_MULTIPLICATIONS
from data_owner.processes import ProcessPool

# A Mersenne prime: every base is invertible, and products stay one machine word or two.
TINY_MODULUS = mpz(2**61 - 1)


def unit_costs(public_key: PublicKey, samples: int = 2000) -> dict[str, float]:
    """Seconds per operation on operands of the key's ciphertext size, measured on this machine."""
    nsquare = public_key.nsquare
    operands = [random_unit(nsquare) for _ in range(samples)]

    def chain() -> None:
        accumulator = operands[0]
        for operand in operands:
            accumulator = accumulator * operand % nsquare

    squarings = 1024
    exponent = mpz(1) << squarings
    return {
        "modular_multiplication": best_of(chain, 7) / samples,
        "powmod_squaring": best_of(lambda: powmod(operands[1], exponent, nsquare), 7) / squarings,
        "inversion": best_of(lambda: [invert(x, nsquare) for x in operands[:100]], 5) / 100,
        "plaintext_constant": best_of(lambda: [public_key.raw_constant(int(x)) for x in operands[:100]], 5) / 100,
        "obfuscator": best_of(public_key.raw_obfuscator, 3),
    }


def owner_operation_counts(affine_map: EncryptedAffineMap, spec: JobSpec) -> dict[str, int]:
    """Big-integer operations of one :meth:`EncryptedAffineMap.evaluate`, from the product's schedule."""
    plan = affine_map.plan
    layout = spec.layout
    values = spec.reply_values()
    ciphertexts = layout.ciphertext_count(values)
    slots = values + 1  # the contributor count takes a slot of its own
    dimension = spec.dimension
    return {
        "matrix_multiplications": plan.multiplications,
        "inversions": len(plan.negative_columns),
        # Horner's rule: one shift of slot_bits squarings per slot below the top one of each ciphertext.
        "packing_squarings": (slots - ciphertexts) * layout.slot_bits,
        # − b_j for each coordinate, each value multiplied into its ciphertext, the biases and the
        # count added once per ciphertext, one re-randomiser per ciphertext.
        "other_multiplications": dimension + values + ciphertexts + ciphertexts,
        "plaintext_constants": dimension + 1 + ciphertexts,
        "rerandomisations": ciphertexts,
        "ciphertexts": ciphertexts,
    }


def total_multiplications(counts: dict[str, int]) -> int:
    """Modular multiplications of n²-sized numbers, squarings inside powmod included."""
    return counts["matrix_multiplications"] + counts["packing_squarings"] + counts["other_multiplications"]


def floor_seconds(counts: dict[str, int], costs: dict[str, float]) -> dict[str, float]:
    """Return the time the counted operations take at the measured unit costs."""
    matrix = (
        counts["matrix_multiplications"] * costs["modular_multiplication"] + counts["inversions"] * costs["inversion"]
    )
    packing = counts["packing_squarings"] * costs["powmod_squaring"]
    other = (
        counts["other_multiplications"] * costs["modular_multiplication"]
        + counts["plaintext_constants"] * costs["plaintext_constant"]
    )
    return {"matrix": matrix, "packing": packing, "other": other, "total": matrix + packing + other}


def _function_name(key: tuple[str, int, str]) -> str:
    filename, line, name = key
    if filename == "~":
        return name.replace("<built-in method ", "").replace("<method ", "").rstrip(">")
    path = Path(filename)
    return f"{path.parent.name}/{path.name}:{line}({name})"


def profile_summary(work, repeats: int, top: int) -> dict[str, Any]:
    """Profile ``repeats`` calls of ``work``: the top functions by own time, and gmpy2's share."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        work()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    total = sum(entry[2] for entry in stats.values()) or 1.0
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)
    builtins_gmpy2 = sum(entry[2] for key, entry in stats.items() if key[0] == "~" and "gmpy2" in key[2])
    evaluate_rows = sum(entry[2] for key, entry in stats.items() if key[2] == "_evaluate_rows")
    return {
        "profiled_seconds": total / repeats,
        "gmpy2_builtins_share": builtins_gmpy2 / total,
        "evaluate_rows_share": evaluate_rows / total,
        "top": [
            {
                "function": _function_name(key),
                "calls": entry[1] // repeats,
                "own_seconds": entry[2] / repeats,
                "cumulative_seconds": entry[3] / repeats,
                "share": entry[2] / total,
            }
            for key, entry in rows[:top]
        ],
    }


def parallel_matrix_seconds(
    affine_map: EncryptedAffineMap, weights: list[mpz], nsquare: mpz, repeats: int
) -> float | None:
    """Time the owner's matrix product split over all cores by the product's ProcessPool.

    None on a single core, and when the plan is below the product's parallel threshold (it then
    stays in the caller whatever executor it is given).
    """
    workers = all_cores()
    if workers <= 1 or affine_map.plan.multiplications < PARALLEL_MIN_MULTIPLICATIONS:
        return None
    processes = ProcessPool(workers)
    try:
        executor = processes.executor()
        affine_map.plan.evaluate(weights, nsquare, executor, processes.parts)
        return best_of(lambda: affine_map.plan.evaluate(weights, nsquare, executor, processes.parts), repeats)
    finally:
        processes.shutdown()


def owner_arithmetic(keys: KeyMaterial, federation: Federation, repeats: int, top: int = 8) -> dict[str, Any]:
    """One data owner's evaluate at this federation's d: timings, counts, floor and profile.

    Every time is the best of ``repeats`` runs, like the unit costs, which are measured just
    before and just after (the faster of the two kept), so that other work on a shared machine
    inflates neither side of the comparison.
    """
    round_ = OursRound(keys, federation, workers=1)
    public_key, spec = round_.public_key, round_.spec
    affine_map = round_.maps[0]
    counts = owner_operation_counts(affine_map, spec)
    runs = 2 * repeats + 2
    pool = ObfuscatorPool(public_key, counts["ciphertexts"] * runs)
    pool.fill()
    weights = [public_key.raw_encrypt(q) for q in federation.query]

    def evaluate() -> list[mpz]:
        return affine_map.evaluate(public_key, weights, spec, pool)

    evaluate()
    costs_before = unit_costs(public_key)
    evaluate_seconds = best_of(evaluate, repeats)
    nsquare = public_key.nsquare
    matrix_seconds = best_of(lambda: affine_map.plan.evaluate(weights, nsquare), repeats)
    products = affine_map.plan.evaluate(weights, nsquare)
    values = [
        public_key.raw_constant(affine_map.row_count),
        *(public_key.raw_add_constant(p, -b) for p, b in zip(products, affine_map.offset, strict=True)),
    ]
    packing_seconds = best_of(lambda: pack_encrypted(public_key, values, spec.layout), repeats)
    tiny_bases = [mpz(3 + 2 * k) for k in range(spec.dimension)]
    interpreter_seconds = best_of(lambda: affine_map.plan.evaluate(tiny_bases, TINY_MODULUS), repeats)
    costs_after = unit_costs(public_key)
    costs = {name: min(cost, costs_after[name]) for name, cost in costs_before.items()}
    profile = profile_summary(evaluate, repeats, top)
    parallel_seconds = parallel_matrix_seconds(affine_map, weights, nsquare, repeats)
    # With an executor, MatrixPowerPlan.evaluate pickles the rows' schedules to the workers on
    # every round: what that costs, for the whole plan.
    pickle_started = time.perf_counter()
    plan_bytes = len(pickle.dumps(affine_map.plan))
    pickle_seconds = time.perf_counter() - pickle_started
    floor = floor_seconds(counts, costs)
    return {
        "dimension": spec.dimension,
        "counts": counts,
        "total_multiplications": total_multiplications(counts),
        "evaluate_seconds": evaluate_seconds,
        "matrix_seconds": matrix_seconds,
        "packing_seconds": packing_seconds,
        "matrix_interpreter_seconds": interpreter_seconds,
        "matrix_gmpy2_share": max(0.0, 1.0 - interpreter_seconds / matrix_seconds),
        "unit_costs": costs,
        "floor_seconds": floor,
        "floor_share": floor["total"] / evaluate_seconds,
        "distance_to_floor": evaluate_seconds / floor["total"],
        "parallel_workers": all_cores(),
        "parallel_matrix_seconds": parallel_seconds,
        "parallel_threshold": PARALLEL_MIN_MULTIPLICATIONS,
        "plan_pickle_bytes": plan_bytes,
        "plan_pickle_seconds": pickle_seconds,
        "table_multiplications": (1 << (affine_map.plan.width - 1))
        * (len(affine_map.plan.negative_columns) + len(affine_map.plan.positive_columns)),
        "window_width": affine_map.plan.width,
        "slot_bits": spec.layout.slot_bits,
        "slots_per_ciphertext": spec.layout.slots_per_ciphertext,
        "profile": profile,
    }
