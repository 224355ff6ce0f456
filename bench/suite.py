"""What each mode measures, and the run that measures it.

``quick`` is for CI and finishes well under a minute: 1024-bit key, d in (4, 10), few rows.
``full`` is for the README: 2048-bit key, d in (5, 10, 20, 50), 1,000 rows per owner, the
seed-style baseline at d = 5 and 10, and 1 repetition for the slowest baseline runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.aggregation import coordinator_scaling
from bench.arithmetic import owner_arithmetic, unit_costs
from bench.federation import Federation, KeyMaterial, check_gradient, make_federation
from bench.machine import describe_machine, load_average
from bench.ours import OursRound, all_cores, job_spec, pool_refill_seconds
from bench.phe_rounds import PheGramRound, SeedStyleRound
from bench.plaintext import PlaintextRound
from bench.timing import summarise

VARIANTS = ("ours", "ours-mp", "phe-gram", "seed-style", "plaintext")


@dataclass(frozen=True)
class SuiteConfig:
    """The sizes and repetitions of one mode."""

    mode: str
    key_bits: int
    owners: int
    rows_per_owner: int
    dimensions: tuple[int, ...]
    seed_style_dimensions: tuple[int, ...]
    repeats: dict[str, int] = field(default_factory=dict)
    # At or above this d, phe-gram runs once: it is the slowest run of the grid.
    slow_dimension: int = 50
    profile_dimensions: tuple[int, ...] = ()
    profile_repeats: int = 3
    aggregation_dimension: int = 50
    aggregation_owners: tuple[int, ...] = (100, 1000)
    aggregation_repeats: int = 3
    seed: int = 20240605

    def repeats_for(self, variant: str, dimension: int) -> int:
        if variant == "phe-gram" and dimension >= self.slow_dimension:
            return 1
        return self.repeats.get(variant, 1)


QUICK = SuiteConfig(
    mode="quick",
    key_bits=1024,
    owners=3,
    rows_per_owner=30,
    dimensions=(4, 10),
    seed_style_dimensions=(4, 10),
    repeats={"ours": 3, "ours-mp": 3, "phe-gram": 2, "seed-style": 1, "plaintext": 5},
    profile_dimensions=(10,),
    profile_repeats=5,
    aggregation_owners=(100, 1000),
    aggregation_repeats=3,
)

FULL = SuiteConfig(
    mode="full",
    key_bits=2048,
    owners=3,
    rows_per_owner=1000,
    dimensions=(5, 10, 20, 50),
    seed_style_dimensions=(5, 10),
    repeats={"ours": 5, "ours-mp": 5, "phe-gram": 3, "seed-style": 1, "plaintext": 20},
    profile_dimensions=(10, 50),
    profile_repeats=5,
    aggregation_owners=(100, 1000),
    aggregation_repeats=3,
)

MODES = {"quick": QUICK, "full": FULL}

# The targets: reported, never asserted.
TARGETS = (
    {
        "name": "round time, phe-gram / ours",
        "variant": "phe-gram",
        "metric": "seconds",
        "dimension": 50,
        "rows_per_owner": None,
        "target": 10.0,
    },
    {
        "name": "round time, phe-gram / ours",
        "variant": "phe-gram",
        "metric": "seconds",
        "dimension": 10,
        "rows_per_owner": None,
        "target": 5.0,
    },
    {
        "name": "round time, seed-style / ours",
        "variant": "seed-style",
        "metric": "seconds",
        "dimension": 10,
        "rows_per_owner": 1000,
        "target": 100.0,
    },
    {
        "name": "bytes sent by one owner, phe-gram / ours",
        "variant": "phe-gram",
        "metric": "reply_bytes",
        "dimension": 50,
        "rows_per_owner": None,
        "target": 10.0,
    },
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def build_variant(name: str, keys: KeyMaterial, federation: Federation):
    if name == "ours":
        return OursRound(keys, federation, workers=1)
    if name == "ours-mp":
        return OursRound(keys, federation, workers=all_cores())
    if name == "phe-gram":
        return PheGramRound(keys, federation)
    if name == "seed-style":
        return SeedStyleRound(keys, federation)
    if name == "plaintext":
        return PlaintextRound(keys, federation)
    raise ValueError(f"unknown variant {name!r}")


def measure_variants(
    keys: KeyMaterial,
    federation: Federation,
    repeats: dict[str, int],
    warm_up: frozenset[str] = frozenset(),
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run checked rounds of several variants on one federation, their repetitions interleaved.

    Round-robin order (ours, then each baseline, then ours again, ...) spreads any change in the
    machine's load over all variants alike, so their ratios stay fair on a shared machine. The
    variants in ``warm_up`` first run one untimed round (process pools started, caches warm).
    """
    variants = {name: build_variant(name, keys, federation) for name in repeats}
    errors: dict[str, list[float]] = {name: [] for name in variants}
    rounds: dict[str, list] = {name: [] for name in variants}
    try:
        for name in warm_up & variants.keys():
            variants[name].refill()
            errors[name].append(check_gradient(name, variants[name].run_round().gradient, federation))
        for _ in range(max(repeats.values(), default=0)):
            for name, variant in variants.items():
                if len(rounds[name]) < repeats[name]:
                    variant.refill()
                    measurement = variant.run_round()
                    errors[name].append(check_gradient(name, measurement.gradient, federation))
                    rounds[name].append(measurement)
                    if progress and len(rounds[name]) == repeats[name]:
                        progress(
                            f"d={federation.dimension}: {name}: {summarise(rounds[name])['seconds']:.4g} s"
                            f" per round (median of {repeats[name]})"
                        )
    finally:
        for variant in variants.values():
            variant.close()
    summaries = {}
    for name, variant in variants.items():
        summary = summarise(rounds[name])
        summary.update(
            {
                "variant": variant.name,
                "label": variant.label,
                "dimension": federation.dimension,
                "rows_per_owner": federation.rows_per_owner,
                "owners": len(federation.owners),
                "key_bits": keys.bits,
                "max_relative_error": max(errors[name]),
            }
        )
        if isinstance(variant, OursRound):
            summary["pool_misses"] = variant.pool_misses
            summary["workers"] = variant.processes.parts
            summary["matrix_multiplications_per_owner"] = variant.maps[0].plan.multiplications
        summaries[name] = summary
    return summaries


