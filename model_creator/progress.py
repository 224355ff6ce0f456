"""How far a model's training is: rounds expected, fraction done, an estimate of the time left.

A pure function of the stored model (its request, status, round and history), so that every
answer about a model carries its progress, whatever the model creator restarted in between.

The exact solver (and its private variant, which probes the noisy objective) takes d + 1
gradient rounds for d coefficients (the features and the intercept); a first-order optimiser runs
up to its ``max_rounds``; a one-shot job takes one round; training on standardised features adds
the statistics round. A job can
end earlier (an exact solver whose gradient vanishes, a tolerance reached), and later when its
owners change (the solver starts again): the fraction of a job in flight is therefore capped
below 1, and the time left is the mean duration of its rounds so far times the rounds still expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import fmean
from typing import Any

from common.protocol.messages import ModelRecord

#: The rounds of a first-order optimiser when the request names no ``max_rounds``.
DEFAULT_FIRST_ORDER_ROUNDS = 100
#: The largest fraction shown for a job still in flight.
IN_FLIGHT_CAP = 0.99


def expected_rounds(request: Mapping[str, Any]) -> int | None:
    """Rounds a request's job is expected to take (``None`` for an imported model)."""
    optimizer = request.get("optimizer")
    if optimizer not in ("exact", "gd", "momentum", "adam"):
        return None
    statistics = 1 if request.get("standardize") else 0
    if request.get("protocol") == "one_shot":
        return 1 + statistics
    if optimizer == "exact":
        return len(request["features"]) + 2 + statistics
    return int(request.get("max_rounds") or DEFAULT_FIRST_ORDER_ROUNDS) + statistics


def with_progress(model: ModelRecord) -> ModelRecord:
    """The model with ``expected_rounds``, ``fraction_done`` and ``seconds_left`` filled in."""
    expected = expected_rounds(model.request)
    if expected is None:
        return model
    if model.status == "finished":
        return model.model_copy(update={"expected_rounds": expected, "fraction_done": 1.0, "seconds_left": 0.0})
    fraction = min(IN_FLIGHT_CAP, model.round / expected)
    seconds_left = None
    if model.status in ("pending", "running") and model.history:
        seconds_left = fmean(entry.seconds for entry in model.history) * max(0, expected - model.round)
    return model.model_copy(
        update={"expected_rounds": expected, "fraction_done": round(fraction, 6), "seconds_left": seconds_left}
    )
