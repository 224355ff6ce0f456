"""``federated-trainer``: train, follow and manage models from the command line.

``federated-trainer train --features age,bmi --label progression`` starts a job on the model
creator (``--url``, default http://localhost:9090; ``--token`` or ``FT_API_TOKEN`` when its user API
has a token), shows its progress — a live bar on a terminal, a line per round otherwise — and prints
the coefficient table and the metrics. ``status``, ``list``, ``cancel`` and ``delete`` do what
they say. The exit status is 0 for a finished model, 1 for one that failed or was cancelled, 2 for
a call the model creator refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from federated_trainer.client import Client, ClientError


def _columns(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object given inline or as ``@file``."""
    raw = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``POST /model`` body the ``train`` command's flags stand for (over ``--body``)."""
    body: dict[str, Any] = dict(args.body or {})
    given = {
        "model": args.model,
        "features": args.features,
        "label": args.label,
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "max_rounds": args.max_rounds,
        "min_data_owners": args.min_data_owners,
        "alpha": args.alpha,
        "standardize": args.standardize,
        "name": args.name,
    }
    body.update({key: value for key, value in given.items() if value is not None})
    if args.bounds is not None:
        body["bounds"] = args.bounds.get("bounds", args.bounds)
    return body


class Progress:
    """Shows a model's rounds as they come: a bar on a terminal, otherwise one line per round."""

    def __init__(self, stream: TextIO, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.bar: tqdm[Any] | None = None
        self.shown = -1

    def __call__(self, model: dict[str, Any]) -> None:
        if not self.enabled:
            return
        total = model.get("expected_rounds")
        done = int(model.get("round") or 0)
        left = model.get("seconds_left")
        in_flight = model["status"] in ("pending", "running")
        remaining = f", about {left:.0f} s left" if in_flight and left is not None else ""
        if self.stream.isatty():
            if self.bar is None:
                self.bar = tqdm(total=total, unit="round", file=self.stream, desc=model["model_id"], leave=True)
            if total is not None and total > (self.bar.total or 0):
                self.bar.total = total
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"{model['status']}{remaining}")
        elif done != self.shown:
            of = f"/{total}" if total else ""
            print(f"model {model['model_id']}: round {done}{of}, {model['status']}{remaining}", file=self.stream)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def print_model(model: dict[str, Any], stream: TextIO) -> None:
    """The result of a model: its status, the coefficient table, its metrics and privacy."""
    name = f" ({model['name']})" if model.get("name") else ""
    print(f"model {model['model_id']}{name}: {model['status']} after {model['round']} round(s)", file=stream)
    if model.get("error"):
        print(f"error: {model['error']}", file=stream)
    if model.get("stop_reason"):
        print(f"stop reason: {model['stop_reason']}", file=stream)
    coefficients = model.get("coefficients") or {}
    if coefficients:
        width = max(len(n) for n in coefficients)
        print(f"{'coefficient':<{width}}  {'value':>18}", file=stream)
        for feature, value in coefficients.items():
            print(f"{feature:<{width}}  {value:18.10g}", file=stream)
    for metric, value in (model.get("metrics") or {}).items():
        print(f"{metric}: {'n/a' if value is None else f'{value:.6g}'}", file=stream)
    if model.get("metrics_note"):
        print(model["metrics_note"], file=stream)
    for owner, spent in ((model.get("privacy") or {}).get("data_owners") or {}).items():
        print(f"{owner}: trained under ε = {spent['epsilon']:g}, δ = {spent['delta']:g}", file=stream)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="federated-trainer", description=__doc__.splitlines()[0])
    top.add_argument("--url", default=os.environ.get("FT_MODEL_CREATOR_URL", "http://localhost:9090"))
    top.add_argument("--token", default=os.environ.get("FT_API_TOKEN"), help="the user API token (or FT_API_TOKEN)")
    commands = top.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="start a job, show its progress, print the model")
    train.add_argument("--model", help="linear_regression (default), ridge or logistic_regression")
    train.add_argument("--features", type=_columns, metavar="A,B,...")
    train.add_argument("--label")
    train.add_argument("--optimizer", choices=["exact", "gd", "momentum", "adam"])
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--max-rounds", type=int)
    train.add_argument("--min-data-owners", type=int)
    train.add_argument("--alpha", type=float)
    train.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--bounds", type=_json_object, metavar="JSON|@FILE", help="public bounds per column (for DP)")
    train.add_argument("--name")
    train.add_argument("--body", type=_json_object, metavar="JSON|@FILE", help="a whole POST /model body")
    train.add_argument("--no-wait", action="store_true", help="print the model id and return at once")
    train.add_argument("--quiet", action="store_true", help="no progress")
    train.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    for name, text in (("status", "show a model"), ("cancel", "cancel a job in flight"), ("delete", "delete a model")):
        commands.add_parser(name, help=text).add_argument("model_id")
    commands.add_parser("list", help="every model, one line each")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    client = Client(args.url, args.token)
    out, err = sys.stdout, sys.stderr
    try:
        if args.command == "train":
            model_id = client.train(**training_options(args))
            if args.no_wait:
                print(model_id, file=out)
                return 0
            progress = Progress(err, enabled=not args.quiet)
            try:
                model = client.wait(model_id, progress, timeout=args.timeout)
            finally:
                progress.close()
            print_model(model, out)
            return 0 if model["status"] == "finished" else 1
        if args.command == "status":
            model = client.model(args.model_id)
            print_model(model, out)
            return 0
        if args.command == "list":
            for model in client.models():
                fraction = model.get("fraction_done")
                done = "" if fraction is None else f" {100 * fraction:.0f}%"
                print(f"{model['model_id']}  {model['status']:<9}{done}  {model['model']}  {model.get('name') or ''}")
            return 0
        if args.command == "cancel":
            client.cancel(args.model_id)
            print(f"model {args.model_id}: cancelling", file=out)
            return 0
        client.delete(args.model_id)
        print(f"model {args.model_id}: deleted", file=out)
        return 0
    except ClientError as exc:
        print(f"federated-trainer: {exc.message}", file=err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
