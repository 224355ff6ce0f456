"""``python -m bench [--quick | --full]``: run the benchmark suite, print it, write JSON and a plot.

Results go to ``bench/results/bench-<mode>.json`` and ``bench/results/round_time-<mode>.png``
(git-ignored); a full run also refreshes the committed copy in ``bench/report/``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from bench.federation import GradientMismatch
from bench.report import plot, render, summary, write_json
from bench.suite import MODES, run_suite

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="small sizes and a 1024-bit key, well under a minute (the default)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="d = 5..50, 1,000 rows per owner, 2048-bit key (about 1.5 minutes on 2 cores)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=HERE / "results",
        help="where bench-<mode>.json and the plot go (default: bench/results)",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the matplotlib plot")
    parser.set_defaults(mode="quick")
    arguments = parser.parse_args(argv)

    try:
        results = run_suite(MODES[arguments.mode])
    except GradientMismatch as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    print(render(results))
    json_path = arguments.results_dir / f"bench-{results['mode']}.json"
    write_json(results, json_path)
    written = [json_path]
    if not arguments.no_plot:
        plot_path = arguments.results_dir / f"round_time-{results['mode']}.png"
        plot(results, plot_path)
        written.append(plot_path)
    if results["mode"] == "full":
        report = HERE / "report"
        report.mkdir(exist_ok=True)
        shutil.copyfile(json_path, report / "results.json")
        written.append(report / "results.json")
        if not arguments.no_plot:
            shutil.copyfile(written[1], report / "round_time.png")
            written.append(report / "round_time.png")
    print()
    print(summary(results))
    print("Wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
