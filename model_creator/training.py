"""One training job as the model creator sees it, free of HTTP.

:class:`TrainingRequest` is what a user asks for; :class:`TrainingRun` turns it into a job spec,
asks for a statistics round first when training on standardised features, encrypts each
gradient round's weights, and absorbs each round's aggregate: decrypt the packed sum, check it,
add the penalty's gradient, and step the optimiser. Only sums over all of a round's data owners
are ever decrypted, and an aggregate with fewer contributors than the job's minimum is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from common.crypto.bigint import mpz, rational
from common.crypto.encoding import decode
from common.crypto.packing import unpack_sum
from common.crypto.paillier import PrivateKey
from common.crypto.randomness import ObfuscatorPool, obfuscator_maker
from common.protocol.errors import ProtocolViolation, SchemaError, TrainingError
from common.protocol.fields import validation_error
from common.protocol.messages import PrivacyDeclaration, RoundHistory, RoundOrder, TrainingOptions
from common.protocol.models import MODELS
from common.protocol.moments import Moments
from common.protocol.scales import scales_from_bounds, unscaled_coefficients
from common.protocol.spec import GRADIENT, MOMENTS, STATISTICS, JobSpec, Protocol, Randomness, RoundKind
from common.protocol.statistics import FeatureStatistics
from common.protocol.wire import encode_ciphertexts
from model_creator.config import ModelCreatorSettings
from model_creator.direct import DirectSolver
from model_creator.noisy_statistics import NoiseModel, Regularised, probe_statistics, solve_adassp
from model_creator.precision import RELATIVE_PRECISION, relative_error_bounds, relative_error_bounds_of_matrix
from model_creator.progress import DEFAULT_FIRST_ORDER_ROUNDS
from model_creator.solvers import ConjugateDirections, FirstOrder, Optimizer, Scaling, StatisticsProbe

Validation = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


@dataclass(frozen=True)
class TrainingRequest:
    """A user's training request with the service's defaults filled in.

    ``alpha`` penalises ½·alpha·‖w₁..‖² (not the intercept) on the coefficients of the features
    the model is trained on: the standardised ones when ``standardize`` is set. The limits of each
    field are those of :class:`~common.protocol.messages.TrainingOptions`; only what depends on
    the model or the settings is checked here.
    """

    model: str
    features: list[str]
    label: str
    optimizer: str
    learning_rate: float
    max_rounds: int | None
    min_data_owners: int
    max_abs_weight: float
    alpha: float
    standardize: bool
    tolerance: float
    relative_tolerance: float
    bounds: dict[str, list[float]] | None = None
    name: str | None = None
    protocol: Protocol = "gradients"
    randomness: Randomness = "standard"

    @classmethod
    def of(cls, options: TrainingOptions, settings: ModelCreatorSettings) -> TrainingRequest:
        """The request ``options`` stand for under ``settings``.

        Raises
        ------
        SchemaError
            When ``alpha`` is given for a model without a penalty, when ``min_data_owners`` is
            more than the service counts, or when the label is one of the default features.
        """
        kind = MODELS[options.model]
        if options.alpha is not None and not kind.penalised:
            raise SchemaError(f"body.alpha: model {options.model!r} takes no penalty; use 'ridge'")
        if options.min_data_owners > settings.max_data_owners:
            raise SchemaError(
                f"body.min_data_owners: this model creator counts at most {settings.max_data_owners} data owners"
            )
        features = list(options.features) if options.features is not None else list(settings.default_features)
        label = options.label if options.label is not None else settings.default_label
        if label in features:
            raise SchemaError(f"body.label: {label!r} is also listed as a feature")
        if "intercept" in features:
            raise SchemaError("body.features: 'intercept' is reserved for the intercept coefficient")
        bounds = None if options.bounds is None else {c: [low, high] for c, (low, high) in options.bounds.items()}
        for column in bounds or {}:
            if column not in (*features, label):
                raise ProtocolViolation(f"body.bounds: {column!r} is neither a feature nor the label of the job")
        return cls(
            name=options.name,
            bounds=bounds,
            model=options.model,
            features=features,
            label=label,
            optimizer=options.optimizer,
            learning_rate=options.learning_rate,
            max_rounds=options.max_rounds,
            min_data_owners=options.min_data_owners,
            max_abs_weight=(
                options.max_abs_weight if options.max_abs_weight is not None else float(2**settings.default_weight_bits)
            ),
            alpha=options.alpha if options.alpha is not None else (1.0 if options.model == "ridge" else 0.0),
            standardize=options.standardize if options.standardize is not None else kind.standardize_by_default,
            tolerance=options.tolerance,
            relative_tolerance=options.relative_tolerance,
            protocol=options.protocol,
            randomness=options.randomness,
        )

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> TrainingRequest:
        """A request as :meth:`to_json` stored it."""
        return cls(**stored)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TrainingRun:
    """The model creator's state for one job in flight."""

    def __init__(
        self,
        job_id: str,
        request: TrainingRequest,
        private_key: PrivateKey,
        settings: ModelCreatorSettings,
        validation: Validation | None,
        metrics_note: str | None = None,
    ) -> None:
        self.request = request
        self.metrics_note = metrics_note
        self.kind = MODELS[request.model]
        self.private_key = private_key
        self.validation = validation
        public_key = private_key.public_key
        feature_scales, label_scale = scales_from_bounds(
            request.features, request.label, request.bounds, self.kind.binary_labels
        )
        # A spec the request cannot have (a one-shot reply too large for a message, say) fails the
        # job with the spec's own words, naming the option.
        try:
            self.spec = JobSpec.for_bounds(
                job_id,
                request.model,
                request.features,
                request.label,
                public_key,
                data_bits=settings.data_bits,
                data_frac_bits=settings.data_frac_bits,
                weight_bits=max(1, math.ceil(math.log2(request.max_abs_weight))),
                weight_frac_bits=settings.weight_frac_bits,
                max_contributors=settings.max_data_owners,
                min_data_owners=request.min_data_owners,
                bounds=request.bounds,
                feature_scales=feature_scales,
                label_scale=label_scale,
                protocol=request.protocol,
                randomness=request.randomness,
            )
        except ValidationError as exc:
            raise validation_error(exc, "job") from None
        self.optimizer = self._optimizer()
        make = obfuscator_maker(public_key, self.spec.randomness, private_key.raw_obfuscator)
        self.pool = ObfuscatorPool(public_key, 3 * self.spec.dimension, make).start()
        self.round = 0
        self.round_started = time.monotonic()
        self.data_owners: list[str] | None = None
        self.feature_statistics: FeatureStatistics | None = None
        # ½·alpha·Σ w_j² in the data's units is ½·alpha·Σ 4**e_j·w'_j² in the job's scaled units.
        self.penalty_weights: list[Fraction] = [Fraction(0)] + [
            Fraction(4) ** e for e in (feature_scales or [0] * len(request.features))
        ]
        # Differential privacy of the contributors (PROTOCOL.md section 8), once they declare it.
        self.privacy: dict[str, PrivacyDeclaration] = {}
        self.noise: NoiseModel | None = None
        self.regularised: Regularised | None = None

    def _optimizer(self) -> Optimizer:
        spec, request = self.spec, self.request
        if spec.protocol == "one_shot":
            return DirectSolver(spec.dimension, spec.weight_frac_bits, spec.weight_bits)
        if request.optimizer == "exact":
            return ConjugateDirections(
                spec.dimension, spec.weight_frac_bits, spec.weight_bits, request.max_rounds or 4 * (spec.dimension + 1)
            )
        return FirstOrder(
            spec.dimension,
            spec.weight_frac_bits,
            spec.weight_bits,
            request.max_rounds or DEFAULT_FIRST_ORDER_ROUNDS,
            request.optimizer,
            request.learning_rate,
            request.tolerance,
            request.relative_tolerance,
        )

    @property
    def done(self) -> bool:
        return self.optimizer.done

    @property
    def next_kind(self) -> RoundKind:
        """A statistics round first when training on standardised features, then the job's main rounds.

        Those are gradient rounds, or in a one-shot job the one moments round.
        """
        return "statistics" if self.request.standardize and self.feature_statistics is None else self.spec.main_kind

    def round_order(self) -> RoundOrder:
        """The next round's order to the coordinator, its weights encrypted with fresh randomness.

        A statistics round carries no weights; a gradient round one ciphertext per coefficient.
        """
        self.round_started = time.monotonic()
        public_key = self.private_key.public_key
        kind = self.next_kind
        weights = None
        if kind == GRADIENT:
            weights = encode_ciphertexts(
                [public_key.raw_encrypt(q, self.pool.take()) for q in self.optimizer.query], public_key
            )
        if weights is None:
            return RoundOrder(round=self.round, kind=kind, key_fingerprint=public_key.fingerprint)
        return RoundOrder(
            round=self.round, kind=kind, key_fingerprint=public_key.fingerprint, encrypted_weights=weights
        )

    def close(self) -> None:
        """Stop making encryption randomness for this run."""
        self.pool.stop()

    def absorb(
        self,
        ciphertexts: Sequence[mpz],
        data_owners: list[str],
        failures: dict[str, str],
        privacy: Mapping[str, PrivacyDeclaration] | None = None,
    ) -> RoundHistory:
        """Decrypt and check a round's aggregate, then step the optimiser.

        Raises
        ------
        ProtocolViolation
            When the aggregate sums fewer data owners than the job's minimum, or another number
            than the coordinator names: the count inside the ciphertexts is the one trusted.
        EncodingOverflow, TrainingError
            When the sum does not decode or the optimiser cannot go on.
        """
        kind = self.next_kind
        where = f"job {self.spec.job_id} round {self.round}"
        plaintexts = [self.private_key.raw_decrypt(c) for c in ciphertexts]
        contributors, values = unpack_sum(plaintexts, self.spec.layout, self.spec.reply_values(kind), where)
        if contributors < self.spec.min_data_owners:
            raise ProtocolViolation(
                f"{where}: the aggregate sums {contributors} data owner(s), fewer than the job's"
                f" min_data_owners = {self.spec.min_data_owners}; refused"
            )
        if contributors != len(data_owners):
            raise ProtocolViolation(
                f"{where}: the coordinator names {len(data_owners)} contributor(s)"
                f" but the aggregate sums {contributors}"
            )
        if kind == STATISTICS:
            record = self._absorb_statistics(values, where, data_owners, failures, contributors)
        elif kind == MOMENTS:
            record = self._absorb_moments(values, where, data_owners, failures, contributors, dict(privacy or {}))
        else:
            self._protect(dict(privacy or {}))
            record = self._absorb_gradient(values, where, data_owners, failures, contributors)
        self.round += 1
        return record

    def _check_precision(self, contributors: int) -> None:
        """An exact job must be exact to 1e-6: fail naming the coefficient the encoding cannot honour.

        Raises
        ------
        TrainingError
            When the rounding of the owners' statistics could move a coefficient by more.
        """
        assert isinstance(self.optimizer, ConjugateDirections)
        solution = [float(c) for c in self.optimizer.coefficients]
        self._raise_if_imprecise(
            relative_error_bounds(self.optimizer.directions, solution, contributors, self.spec.data_frac_bits)
        )

    def _raise_if_imprecise(self, bounds: list[float] | None) -> None:
        if bounds is None:
            return
        worst = max(range(len(bounds)), key=lambda i: bounds[i])
        if bounds[worst] > RELATIVE_PRECISION:
            name = ["intercept", *self.spec.features][worst]
            raise TrainingError(
                f"the job's fixed-point scale cannot make it exact to {RELATIVE_PRECISION:g}: coefficient {name!r}"
                f" is only within {bounds[worst]:.1e} relative (a column's values are too small or too large for"
                " one scale); declare bounds for the job's columns so that each gets its own scale"
            )

    def _protect(self, privacy: dict[str, PrivacyDeclaration]) -> None:
        """Take the contributors' privacy declarations: the noise model, and the solver it needs.

        The exact solver cannot work on statistics that may be indefinite; before its first round
        it gives way to :class:`StatisticsProbe` (both start at 0), which learns the noisy
        objective in the same d + 1 rounds and solves it with AdaSSP's regularisation.

        Raises
        ------
        TrainingError
            When differential privacy appears after the exact solver has started.
        """
        if privacy == self.privacy:
            return
        self.privacy = privacy
        self.noise = NoiseModel.of(self.spec, privacy) if privacy else None
        if self.noise is not None and isinstance(self.optimizer, ConjugateDirections):
            if self.optimizer.rounds:
                raise TrainingError("data owners turned differential privacy on during the job; start it again")
            self.optimizer = self._probe()

    def _probe(self) -> StatisticsProbe:
        spec = self.spec
        return StatisticsProbe(spec.dimension, spec.weight_frac_bits, spec.weight_bits, self._solve_noisy)

    def _solve_noisy(self, gradients: list[list[rational]]) -> list[Fraction]:
        matrix, vector = probe_statistics([[float(g) for g in gradient] for gradient in gradients])
        noise = self.noise or NoiseModel.of(self.spec, {})
        self.regularised = solve_adassp(matrix, vector, noise)
        return [Fraction(c) for c in self.regularised.coefficients]

    def _absorb_statistics(
        self, values: list[int], where: str, data_owners: list[str], failures: dict[str, str], contributors: int
    ) -> RoundHistory:
        statistics = FeatureStatistics.from_sums(values, self.spec, where)
        self.feature_statistics = statistics
        self.penalty_weights = [Fraction(0), *statistics.variances]
        if isinstance(self.optimizer, FirstOrder):
            self.optimizer.set_scaling(Scaling(tuple(float(m) for m in statistics.means), tuple(statistics.stds)))
        return self._record("statistics", contributors, data_owners, failures, None, False)

    def _absorb_gradient(
        self, values: list[int], where: str, data_owners: list[str], failures: dict[str, str], contributors: int
    ) -> RoundHistory:
        row_count = values[0]
        if row_count <= 0:
            raise ProtocolViolation(f"{where}: the aggregate's row count is {row_count}")
        gradient = [decode(v, self.spec.gradient_frac_bits) for v in values[1:]]
        point = [decode(q, self.spec.weight_frac_bits) for q in self.optimizer.query]
        if self.request.alpha:
            alpha = Fraction(self.request.alpha)
            gradient = [g + alpha * p * w for g, p, w in zip(gradient, self.penalty_weights, point, strict=True)]
        if self.noise is not None and isinstance(self.optimizer, FirstOrder):
            # No eigenvalue is known to a first-order method: AdaSSP's λ with λ_min taken as 0.
            penalty = self.noise.penalty(self.noise.tau) @ np.array([float(w) for w in point])
            gradient = [g + Fraction(float(p)) for g, p in zip(gradient, penalty, strict=True)]
        restarted = self.data_owners is not None and data_owners != self.data_owners
        if restarted:
            self.optimizer.restart()
        self.data_owners = data_owners
        self.optimizer.observe(gradient, row_count)
        if isinstance(self.optimizer, ConjugateDirections) and self.optimizer.done:
            self._check_precision(contributors)
        norm = float(np.linalg.norm([float(g) for g in gradient])) / row_count
        return self._record("gradient", contributors, data_owners, failures, norm, restarted)

    def _absorb_moments(
        self,
        values: list[int],
        where: str,
        data_owners: list[str],
        failures: dict[str, str],
        contributors: int,
        privacy: dict[str, PrivacyDeclaration],
    ) -> RoundHistory:
        """Solve from the summed statistics, with the penalty the gradient rounds would add.

        The objective is the one whose gradient every gradient round would decrypt, so the result
        is the gradient protocol's exact minimiser, in one encrypted round. Statistics that data
        owners noised (PROTOCOL.md section 8) are solved with AdaSSP's regularisation instead, as
        the probing solver does. The recorded gradient norm is the mean gradient's at the
        solution: zero.
        """
        moments = Moments.from_sums(values, self.spec, where)
        assert isinstance(self.optimizer, DirectSolver), "a one-shot job is solved directly"
        alpha = Fraction(self.request.alpha)
        matrix, vector = moments.quadratic([alpha * p for p in self.penalty_weights])
        if privacy:
            self.privacy = privacy
            self.noise = NoiseModel.of(self.spec, privacy)
            floats = np.array([[float(v) for v in row] for row in matrix]), np.array([float(v) for v in vector])
            self.regularised = solve_adassp(*floats, self.noise)
            self.optimizer.take(
                [Fraction(c) for c in self.regularised.coefficients],
                "solved from the summed noisy statistics, regularised",
            )
        else:
            self.optimizer.solve(matrix, vector)
            solution = [float(c) for c in self.optimizer.coefficients]
            matrix_floats = np.array([[float(v) for v in row] for row in matrix])
            self._raise_if_imprecise(
                relative_error_bounds_of_matrix(matrix_floats, solution, contributors, self.spec.data_frac_bits)
            )
        self.data_owners = data_owners
        return self._record("moments", contributors, data_owners, failures, 0.0, False)

    def _record(
        self,
        kind: RoundKind,
        contributors: int,
        data_owners: list[str],
        failures: dict[str, str],
        gradient_norm: float | None,
        restarted: bool,
    ) -> RoundHistory:
        return RoundHistory(
            round=self.round,
            kind=kind,
            contributors=contributors,
            data_owners=data_owners,
            failures=failures,
            gradient_norm=gradient_norm,
            validation=self.validation_metrics(),
            restarted=restarted,
            seconds=round(time.monotonic() - self.round_started, 6),
            stop_reason=self.optimizer.stop_reason,
        )

    def state(self) -> dict[str, Any]:
        """What a restarted model creator needs to continue this run at the round it awaits."""
        statistics = self.feature_statistics
        return {
            "round": self.round,
            "data_owners": self.data_owners,
            "feature_statistics": None
            if statistics is None
            else {
                "row_count": statistics.row_count,
                "means": [str(m) for m in statistics.means],
                "variances": [str(v) for v in statistics.variances],
            },
            "penalty_weights": [str(w) for w in self.penalty_weights],
            "privacy": {name: d.model_dump(mode="json") for name, d in self.privacy.items()},
            "probing": isinstance(self.optimizer, StatisticsProbe),
            "optimizer": self.optimizer.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` of a run of the same request."""
        self.round = int(state["round"])
        self.data_owners = state["data_owners"]
        statistics = state["feature_statistics"]
        if statistics is not None:
            self.feature_statistics = FeatureStatistics(
                int(statistics["row_count"]),
                tuple(map(Fraction, statistics["means"])),
                tuple(map(Fraction, statistics["variances"])),
            )
        self.penalty_weights = [Fraction(w) for w in state["penalty_weights"]]
        privacy = {name: PrivacyDeclaration.model_validate(d) for name, d in state.get("privacy", {}).items()}
        self.privacy = privacy
        self.noise = NoiseModel.of(self.spec, privacy) if privacy else None
        if state.get("probing"):
            self.optimizer = self._probe()
        self.optimizer.restore(state["optimizer"])

    def coefficients(self) -> dict[str, float]:
        """The current estimate by name, intercept first, in the features' original units.

        The optimiser works in the job's scaled units (common/protocol/scales.py); they are
        undone here, exactly.
        """
        spec = self.spec
        values = unscaled_coefficients(spec.feature_scales, spec.label_scale, self.optimizer.coefficients)
        return dict(zip(["intercept", *spec.features], map(float, values), strict=True))

    def result(self) -> dict[str, Any]:
        """What the store keeps of a finished model."""
        result: dict[str, Any] = {
            "coefficients": self.coefficients(),
            "stop_reason": self.optimizer.stop_reason,
            "data_owners": self.data_owners or [],
            "metrics": self.validation_metrics(),
        }
        if self.validation is None and self.metrics_note is not None:
            result["metrics_note"] = self.metrics_note
        if self.privacy:
            result["privacy"] = self.privacy_report()
        if self.feature_statistics is not None:
            scaling = self.feature_statistics.to_json(self.spec.features)
            exponents = self.spec.feature_scales or [0] * len(self.spec.features)
            for (name, mean), exponent in zip(list(scaling["means"].items()), exponents, strict=True):
                scaling["means"][name] = mean * 2.0**-exponent
                scaling["stds"][name] *= 2.0**-exponent
            original = np.array(list(self.coefficients().values()))
            standardised = Scaling(tuple(scaling["means"].values()), tuple(scaling["stds"].values())).to_standardised(
                original
            )
            result["scaling"] = scaling
            result["standardized_coefficients"] = dict(
                zip(["intercept", *self.spec.features], map(float, standardised), strict=True)
            )
        return result

    def privacy_report(self) -> dict[str, Any]:
        """Per data owner, the (ε, δ) it trained under; and how the noisy statistics were solved."""
        assert self.noise is not None
        if self.regularised is not None:
            regularisation = self.regularised.report(self.noise)
        else:
            regularisation = Regularised((), self.noise.tau, self.noise.tau, None).report(self.noise)
            regularisation["rule"] = (
                "AdaSSP's λ = τ with λ_min taken as 0 (a first-order optimiser knows no eigenvalue)"
            )
        return {
            "data_owners": {
                name: {"epsilon": d.epsilon, "delta": d.delta, "rho": d.rho, "mechanism": d.mechanism}
                for name, d in sorted(self.privacy.items())
            },
            "regularisation": regularisation,
        }

    def validation_metrics(self) -> dict[str, float | None] | None:
        if self.validation is None:
            return None
        features, labels = self.validation
        return self.kind.score(list(self.coefficients().values()), features, labels)
