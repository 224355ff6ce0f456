"""``python -m bench.services [--quick | --full]``: the product through its real services, against baselines.

Everything of the product is counted: a coordinator, K data owners and a model creator run as
separate processes on loopback (started as the end-to-end tests start them, by
:class:`~local_federation.cluster.LocalFederation`), and each job is timed from the model
creator's record of it, ``POST /model`` to finished (``updated_at − created_at``): encryption
randomness, HTTP, JSON, the joins, the owners' policy checks and masks, decryption and the solver.

For each key size and d it runs, interleaved in one run:

* **gradient rounds**: a gradient-descent job of R rounds (standard and DJN randomness); a round is
  the job's time ÷ R, join included; the result is checked against gradient descent in numpy;
* **exact jobs**: the default exact job (d + 1 gradient rounds) and the one-shot job (one moments
  round), each with both kinds of randomness, checked against least squares in numpy;

and, in this process on the same data and (for phe) the model creator's own key, one round of
each baseline, checked against numpy's gradient: python-paillier used directly for the same
protocol (:class:`~bench.phe_rounds.PheGramRound`), the seed's per-sample method
(:class:`~bench.phe_rounds.SeedStyleRound`) and TenSEAL CKKS at 128-bit security
(:class:`~bench.ckks.CkksRound`). A baseline's round is its critical path (its owners as if each
had its own machine, which flatters it: the services share 2 cores), and a baseline's whole job
is that round times the rounds the job takes, with no join at all (flattering it again).

Beside them, the floor of a gradient round on this machine: the owners' products alone, each
owner a process of its own on the same cores, nothing else counted
(:class:`~bench.products.OwnerProductsRound`); phe-gram's round over it is the ceiling of what
any gradient round here can show against phe.

Results go to ``bench/results/services-<mode>.json``; a full run also writes
``bench/report/services.json`` and the plot ``bench/report/services.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.ckks import CkksRound, tenseal_available
from bench.federation import (
    RELATIVE_TOLERANCE,
    WEIGHT_FRAC_BITS,
    Federation,
    GradientMismatch,
    KeyMaterial,
    OwnerData,
    check_gradient,
)
from bench.machine import describe_machine
from bench.phe_rounds import PheGramRound, SeedStyleRound
from bench.products import OwnerProductsRound
from common.crypto.paillier import PrivateKey
from common.dataset import load_columns
from local_federation.cluster import LocalFederation

HERE = Path(__file__).resolve().parent
LEARNING_RATE = 0.1
# How far a job's coefficients may be from numpy's, relative to the largest coefficient.
COEFFICIENT_TOLERANCE = 1e-6
PRODUCT_JOBS = ("gd-standard", "gd-djn", "exact-standard", "exact-djn", "one-shot-standard", "one-shot-djn")


@dataclass(frozen=True)
class ServicesConfig:
    """The sizes of one mode."""

    mode: str
    key_bits: tuple[int, ...]
    dimensions: tuple[int, ...]
    owners: int
    rows_per_owner: int
    gradient_rounds: int
    repeats: int
    # The exact gradient job and the seed-style baseline only up to these d (they grow fastest).
    exact_max_dimension: int
    seed_style_max_dimension: int
    # The README's demo job (the shipped diabetes shards), this many times per variant.
    demo_repeats: int
    seed: int = 20261201


QUICK = ServicesConfig("quick", (1024,), (4,), 3, 40, 3, 1, 4, 4, 1)
FULL = ServicesConfig("full", (2048, 3072), (10, 50, 100), 3, 2000, 10, 2, 10, 10, 3)
CHECKOUT = HERE.parent
DIABETES = CHECKOUT / "data" / "diabetes"
DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
DEMO_JOBS = {
    "exact-standard": None,
    "exact-djn": {"randomness": "djn"},
    "one-shot-djn": {"protocol": "one_shot", "randomness": "djn"},
}
MODES = {"quick": QUICK, "full": FULL}


def log(message: str) -> None:
    print(f"[bench.services] {message}", file=sys.stderr, flush=True)


# --- data ---------------------------------------------------------------------------------------


def make_owner_data(config: ServicesConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each owner's rows: standard normal features (as many as the largest d needs) and a noisy linear label."""
    generator = np.random.default_rng(config.seed)
    columns = max(config.dimensions) - 1
    coefficients = generator.normal(size=columns + 1)
    owners = []
    for _ in range(config.owners):
        features = generator.normal(size=(config.rows_per_owner, columns))
        labels = coefficients[0] + features @ coefficients[1:] + 0.5 * generator.normal(size=config.rows_per_owner)
        owners.append((features, labels))
    return owners


