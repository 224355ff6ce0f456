"""``python -m bench.privacy``: the price of differential privacy per data owner, against central DP.

Test MSE on the shipped diabetes data (three owners, data/diabetes/owner_*.csv; test.csv held
out), for ε ∈ {0.1, 0.3, 1, 3, 10, ∞} at δ = 1e-5 and the shipped public bounds
(data/diabetes/dp_job.json), over 20 independent draws of the noise:

* **per owner** — what the federation computes: each owner clips its rows, releases its noisy
  statistics (data_owner/release.py), and the model creator solves their sum with AdaSSP's
  regularisation (model_creator/noisy_statistics.py);
* **central** — the same mechanism at the same ε applied once to the pooled rows, as a trusted
  curator would: the baseline that shows what running DP per owner costs (its noise is that of
  one owner, not of three);
* ε = ∞ is the exact least-squares model, with no clipping and no noise.

The pipeline runs in one process with the product's own functions: the encrypted rounds compute
exactly the sum of the owners' encoded releases (tests/e2e/test_dp.py checks that a job through
the real services gives the AdaSSP solution of the releases its owners' ledgers hold), so the
encryption changes none of these numbers and would only make the run slower. The noise comes
from the operating system's generator, which cannot be seeded: each of the 20 draws is fresh.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.crypto.paillier import PrivateKey
from common.dataset import load_columns
from common.protocol.scales import scales_from_bounds, unscaled_coefficients
from common.protocol.spec import JobSpec
from data_owner.accounting import rho_for
from data_owner.release import NoisyRelease, exact_blocks
from model_creator.noisy_statistics import NoiseModel, solve_adassp

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data" / "diabetes"
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
LABEL = "progression"
EPSILONS = [0.1, 0.3, 1.0, 3.0, 10.0, math.inf]
DELTA = 1e-5

FloatArray = npt.NDArray[np.float64]


def job_spec() -> JobSpec:
    """The job as the model creator would declare it, under a throwaway key (only its layout matters)."""
    bounds = json.loads((DATA / "dp_job.json").read_text())["bounds"]
    key = PrivateKey.generate(1024).public_key
    feature_scales, label_scale = scales_from_bounds(FEATURES, LABEL, bounds, binary_label=False)
    return JobSpec.for_bounds(
        "privacy-bench",
        "linear_regression",
        FEATURES,
        LABEL,
        key,
        data_bits=48,
        data_frac_bits=32,
        weight_bits=16,
        weight_frac_bits=32,
        max_contributors=100,
        bounds=bounds,
        feature_scales=feature_scales,
        label_scale=label_scale,
    )


def private_model(spec: JobSpec, parts: list[tuple[FloatArray, FloatArray]], epsilon: float) -> FloatArray:
    """Coefficients from one release per part (an owner, or the pooled rows), summed and solved."""
    releases = [NoisyRelease.draw(exact_blocks(spec, x, y), rho_for(epsilon, DELTA), epsilon, DELTA) for x, y in parts]
    encoded = [release.encoded(spec) for release in releases]
    matrix = sum(np.array(e.matrix, dtype=float) for e in encoded) / 2**spec.data_frac_bits
    vector = sum(np.array(e.offset, dtype=float) for e in encoded) / 2**spec.gradient_frac_bits
    noise = NoiseModel.of(spec, {str(i): release.declaration for i, release in enumerate(releases)})
    solved = solve_adassp(np.asarray(matrix), np.asarray(vector), noise).coefficients
    model = unscaled_coefficients(spec.feature_scales, spec.label_scale, [Fraction(c) for c in solved])
    return np.array([float(c) for c in model])


def mse(coefficients: FloatArray, features: FloatArray, labels: FloatArray) -> float:
    return float(np.mean((coefficients[0] + features @ coefficients[1:] - labels) ** 2))


def summary(values: list[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {
        "median": statistics.median(values),
        "q1": quartiles[0],
        "q3": quartiles[2],
        "min": min(values),
        "max": max(values),
    }


def run(draws: int) -> dict[str, Any]:
    spec = job_spec()
    owners = [load_columns(DATA / f"owner_{letter}.csv", FEATURES, LABEL) for letter in "abc"]
    pooled = (np.vstack([x for x, _ in owners]), np.concatenate([y for _, y in owners]))
    test = load_columns(DATA / "test.csv", FEATURES, LABEL)
    design = np.hstack([np.ones((len(pooled[1]), 1)), pooled[0]])
    exact = np.linalg.lstsq(design, pooled[1], rcond=None)[0]
    rows: list[dict[str, Any]] = []
    for epsilon in EPSILONS:
        if math.isinf(epsilon):
            value = mse(exact, *test)
            rows.append({"epsilon": None, "per_owner": summary([value]), "central": summary([value])})
            continue
        per_owner = [mse(private_model(spec, owners, epsilon), *test) for _ in range(draws)]
        central = [mse(private_model(spec, [pooled], epsilon), *test) for _ in range(draws)]
        rows.append({"epsilon": epsilon, "per_owner": summary(per_owner), "central": summary(central)})
    return {
        "delta": DELTA,
        "draws": draws,
        "owners": 3,
        "rows": len(pooled[1]),
        "test_rows": len(test[1]),
        "features": len(FEATURES),
        "results": rows,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [row for row in results["results"] if row["epsilon"] is not None]
    exact = next(row for row in results["results"] if row["epsilon"] is None)["per_owner"]["median"]
    epsilons = [row["epsilon"] for row in finite]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for key, label, colour in (
        ("per_owner", "DP per owner (3 owners, this system)", "tab:blue"),
        ("central", "central DP on the pooled rows (same ε)", "tab:orange"),
    ):
        medians = [row[key]["median"] for row in finite]
        axes.plot(epsilons, medians, "o-", color=colour, label=label)
        axes.fill_between(
            epsilons, [row[key]["q1"] for row in finite], [row[key]["q3"] for row in finite], color=colour, alpha=0.2
        )
    axes.axhline(exact, color="black", linestyle="--", label="no DP (ε = ∞), exact")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(f"ε per job (δ = {results['delta']:g})")
    axes.set_ylabel("test MSE (progression², log scale)")
    axes.set_title(f"Diabetes, {results['rows']} training rows: median and quartiles of {results['draws']} draws")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.privacy", description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20, help="noise draws per ε and side (default 20)")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "privacy.json")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "privacy_mse.png")
    arguments = parser.parse_args(argv)
    results = run(arguments.draws)
    print(f"{'epsilon':>8}  {'per owner: median [q1, q3]':>34}  {'central: median [q1, q3]':>34}")
    for row in results["results"]:
        epsilon = "inf" if row["epsilon"] is None else f"{row['epsilon']:g}"
        cells = [
            f"{row[k]['median']:10.1f} [{row[k]['q1']:9.1f}, {row[k]['q3']:9.1f}]" for k in ("per_owner", "central")
        ]
        print(f"{epsilon:>8}  {cells[0]:>34}  {cells[1]:>34}")
    arguments.results.parent.mkdir(parents=True, exist_ok=True)
    arguments.results.write_text(json.dumps(results, indent=2))
    plot(results, arguments.plot)
    print(f"wrote {arguments.results} and {arguments.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
