"""One training job as the model creator sees it, free of HTTP.

:class:`TrainingRequest` is what a user asks for; :class:`TrainingRun` turns it into a job spec,
encrypts each round's weights, and absorbs each round's aggregate: decrypt the packed sum,
check it, and step the optimiser. Only sums over all of a round's data owners are ever
decrypted, and an aggregate with fewer contributors than the job's minimum is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from common.encoding import decode
from common.errors import ProtocolViolation, SchemaError
from common.models import MODELS, mean_squared_error, predict
from common.packing import SlotLayout, unpack_sum
from common.paillier import PrivateKey
from common.protocol import MAX_FEATURES, JobSpec
from common.randomness import ObfuscatorPool
from common.solvers import ConjugateDirections, GradientDescent, Optimizer
from common.wire import require_int, require_number, require_str, require_str_list

OPTIMIZERS = ("exact", "gd")


@dataclass(frozen=True)
class TrainingRequest:
    """A user's training request, checked."""

    model: str
    features: list[str]
    label: str
    optimizer: str
    learning_rate: float
    max_rounds: int | None
    min_data_owners: int
    max_abs_weight: float

    @classmethod
    def from_json(cls, body: Mapping[str, Any], config: Mapping[str, Any]) -> TrainingRequest:
        """Parse a ``POST /model`` body; every field is optional, every error names its field."""
        known = {"model", "features", "label", "optimizer", "learning_rate", "max_rounds", "min_data_owners",
                 "max_abs_weight"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise SchemaError(f"body: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        model = body.get("model", "linear_regression")
        if model not in MODELS:
            raise SchemaError(f"body.model: unknown model {model!r}; known: {', '.join(MODELS)}")
        optimizer = body.get("optimizer", "exact")
        if optimizer not in OPTIMIZERS:
            raise SchemaError(f"body.optimizer: unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        defaults = {"features": list(config["DEFAULT_FEATURES"]), "label": config["DEFAULT_LABEL"],
                    "learning_rate": 0.1, "min_data_owners": 1,
                    "max_abs_weight": float(2 ** config["DEFAULT_WEIGHT_BITS"])}
        merged = {**defaults, **body}
        features = require_str_list(merged, "features", max_items=MAX_FEATURES)
        label = require_str(merged, "label")
        if label in features:
            raise SchemaError(f"body.label: {label!r} is also listed as a feature")
        return cls(
            model=model,
            features=features,
            label=label,
            optimizer=optimizer,
            learning_rate=require_number(merged, "learning_rate", minimum=1e-12, maximum=1e6),
            max_rounds=require_int(merged, "max_rounds", minimum=1, maximum=100_000) if "max_rounds" in body else None,
            min_data_owners=require_int(merged, "min_data_owners", minimum=1, maximum=int(config["MAX_DATA_OWNERS"])),
            max_abs_weight=require_number(merged, "max_abs_weight", minimum=1.0, maximum=2.0**128),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RoundRecord:
    """What the history keeps of a round: nothing about any single data owner's values."""

    round: int
    contributors: int
    data_owners: list[str]
    failures: dict[str, str]
    gradient_norm: float
    validation_mse: float | None
    restarted: bool
    seconds: float


class TrainingRun:
    """The model creator's state for one job in flight."""

    def __init__(self, job_id: str, request: TrainingRequest, private_key: PrivateKey, config: Mapping[str, Any],
                 validation: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.request = request
        self.private_key = private_key
        self.validation = validation
        public_key = private_key.public_key
        weight_bits = max(1, math.ceil(math.log2(request.max_abs_weight)))
        value_bits = int(config["DATA_BITS"]) + int(config["DATA_FRAC_BITS"]) + weight_bits + int(config["WEIGHT_FRAC_BITS"])
        self.spec = JobSpec(
            job_id=job_id,
            model=request.model,
            features=tuple(request.features),
            label=request.label,
            data_frac_bits=int(config["DATA_FRAC_BITS"]),
            weight_frac_bits=int(config["WEIGHT_FRAC_BITS"]),
            weight_bits=weight_bits,
            layout=SlotLayout.for_key(public_key.bits, value_bits, int(config["MAX_DATA_OWNERS"])),
            min_data_owners=request.min_data_owners,
            key_fingerprint=public_key.fingerprint,
        )
        self.optimizer = self._optimizer()
        self.pool = ObfuscatorPool(public_key, 2 * self.spec.dimension).start()
        self.round = 0
        self.round_started = time.monotonic()
        self.data_owners: list[str] | None = None

    def _optimizer(self) -> Optimizer:
        spec, request = self.spec, self.request
        if request.optimizer == "gd":
            return GradientDescent(spec.dimension, spec.weight_frac_bits, spec.weight_bits,
                                   request.max_rounds or 100, request.learning_rate)
        return ConjugateDirections(spec.dimension, spec.weight_frac_bits, spec.weight_bits,
                                   request.max_rounds or 4 * (spec.dimension + 1))

    @property
    def done(self) -> bool:
        return self.optimizer.done

    def encrypted_weights(self) -> list:
        """This round's query point, encrypted under the model creator's key with fresh randomness."""
        self.round_started = time.monotonic()
        public_key = self.private_key.public_key
        return [public_key.raw_encrypt(q, self.pool.take()) for q in self.optimizer.query]

    def close(self) -> None:
        """Stop making encryption randomness for this run."""
        self.pool.stop()

    def absorb(self, ciphertexts: Sequence, data_owners: list[str], failures: dict[str, str]) -> RoundRecord:
        """Decrypt and check a round's aggregate, then step the optimiser."""
        where = f"job {self.spec.job_id} round {self.round}"
        plaintexts = [self.private_key.raw_decrypt(c) for c in ciphertexts]
        contributors, values = unpack_sum(plaintexts, self.spec.layout, self.spec.reply_values, where)
        if contributors < self.spec.min_data_owners:
            raise ProtocolViolation(
                f"{where}: the aggregate sums {contributors} data owner(s), fewer than the job's"
                f" min_data_owners = {self.spec.min_data_owners}; refused"
            )
        if contributors != len(data_owners):
            raise ProtocolViolation(
                f"{where}: the coordinator names {len(data_owners)} contributor(s) but the aggregate sums {contributors}"
            )
        row_count = values[0]
        if row_count <= 0:
            raise ProtocolViolation(f"{where}: the aggregate's row count is {row_count}")
        gradient = [decode(v, self.spec.gradient_frac_bits) for v in values[1:]]
        restarted = self.data_owners is not None and data_owners != self.data_owners
        if restarted:
            self.optimizer.restart()
        self.data_owners = data_owners
        self.optimizer.observe(gradient, row_count)
        record = RoundRecord(
            round=self.round,
            contributors=contributors,
            data_owners=data_owners,
            failures=failures,
            gradient_norm=float(np.linalg.norm([float(g) for g in gradient])) / row_count,
            validation_mse=self.validation_mse(),
            restarted=restarted,
            seconds=round(time.monotonic() - self.round_started, 6),
        )
        self.round += 1
        return record

    def coefficients(self) -> dict[str, float]:
        """The current estimate by name, intercept first."""
        values = [float(c) for c in self.optimizer.coefficients]
        return dict(zip(["intercept", *self.spec.features], values))

    def validation_mse(self) -> float | None:
        if self.validation is None:
            return None
        features, labels = self.validation
        return mean_squared_error(predict(list(self.coefficients().values()), features), labels)
