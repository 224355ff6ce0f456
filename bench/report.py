"""Rendering a run: the printed tables, the JSON file, the plot and the closing summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.machine import describe_line
from bench.timing import PHASES

VARIANT_ORDER = ("ours", "ours-mp", "phe-gram", "seed-style", "plaintext")
PLOT_STYLE = {
    "ours": ("tab:blue", "o", "-"),
    "ours-mp": ("tab:cyan", "s", "--"),
    "phe-gram": ("tab:red", "^", "-"),
    "seed-style": ("tab:purple", "D", ":"),
    "plaintext": ("tab:gray", "v", "-"),
}


def seconds(value: float | None) -> str:
    """Format a duration with a unit that keeps three significant digits readable."""
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def size(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{int(value)} B"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}×"


def grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Lay out a plain-text table, first column left-aligned, the others right-aligned."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = zip(cells, widths, strict=True)
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(padded))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _ordered_rounds(results: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(results["rounds"], key=lambda e: (e["dimension"], VARIANT_ORDER.index(e["variant"])))


def header(results: dict[str, Any]) -> str:
    config = results["config"]
    machine = results["machine"]
    lines = [
        f"Encrypted round benchmark — {results['mode']} mode",
        f"Machine: {describe_line(machine)}",
        f"Round: {config['owners']} data owners in-process, {results['key_bits']}-bit Paillier key"
        f" (generated in {seconds(results['keygen_seconds'])}), {config['rows_per_owner']} rows per owner;"
        " times are medians, owners run one after another (critical path: slowest owner only).",
    ]
    loads = [machine.get("load_average_start"), results.get("load_average_end")]
    if all(loads):
        busiest = max(load[0] for load in loads)
        lines.append(
            f"Load average (1/5/15 min) at start {loads[0]}, at end {loads[1]}"
            + (
                f" — other work shared the {machine['cores']} cores: absolute times are inflated,"
                " ratios less so (repetitions are interleaved)"
                if busiest >= 0.5 * machine["cores"]
                else ""
            )
        )
    return "\n".join(lines)


def rounds_table(results: dict[str, Any]) -> str:
    rows = []
    ours_by_dimension = {e["dimension"]: e for e in results["rounds"] if e["variant"] == "ours"}
    for entry in _ordered_rounds(results):
        ours = ours_by_dimension.get(entry["dimension"])
        phases = entry["phases"]
        rows.append(
            [
                entry["label"],
                str(entry["dimension"]),
                str(entry["rows_per_owner"]),
                str(entry["repeats"]),
                seconds(entry["seconds"]),
                seconds(entry["critical_path"]),
                seconds(phases["mc_encrypt"]),
                seconds(phases["tc_relay"]),
                seconds(entry["owner_seconds"]),
                seconds(phases["tc_aggregate"]),
                seconds(phases["mc_decrypt"]),
                size(entry["reply_bytes"]),
                str(entry["reply_ciphertexts"] or "-"),
                ratio(entry["seconds"] / ours["seconds"]) if ours else "-",
                f"{entry['max_relative_error']:.1e}",
            ]
        )
    headers = [
        "variant",
        "d",
        "rows",
        "reps",
        "round",
        "crit. path",
        PHASES["mc_encrypt"],
        PHASES["tc_relay"],
        "per owner",
        PHASES["tc_aggregate"],
        PHASES["mc_decrypt"],
        "owner sends",
        "cts",
        "× ours",
        "rel. err",
    ]
    return "Full rounds (every gradient checked against numpy)\n" + grid(headers, rows)


def targets_table(results: dict[str, Any]) -> str:
    rows = []
    for target in results["targets"]:
        met = {True: "yes", False: "NO", None: "not measured in this mode"}[target["met"]]
        rows.append(
            [
                target["name"],
                target["where"],
                f"≥ {target['target']:g}×",
                ratio(target["measured"]),
                ratio(target["measured_best_of"]),
                ratio(target["measured_vs_all_cores"]),
                met,
            ]
        )
    lines = [
        grid(
            [
                "target (reported, not asserted)",
                "where",
                "target",
                "vs ours (medians)",
                "fastest vs fastest",
                "vs ours all cores",
                "met (medians)",
            ],
            rows,
        )
    ]
    ratio_rows = []
    for entry in results["ratios"]:
        ratio_rows.append(
            [
                str(entry["dimension"]),
                ratio(entry.get("phe-gram/ours")),
                ratio(entry.get("phe-gram/ours-mp")),
                ratio(entry.get("phe-gram/ours with refills")),
                ratio(entry.get("phe-gram/ours critical path")),
                ratio(entry.get("phe-gram bytes/ours bytes")),
                ratio(entry.get("seed-style/ours")),
                ratio(entry.get("seed-style bytes/ours bytes")),
                ratio(entry.get("plaintext/ours")),
            ]
        )
    lines.append(
        grid(
            [
                "d",
                "phe-gram/ours",
                "/ours-mp",
                "/ours with refills",
                "/ours crit. path",
                "bytes",
                "seed-style/ours",
                "seed-style bytes",
                "plaintext/ours",
            ],
            ratio_rows,
        )
    )
    return "Ratios\n" + "\n\n".join(lines)


def refill_table(results: dict[str, Any]) -> str:
    rows = [
        [
            str(r["dimension"]),
            f"{r['model_creator_values']}",
            seconds(r["model_creator_seconds"]),
            f"{r['owner_values']}",
            seconds(r["owner_seconds"]),
            seconds(r["ours_critical_path"]),
            ratio(r["model_creator_seconds"] / r["ours_critical_path"]),
        ]
        for r in results["pool_refill"]
    ]
    return (
        "Obfuscator pool refills (r^n mod n², made between rounds by a background thread, off the critical"
        " path while rounds are further apart than the refill)\n"
        + grid(
            [
                "d",
                "MC values",
                "MC refill",
                "owner values",
                "owner refill",
                "ours crit. path",
                "MC refill / crit. path",
            ],
            rows,
        )
    )


def arithmetic_section(results: dict[str, Any]) -> str:
    costs = results["unit_costs"]
    parts = [
        "One data owner's evaluate (1 process) against its big-integer arithmetic",
        f"Unit costs at {results['key_bits']}-bit n (operands mod n²): a*b % n² in a Python loop"
        f" {seconds(costs['modular_multiplication'])}; one squaring inside powmod"
        f" {seconds(costs['powmod_squaring'])}; invert {seconds(costs['inversion'])};"
        f" r^n (one obfuscator) {seconds(costs['obfuscator'])}.",
    ]
    rows = []
    for entry in results["owner_arithmetic"]:
        counts, floor = entry["counts"], entry["floor_seconds"]
        rows.append(
            [
                str(entry["dimension"]),
                f"{counts['matrix_multiplications']:,}",
                f"{counts['packing_squarings']:,}",
                f"{counts['other_multiplications']:,}",
                f"{counts['inversions']}",
                f"{entry['total_multiplications']:,}",
                f"{entry['round_multiplications']:,}",
                seconds(floor["total"]),
                seconds(entry["evaluate_seconds"]),
                f"{100 * entry['floor_share']:.0f}%",
                f"{100 * entry['matrix_gmpy2_share']:.0f}%",
            ]
        )
    parts.append(
        grid(
            [
                "d",
                "matrix mults",
                "packing squarings",
                "other mults",
                "inversions",
                "owner total",
                "round total",
                "arith. floor",
                "measured",
                "floor/measured",
                "gmpy2 share (matrix)",
            ],
            rows,
        )
    )
    for entry in results["owner_arithmetic"]:
        profile = entry["profile"]
        parts.append(
            f"d={entry['dimension']}: matrix product {seconds(entry['matrix_seconds'])} (same schedule on a 61-bit"
            f" modulus: {seconds(entry['matrix_interpreter_seconds'])}), packing"
            f" {seconds(entry['packing_seconds'])}; window width {entry['window_width']}"
            f" ({entry['table_multiplications']:,} table products), {entry['slot_bits']}-bit slots,"
            f" {entry['slots_per_ciphertext']} per ciphertext; plan pickled for workers:"
            f" {size(entry['plan_pickle_bytes'])} in {seconds(entry['plan_pickle_seconds'])}; matrix product over"
            f" {entry['parallel_workers']} processes: "
            + (
                seconds(entry["parallel_matrix_seconds"])
                if entry["parallel_matrix_seconds"] is not None
                else f"not split (below {entry['parallel_threshold']:,} multiplications)"
            )
            + ". cProfile: gmpy2 builtins"
            f" {100 * profile['gmpy2_builtins_share']:.0f}%, _evaluate_rows own time (inline mpz * and %)"
            f" {100 * profile['evaluate_rows_share']:.0f}% of {seconds(profile['profiled_seconds'])}:"
        )
        parts.append(
            grid(
                ["function", "calls", "own time", "cumulative", "share"],
                [
                    [
                        row["function"],
                        str(row["calls"]),
                        seconds(row["own_seconds"]),
                        seconds(row["cumulative_seconds"]),
                        f"{100 * row['share']:.1f}%",
                    ]
                    for row in profile["top"]
                ],
            )
        )
    return "\n".join(parts)


def aggregation_table(results: dict[str, Any]) -> str:
    rows = []
    for entry in results["aggregation"]:
        rows.append(
            [
                str(entry["owners"]),
                str(entry["dimension"]),
                str(entry["ciphertexts_per_owner"]),
                seconds(entry["decode_seconds"]),
                seconds(entry["aggregate_seconds"]),
                seconds(entry["seconds"]),
                seconds(entry["seconds_per_owner"]),
                size(entry["tracemalloc_peak_bytes"]),
                size(entry["rss_peak_growth_bytes"]),
                size(entry["ciphertext_payload_bytes"]),
            ]
        )
    return (
        "Coordinator: decode + validate every reply, then aggregate (random valid ciphertexts; best of"
        " a few passes; memory measured in a fresh process)\n"
        + grid(
            [
                "owners",
                "d",
                "cts/owner",
                "decode+check",
                "aggregate",
                "total",
                "per owner",
                "tracemalloc peak",
                "peak RSS growth",
                "ciphertext bytes",
            ],
            rows,
        )
    )


def render(results: dict[str, Any]) -> str:
    sections = [
        header(results),
        rounds_table(results),
        targets_table(results),
        refill_table(results),
        arithmetic_section(results),
        aggregation_table(results),
    ]
    return "\n\n".join(sections)


def summary(results: dict[str, Any]) -> str:
    """Say in a few lines what the run found."""
    lines = [f"Summary ({results['mode']} mode, {results['suite_seconds']:.0f} s):"]
    for target in results["targets"]:
        if target["measured"] is None:
            continue
        verdict = "meets" if target["met"] else "MISSES"
        lines.append(
            f"- {target['name']} at {target['where']}: {ratio(target['measured'])}"
            f" ({verdict} the ≥{target['target']:g}× target; fastest vs fastest"
            f" {ratio(target['measured_best_of'])})"
        )
    for entry in results["owner_arithmetic"]:
        lines.append(
            f"- owner at d={entry['dimension']}: {entry['total_multiplications']:,} modular"
            f" multiplications, arithmetic floor {seconds(entry['floor_seconds']['total'])} vs"
            f" {seconds(entry['evaluate_seconds'])} measured ({100 * entry['floor_share']:.0f}% in"
            f" big-integer arithmetic; packing squarings"
            f" {100 * entry['floor_seconds']['packing'] / entry['evaluate_seconds']:.0f}% of the time)"
        )
    aggregation = results["aggregation"]
    if len(aggregation) >= 2:
        first, last = aggregation[0], aggregation[-1]
        lines.append(
            f"- coordinator: {seconds(first['seconds_per_owner'])} per owner at {first['owners']} owners,"
            f" {seconds(last['seconds_per_owner'])} at {last['owners']}"
            f" ({last['seconds'] / first['seconds']:.3g}× the time for"
            f" {last['owners'] / first['owners']:.3g}× the owners)"
        )
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    """Round time against d for every variant, on log scales (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=120)
    dimensions = sorted({e["dimension"] for e in results["rounds"]})
    for variant in VARIANT_ORDER:
        entries = sorted((e for e in results["rounds"] if e["variant"] == variant), key=lambda e: e["dimension"])
        if not entries:
            continue
        colour, marker, style = PLOT_STYLE[variant]
        label = entries[0]["label"]
        if variant == "seed-style":
            label += f" ({entries[0]['rows_per_owner']} rows/owner)"
        axes.plot(
            [e["dimension"] for e in entries],
            [e["seconds"] for e in entries],
            color=colour,
            marker=marker,
            linestyle=style,
            label=label,
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xticks(dimensions)
    axes.set_xticklabels([str(d) for d in dimensions])
    axes.minorticks_off()
    axes.set_xlabel("d (features + intercept)")
    axes.set_ylabel("one full round, seconds (log)")
    config = results["config"]
    axes.set_title(
        f"{config['owners']} owners, {results['key_bits']}-bit key, {config['rows_per_owner']} rows/owner"
        f" — {results['machine']['cpu_model']}, {results['machine']['cores']} cores",
        fontsize=9,
    )
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
