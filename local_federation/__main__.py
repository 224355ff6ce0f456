"""``python -m local_federation`` (``./run_demo.sh``): the main job end to end on one machine.

Starts a coordinator, one data owner per shipped shard and a model creator, trains the default
linear regression through the user's client (``federated_trainer``: the progress of every round as
it comes), prints the coefficients and the model creator's test MSE, and — since this demo happens
to hold every owner's file — checks the model against numpy least squares on the pooled rows,
which no real party could do. Its temporary state (the parties' keys among it) is removed at the
end unless ``--keep`` or ``--workdir`` says otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from common.dataset import load_columns
from common.service.cli import CHECKOUT
from federated_trainer.cli import Progress
from federated_trainer.client import Client
from local_federation.cluster import LocalFederation
from model_creator.config import ModelCreatorSettings

SHIPPED = CHECKOUT / "data" / "diabetes"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--owner",
        action="append",
        metavar="NAME=CSV",
        help="a data owner and its file (repeatable; default: the three shipped shards)",
    )
    parser.add_argument("--test-data", type=Path, default=SHIPPED / "test.csv")
    parser.add_argument("--key-bits", type=int, default=2048, choices=[1024, 2048, 3072, 4096])
    parser.add_argument("--optimizer", choices=["exact", "gd"], default="exact")
    parser.add_argument("--workdir", type=Path, help="state and logs of the parties (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (state, keys, logs)")
    args = parser.parse_args()
    owners = (
        [tuple(item.split("=", 1)) for item in args.owner]
        if args.owner
        else [(f"hospital_{s}", SHIPPED / f"owner_{s}.csv") for s in "abc"]
    )
    owners = [(name, Path(path).resolve()) for name, path in owners]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="federated_demo_"))
    try:
        return run(args, owners, workdir)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"State and logs kept in {workdir}")


def run(args: argparse.Namespace, owners: list[tuple[str, Path]], workdir: Path) -> int:
    creator_defaults = ModelCreatorSettings.model_construct()  # the defaults alone: no environment, no checks
    features, label = creator_defaults.default_features, creator_defaults.default_label
    print(f"Starting a coordinator, {len(owners)} data owner(s) and a model creator ({args.key_bits}-bit key)")
    with LocalFederation(workdir, owners, test_data=args.test_data.resolve(), key_bits=args.key_bits) as federation:
        client = Client(federation.model_creator.url)
        progress = Progress(sys.stdout)
        try:
            model = client.wait(client.train(optimizer=args.optimizer), progress, timeout=600)
        finally:
            progress.close()
        if model["status"] != "finished":
            print(f"Training failed: {model.get('error')}", file=sys.stderr)
            for party in federation.parties.values():
                print(f"--- {party.name} log ---\n{party.log_tail()}", file=sys.stderr)
            return 1
        prediction = client.prediction(model["model_id"])
    seconds = sum(entry["seconds"] for entry in model["history"])
    print(
        f"Model {model['model_id']}: {model['round']} encrypted rounds, {seconds:.1f} s of rounds,"
        f" stop reason: {model['stop_reason']}"
    )
    pooled = [load_columns(path, features, label) for _, path in owners]
    design = np.hstack([np.ones((sum(len(y) for _, y in pooled), 1)), np.vstack([x for x, _ in pooled])])
    reference = np.linalg.lstsq(design, np.concatenate([y for _, y in pooled]), rcond=None)[0]
    print(f"{'coefficient':>12} {'federated':>16} {'pooled lstsq':>16} {'rel. diff':>10}")
    for (name, value), expected in zip(model["coefficients"].items(), reference, strict=True):
        print(f"{name:>12} {value:16.8f} {expected:16.8f} {abs(value - expected) / abs(expected):10.1e}")
    print(f"Test MSE of the model creator on {prediction['rows']} held-out rows: {prediction['mse']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