def check_variants(
    keys: KeyMaterial,
    dimension: int,
    rows_per_owner: int,
    owners: int,
    seed: int = 1,
    variants: tuple[str, ...] = VARIANTS,
) -> dict[str, float]:
    """One checked round of every variant (the quick correctness path): variant → relative error."""
    federation = make_federation(dimension, rows_per_owner, owners, seed)
    summaries = measure_variants(keys, federation, dict.fromkeys(variants, 1))
    return {name: summary["max_relative_error"] for name, summary in summaries.items()}


def _find(rounds: list[dict[str, Any]], variant: str, dimension: int, rows: int | None = None):
    for entry in rounds:
        if (
            entry["variant"] == variant
            and entry["dimension"] == dimension
            and (rows is None or entry["rows_per_owner"] == rows)
        ):
            return entry
    return None


def ratios(rounds: list[dict[str, Any]], refills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per d: each baseline's round time and reply size over ours (1 process and all cores).

    ``…/ours with refills`` charges ours the pool refills of its round as well (the model
    creator's d obfuscators and every owner's), as if no randomness had been made ahead.
    """
    refill_by_dimension = {entry["dimension"]: entry for entry in refills}
    table = []
    for dimension in sorted({entry["dimension"] for entry in rounds}):
        ours = _find(rounds, "ours", dimension)
        ours_mp = _find(rounds, "ours-mp", dimension)
        row: dict[str, Any] = {"dimension": dimension}
        for name in ("phe-gram", "seed-style", "plaintext"):
            entry = _find(rounds, name, dimension)
            if entry is None or ours is None:
                continue
            row[f"{name}/ours"] = entry["seconds"] / ours["seconds"]
            if ours_mp is not None:
                row[f"{name}/ours-mp"] = entry["seconds"] / ours_mp["seconds"]
            row[f"{name}/ours critical path"] = entry["critical_path"] / ours["critical_path"]
            refill = refill_by_dimension.get(dimension)
            if refill is not None:
                cold = ours["seconds"] + refill["model_creator_seconds"] + ours["owners"] * refill["owner_seconds"]
                row[f"{name}/ours with refills"] = entry["seconds"] / cold
            if name != "plaintext":
                row[f"{name} bytes/ours bytes"] = entry["reply_bytes"] / ours["reply_bytes"]
        table.append(row)
    return table


def evaluate_targets(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with what was measured (None where this mode does not measure it)."""
    evaluated = []
    for target in TARGETS:
        dimension, rows = target["dimension"], target["rows_per_owner"]
        baseline = _find(rounds, target["variant"], dimension, rows)
        ours = _find(rounds, "ours", dimension, rows)
        ours_mp = _find(rounds, "ours-mp", dimension, rows)
        metric = target["metric"]
        measured = baseline[metric] / ours[metric] if baseline and ours else None
        measured_mp = baseline[metric] / ours_mp[metric] if baseline and ours_mp else None
        # Fastest round against fastest round: less sensitive to other work on a shared machine.
        best_metric = "seconds_min" if metric == "seconds" else metric
        measured_best = baseline[best_metric] / ours[best_metric] if baseline and ours else None
        where = f"d={dimension}" + (f", {rows} rows/owner" if rows else "")
        evaluated.append(
            {
                **target,
                "where": where,
                "measured": measured,
                "measured_vs_all_cores": measured_mp,
                "measured_best_of": measured_best,
                "met": None if measured is None else measured >= target["target"],
            }
        )
    return evaluated


def run_suite(config: SuiteConfig, progress: Callable[[str], None] = log) -> dict[str, Any]:
    """Measure everything the mode asks for; raises GradientMismatch if any variant is wrong."""
    started = time.perf_counter()
    machine = describe_machine()
    progress(f"{config.mode} mode on {machine['cpu_model']} ({machine['cores']} cores)")
    keygen_started = time.perf_counter()
    keys = KeyMaterial.generate(config.key_bits)
    keygen_seconds = time.perf_counter() - keygen_started
    public_key = keys.private_key.public_key
    progress(f"{config.key_bits}-bit key in {keygen_seconds:.2f} s")
    rounds, refills = [], []
    for dimension in config.dimensions:
        federation = make_federation(dimension, config.rows_per_owner, config.owners, config.seed + dimension)
        names = ["ours", "ours-mp", "phe-gram", "plaintext"]
        if dimension in config.seed_style_dimensions:
            names.append("seed-style")
        repeats = {name: config.repeats_for(name, dimension) for name in names}
        # The slow baselines run once or a few times and have nothing to warm up.
        warm_up = frozenset(name for name in names if name not in ("seed-style", "phe-gram"))
        progress(f"d={dimension}: " + ", ".join(f"{name} × {count}" for name, count in repeats.items()))
        summaries = measure_variants(keys, federation, repeats, warm_up, progress)
        rounds.extend(summaries[name] for name in names)
        spec = job_spec(public_key, dimension)
        refills.append(
            {
                "ours_critical_path": summaries["ours"]["critical_path"],
                "dimension": dimension,
                "model_creator_values": dimension,
                "model_creator_seconds": pool_refill_seconds(public_key, dimension),
                "owner_values": spec.reply_ciphertexts(),
                "owner_seconds": pool_refill_seconds(public_key, spec.reply_ciphertexts()),
            }
        )
    profiles = []
    for dimension in config.profile_dimensions:
        progress(f"d={dimension}: profiling one owner's evaluate")
        federation = make_federation(dimension, config.rows_per_owner, config.owners, config.seed + dimension)
        profile = owner_arithmetic(keys, federation, config.profile_repeats)
        ciphertexts = profile["counts"]["ciphertexts"]
        # The whole round: every owner's evaluate, the coordinator's K·c products, and the model
        # creator's d encryptions (one product each with a warm pool).
        profile["round_multiplications"] = (
            config.owners * profile["total_multiplications"] + config.owners * ciphertexts + dimension
        )
        profile["round_decryptions"] = ciphertexts
        profiles.append(profile)
    progress(
        f"coordinator with {', '.join(map(str, config.aggregation_owners))} owners at d={config.aggregation_dimension}"
    )
    aggregation = coordinator_scaling(
        public_key, config.aggregation_dimension, config.aggregation_owners, config.aggregation_repeats
    )
    return {
        "mode": config.mode,
        "config": asdict(config),
        "machine": machine,
        "key_bits": keys.bits,
        "keygen_seconds": keygen_seconds,
        "unit_costs": profiles[-1]["unit_costs"] if profiles else unit_costs(public_key),
        "rounds": rounds,
        "pool_refill": refills,
        "ratios": ratios(rounds, refills),
        "targets": evaluate_targets(rounds),
        "owner_arithmetic": profiles,
        "aggregation": aggregation,
        "load_average_end": load_average(),
        "suite_seconds": time.perf_counter() - started,
    }