def feature_names(dimension: int) -> list[str]:
    return [f"x{k}" for k in range(1, dimension)]


def write_owner_csvs(owners: list[tuple[np.ndarray, np.ndarray]], directory: Path) -> list[tuple[str, Path]]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (features, labels) in enumerate(owners):
        path = directory / f"owner_{index}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([*feature_names(features.shape[1] + 1), "y"])
            for row, label in zip(features, labels, strict=True):
                writer.writerow([repr(float(v)) for v in row] + [repr(float(label))])
        written.append((f"owner_{index}", path))
    return written


def _grid_weights(dimension: int, seed: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Weights in [−2, 2] on the model creator's 2**−32 grid, and their fixed-point integers."""
    generator = np.random.default_rng(seed + dimension)
    query = tuple(int(q) for q in np.rint(np.ldexp(generator.uniform(-2.0, 2.0, size=dimension), WEIGHT_FRAC_BITS)))
    return tuple(math.ldexp(q, -WEIGHT_FRAC_BITS) for q in query), query


def federation_for(owners: list[tuple[np.ndarray, np.ndarray]], dimension: int, seed: int) -> Federation:
    """The in-process baselines' view of the same rows at d coefficients."""
    parts = tuple(OwnerData(features[:, : dimension - 1], labels) for features, labels in owners)
    return Federation(parts, *_grid_weights(dimension, seed))


def pooled(federation: Federation) -> tuple[np.ndarray, np.ndarray]:
    design = np.vstack([owner.design for owner in federation.owners])
    return design, np.concatenate([owner.labels for owner in federation.owners])


def lstsq_reference(federation: Federation) -> np.ndarray:
    design, labels = pooled(federation)
    return np.linalg.lstsq(design, labels, rcond=None)[0]


def gradient_descent_reference(federation: Federation, rounds: int) -> np.ndarray:
    """The model creator's gradient descent in numpy: mean gradient at the fixed-point query, fixed step."""
    design, labels = pooled(federation)
    gram, moment = design.T @ design, design.T @ labels
    point = np.zeros(design.shape[1])
    for _ in range(rounds):
        query = np.ldexp(np.rint(np.ldexp(point, WEIGHT_FRAC_BITS)), -WEIGHT_FRAC_BITS)
        point = point - LEARNING_RATE * (gram @ query - moment) / len(labels)
    return point


def check_coefficients(variant: str, model: dict[str, Any], reference: np.ndarray, features: list[str]) -> float:
    """The relative error of a finished job's coefficients; raise :class:`GradientMismatch` past the tolerance."""
    if model["status"] != "finished":
        raise GradientMismatch(f"{variant}: the job ended {model['status']}: {model.get('error')}")
    got = np.array([model["coefficients"][name] for name in ["intercept", *features]])
    error = float(np.max(np.abs(got - reference)) / max(float(np.max(np.abs(reference))), 1.0))
    if error > COEFFICIENT_TOLERANCE:
        raise GradientMismatch(f"{variant} at d={len(reference)}: coefficients differ from numpy's by {error:.3g}")
    return error


# --- the product through the services -----------------------------------------------------------


def job_body(job: str, features: list[str], rounds: int) -> dict[str, Any]:
    kind, randomness = job.rsplit("-", 1)
    body: dict[str, Any] = {"features": features, "label": "y", "randomness": randomness}
    if kind == "gd":
        body.update(optimizer="gd", learning_rate=LEARNING_RATE, max_rounds=rounds, tolerance=0, relative_tolerance=0)
    elif kind == "one-shot":
        body["protocol"] = "one_shot"
    return body


def run_job(federation: LocalFederation, body: dict[str, Any]) -> dict[str, Any]:
    response = federation.session.post(f"{federation.model_creator.url}/model", json=body, timeout=60)
    if response.status_code != 202:
        raise GradientMismatch(f"POST /model {body} answered {response.status_code}: {response.text}")
    model_id = response.json()["model_id"]
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        model: dict[str, Any] = federation.session.get(
            f"{federation.model_creator.url}/model/{model_id}", timeout=60
        ).json()
        if model["status"] in ("finished", "failed", "cancelled"):
            return model
        time.sleep(0.05)
    raise TimeoutError(f"model {model_id} did not finish")


def product_jobs(config: ServicesConfig, key_bits: int, dimension: int) -> list[str]:
    jobs = list(PRODUCT_JOBS)
    if dimension > config.exact_max_dimension or key_bits != config.key_bits[0]:
        jobs = [job for job in jobs if not job.startswith("exact")]
    return jobs


def measure_dimension(
    config: ServicesConfig, federation: LocalFederation, workdir: Path, baseline: Federation, key_bits: int
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every product job and every baseline at d, interleaved repetition by repetition; medians.

    One repetition runs each product job through the services once, then one round of each
    baseline (the seed's method in the first repetition only: it is the slowest by far), so a
    change in the machine's load falls on all of them alike. An untimed one-round job comes first:
    the first job whose product is large enough starts each owner's worker processes, which then
    live as long as the owner, and no timed job should pay for that once-per-process cost (the
    baselines, likewise, run with their pools already filled).
    """
    dimension = baseline.dimension
    features = feature_names(dimension)
    references = {
        "gd": gradient_descent_reference(baseline, config.gradient_rounds),
        "exact": lstsq_reference(baseline),
        "one-shot": lstsq_reference(baseline),
    }
    jobs = product_jobs(config, key_bits, dimension)
    warm_up = run_job(federation, job_body("gd-standard", features, 1))
    if warm_up["status"] != "finished":
        raise GradientMismatch(f"the warm-up job at d={dimension} ended {warm_up['status']}: {warm_up.get('error')}")
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[dict[str, float]]] = {job: [] for job in jobs}
    product: dict[str, dict[str, Any]] = {}
    baselines: dict[str, dict[str, Any]] = {}
    keys = model_creator_keys(workdir)
    floor = OwnerProductsRound(keys, baseline)
    try:
        for repetition in range(config.repeats):
            for job in jobs:
                model, used = run_counted_job(federation, job_body(job, features, config.gradient_rounds))
                cpu[job].append(used)
                error = check_coefficients(job, model, references[job.rsplit("-", 1)[0]], features)
                seconds = float(model["updated_at"]) - float(model["created_at"])
                times.setdefault(job, []).append(seconds)
                product[job] = {"rounds": len(model["history"]), "max_relative_error": error}
                log(f"{key_bits}-bit d={dimension} {job}: {seconds:.3f} s, {len(model['history'])} round(s)")
            variants: list[tuple[str, Any]] = [("owner-products", floor)]
            # phe and the seed at the first (reference) key size only; CKKS has no Paillier key.
            if key_bits == config.key_bits[0]:
                variants.append(("phe-gram", PheGramRound(keys, baseline)))
                if repetition == 0 and dimension <= config.seed_style_max_dimension:
                    variants.append(("seed-style", SeedStyleRound(keys, baseline)))
            if tenseal_available() is None:
                variants.append(("tenseal-ckks", CkksRound(keys, baseline)))
            for name, variant in variants:
                measurement = variant.run_round()
                tolerance = getattr(variant, "tolerance", RELATIVE_TOLERANCE)
                error = check_gradient(name, measurement.gradient, baseline, tolerance)
                times.setdefault(name, []).append(measurement.critical_path)
                baselines[name] = {"reply_bytes": measurement.reply_bytes, "max_relative_error": error}
                log(f"d={dimension} {name}: {measurement.critical_path:.3f} s per round (critical path)")
    finally:
        floor.close()
    for job, entry in product.items():
        entry.update(job_seconds=statistics.median(times[job]), job_seconds_all=times[job])
        entry["round_seconds"] = entry["job_seconds"] / entry["rounds"]
        entry["cpu_seconds_per_round"] = median_cpu(cpu[job])
    for name, entry in baselines.items():
        entry.update(round_seconds=statistics.median(times[name]), round_seconds_all=times[name])
    return product, baselines


def model_creator_keys(workdir: Path) -> KeyMaterial:
    """The model creator's own key (read from its state directory), for the phe baselines."""
    key_file = workdir / "model_creator" / "paillier_private_key.json"
    return KeyMaterial.from_private_key(PrivateKey.from_json(json.loads(key_file.read_text())))


def party_cpu_seconds(federation: LocalFederation) -> dict[str, float]:
    """CPU seconds (user and system) each party has used so far, with the processes it started.

    A process that has ended is no longer counted, so take differences over spans in which the
    parties' processes live (an owner's worker processes live as long as the owner).
    """
    # Imported here, as matplotlib is: the test suite's environment imports this module without it.
    import psutil

    seconds = {}
    for name, party in federation.parties.items():
        if party.process is None:
            continue
        root = psutil.Process(party.process.pid)
        total = 0.0
        for process in (root, *root.children(recursive=True)):
            try:
                used = process.cpu_times()
            except psutil.NoSuchProcess:  # a worker that ended since it was listed
                continue
            total += used.user + used.system
        seconds[name] = total
    return seconds


def run_counted_job(federation: LocalFederation, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """:func:`run_job`, and each party's CPU seconds over the job ÷ its rounds."""
    before = party_cpu_seconds(federation)
    model = run_job(federation, body)
    after = party_cpu_seconds(federation)
    rounds = max(1, len(model["history"]))
    return model, {party: (after[party] - before[party]) / rounds for party in after}


def median_cpu(samples: list[dict[str, float]]) -> dict[str, float]:
    """Each party's median over the jobs' CPU-per-round samples."""
    return {party: statistics.median(sample[party] for sample in samples) for party in samples[0]}


def measure_demo(config: ServicesConfig, workdir: Path) -> dict[str, Any]:
    """The README's default job on the shipped shards, against phe used directly for the same job.

    phe's job is its measured round at the same d times the rounds our exact job took. Each
    party's CPU time over each job is recorded too (÷ the job's rounds, medians), which says
    whether the job waits on latency or on the 2 cores.
    """
    owners = [(f"owner_{letter}", DIABETES / f"owner_{letter}.csv") for letter in "abc"]
    key_bits = config.key_bits[0]
    times: dict[str, list[float]] = {job: [] for job in DEMO_JOBS}
    cpu: dict[str, list[dict[str, float]]] = {job: [] for job in DEMO_JOBS}
    rounds: dict[str, int] = {}
    columns = [load_columns(path, DIABETES_FEATURES, "progression") for _, path in owners]
    parts = tuple(OwnerData(features, labels) for features, labels in columns)
    federation = Federation(parts, *_grid_weights(len(DIABETES_FEATURES) + 1, config.seed))
    reference = lstsq_reference(federation)
    phe_rounds: list[float] = []
    with LocalFederation(workdir / "demo", owners, DIABETES / "test.csv", key_bits) as services:
        for _ in range(config.demo_repeats):
            for job, body in DEMO_JOBS.items():
                model, used = run_counted_job(services, body)
                check_coefficients(f"demo {job}", model, reference, DIABETES_FEATURES)
                times[job].append(float(model["updated_at"]) - float(model["created_at"]))
                rounds[job] = len(model["history"])
                cpu[job].append(used)
                log(f"demo {job}: {times[job][-1]:.3f} s, {rounds[job]} round(s)")
            measurement = PheGramRound(model_creator_keys(workdir / "demo"), federation).run_round()
            check_gradient("demo phe-gram", measurement.gradient, federation)
            phe_rounds.append(measurement.critical_path)
    phe_round = statistics.median(phe_rounds)
    results: dict[str, Any] = {"key_bits": key_bits, "phe_round_seconds": phe_round, "jobs": {}}
    for job in DEMO_JOBS:
        seconds = statistics.median(times[job])
        results["jobs"][job] = {
            "job_seconds": seconds,
            "job_seconds_all": times[job],
            "rounds": rounds[job],
            "phe_same_job_over_ours": phe_round * rounds["exact-standard"] / seconds,
            "cpu_seconds_per_round": median_cpu(cpu[job]),
        }
    return results


# --- the run ------------------------------------------------------------------------------------


def run(config: ServicesConfig, workdir: Path) -> dict[str, Any]:
    owners = make_owner_data(config)
    csvs = write_owner_csvs(owners, workdir / "data")
    ckks_missing = tenseal_available()
    if ckks_missing:
        log(f"the TenSEAL CKKS baseline is not run: {ckks_missing}")
    results: dict[str, Any] = {
        "mode": config.mode,
        "machine": describe_machine(),
        "config": {
            "owners": config.owners,
            "rows_per_owner": config.rows_per_owner,
            "gradient_rounds": config.gradient_rounds,
            "repeats": config.repeats,
            "learning_rate": LEARNING_RATE,
        },
        "tenseal": ckks_missing or "installed",
        "runs": [],
    }
    for key_bits in config.key_bits:
        # The model creator checks a job's columns against its test data: the first owner's file.
        directory = workdir / f"federation-{key_bits}"
        with LocalFederation(directory, csvs, csvs[0][1], key_bits) as federation:
            for dimension in config.dimensions:
                baseline = federation_for(owners, dimension, config.seed)
                product, baselines = measure_dimension(config, federation, directory, baseline, key_bits)
                results["runs"].append(
                    {"key_bits": key_bits, "dimension": dimension, "product": product, "baselines": baselines}
                )
    results["ratios"] = ratios(results["runs"])
    results["demo"] = measure_demo(config, workdir)
    return results


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Baseline time over product time, per run, for the figures the targets name."""
    table = []
    for entry in runs:
        product, baselines = entry["product"], entry["baselines"]
        row: dict[str, Any] = {"key_bits": entry["key_bits"], "dimension": entry["dimension"]}
        for name, baseline in baselines.items():
            for job in ("gd-standard", "gd-djn"):
                row[f"{name}/{job} round"] = baseline["round_seconds"] / product[job]["round_seconds"]
            if name == "owner-products":
                continue
            row["one phe-gram round/one-shot-djn job" if name == "phe-gram" else f"{name} round/one-shot-djn job"] = (
                baseline["round_seconds"] / product["one-shot-djn"]["job_seconds"]
            )
            if name == "phe-gram" and "exact-standard" in product:
                exact_job = baseline["round_seconds"] * product["exact-standard"]["rounds"]
                row["phe-gram exact job/exact-standard job"] = exact_job / product["exact-standard"]["job_seconds"]
                row["phe-gram exact job/exact-djn job"] = exact_job / product["exact-djn"]["job_seconds"]
        if "phe-gram" in baselines:
            # No gradient round on this machine can beat phe-gram by more than this.
            row["phe-gram round/owner products (ceiling)"] = (
                baselines["phe-gram"]["round_seconds"] / baselines["owner-products"]["round_seconds"]
            )
        table.append(row)
    return table


def render(results: dict[str, Any]) -> str:
    lines = [f"Through the services ({results['mode']}): {results['config']}; TenSEAL: {results['tenseal']}"]
    header = f"{'key':>5} {'d':>4}  {'variant':<20} {'round (s)':>10} {'job (s)':>9} {'rounds':>6}"
    lines.append(header)
    for entry in results["runs"]:
        for job, value in entry["product"].items():
            lines.append(
                f"{entry['key_bits']:>5} {entry['dimension']:>4}  {'ours ' + job:<20} {value['round_seconds']:>10.4f}"
                f" {value['job_seconds']:>9.3f} {value['rounds']:>6}"
            )
            lines.append(cpu_line(value["cpu_seconds_per_round"]))
        for name, value in entry["baselines"].items():
            lines.append(f"{entry['key_bits']:>5} {entry['dimension']:>4}  {name:<20} {value['round_seconds']:>10.4f}")
    demo = results["demo"]
    lines.append(
        f"Demo job (shipped diabetes shards, {demo['key_bits']}-bit), phe round {demo['phe_round_seconds']:.4f} s:"
    )
    for job, value in demo["jobs"].items():
        lines.append(
            f"  {job:<16} {value['job_seconds']:.3f} s, {value['rounds']} round(s);"
            f" phe for the same job / ours: {value['phe_same_job_over_ours']:.2f}×"
        )
        lines.append(cpu_line(value["cpu_seconds_per_round"]))
    lines.append("Ratios (baseline time / ours):")
    for row in results["ratios"]:
        cells = ", ".join(f"{k}: {v:.2f}×" for k, v in row.items() if k not in ("key_bits", "dimension"))
        lines.append(f"  {row['key_bits']}-bit d={row['dimension']}: {cells}")
    return "\n".join(lines)


def cpu_line(used: dict[str, float]) -> str:
    """The line that shows a job's CPU per round by party."""
    parties = ", ".join(f"{party} {seconds * 1000:.0f}" for party, seconds in used.items())
    return f"    CPU ms per round: {parties}; all {sum(used.values()) * 1000:.0f}"


PLOT_SERIES = {
    "ours gd-standard": ("product", "gd-standard", "round_seconds", "tab:blue", "o", "-"),
    "ours gd-djn": ("product", "gd-djn", "round_seconds", "tab:cyan", "o", "-"),
    "ours one-shot-djn (whole job)": ("product", "one-shot-djn", "job_seconds", "tab:green", "s", "-"),
    "ours one-shot-standard (whole job)": ("product", "one-shot-standard", "job_seconds", "tab:olive", "s", "--"),
    "phe-gram (phe used directly)": ("baselines", "phe-gram", "round_seconds", "tab:red", "^", "-"),
    "seed-style": ("baselines", "seed-style", "round_seconds", "tab:brown", "v", ":"),
    "TenSEAL CKKS (128-bit)": ("baselines", "tenseal-ckks", "round_seconds", "tab:purple", "D", "-."),
    "owners' products alone (a round's floor)": ("baselines", "owner-products", "round_seconds", "tab:gray", "x", ":"),
}


def plot(results: dict[str, Any], path: Path) -> None:
    """Seconds against d per key size: our rounds and one-shot jobs through the services, the baselines' rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key_sizes = sorted({entry["key_bits"] for entry in results["runs"]})
    figure, panels = plt.subplots(1, len(key_sizes), figsize=(6 * len(key_sizes), 6.2), dpi=110, squeeze=False)
    for axes, key_bits in zip(panels[0], key_sizes, strict=True):
        runs = [entry for entry in results["runs"] if entry["key_bits"] == key_bits]
        for label, (group, name, field, colour, marker, style) in PLOT_SERIES.items():
            points = [(entry["dimension"], entry[group][name][field]) for entry in runs if name in entry[group]]
            if points:
                axes.plot(*zip(*points, strict=True), color=colour, marker=marker, linestyle=style, label=label)
        dimensions = [entry["dimension"] for entry in runs]
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xticks(dimensions)
        axes.set_xticklabels([str(d) for d in dimensions])
        axes.minorticks_off()
        axes.set_xlabel("d (features + intercept)")
        axes.set_ylabel("seconds (log): a round, or a whole one-shot job")
        axes.set_title(f"{key_bits}-bit Paillier, through the services", fontsize=10)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.services", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="1024-bit, d = 4 (CI)")
    mode.add_argument(
        "--full", dest="mode", action="store_const", const="full", help="2048 and 3072 bits, d = 10, 50, 100"
    )
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.set_defaults(mode="quick")
    arguments = parser.parse_args(argv)
    config = MODES[arguments.mode]
    with tempfile.TemporaryDirectory(prefix="bench-services-") as workdir:
        try:
            results = run(config, Path(workdir))
        except GradientMismatch as exc:
            print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
            return 1
    print(render(results))
    arguments.results_dir.mkdir(parents=True, exist_ok=True)
    path = arguments.results_dir / f"services-{config.mode}.json"
    path.write_text(json.dumps(results, indent=2))
    plot_path = arguments.results_dir / f"services-{config.mode}.png"
    plot(results, plot_path)
    if config.mode == "full":
        report = HERE / "report"
        shutil.copyfile(path, report / "services.json")
        shutil.copyfile(plot_path, report / "services.png")
    print(f"Wrote {path} and {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
