"""The job specification every party of a job agrees on, and the limits it must respect.

The model creator fixes it at job start; the coordinator and every data owner receive it with the
public key and check each message of the job against it (key fingerprint, vector lengths, slot
layout). It carries nothing a data owner must not learn: no hyperparameters of the optimiser,
no weights. Its limits are written once, here, in the field types: validation and the API
documents both come from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from common.crypto.packing import SlotLayout
from common.crypto.paillier import PublicKey
from common.protocol.errors import ProtocolViolation, SchemaError
from common.protocol.fields import INTEGRAL, inconsistent
from common.protocol.models import MODELS
from common.protocol.scales import MAX_EXPONENT
from common.protocol.wire import MAX_VECTOR_LENGTH

MAX_FEATURES = 500
MAX_DATA_OWNERS = 100_000

GRADIENT = "gradient"
STATISTICS = "statistics"
MOMENTS = "moments"
RoundKind = Literal["gradient", "statistics", "moments"]
Protocol = Literal["gradients", "one_shot"]
Randomness = Literal["standard", "djn"]

JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
JobId = Annotated[
    str,
    StringConstraints(strict=True, pattern=JOB_ID_PATTERN),
    Field(description="Letters, digits, '-' and '_', at most 64."),
]
Fingerprint = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[0-9a-f]{64}$"),
    Field(description="SHA-256 of the public key's modulus n (big-endian bytes), in hexadecimal."),
]
ColumnName = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]


def _known_model(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return name


ModelName = Annotated[
    str, Field(strict=True), AfterValidator(_known_model), WithJsonSchema({"type": "string", "enum": list(MODELS)})
]


Names = TypeVar("Names", list[str], tuple[str, ...])


def _distinct(names: Names) -> Names:
    if len(set(names)) != len(names):
        raise ValueError("names must not repeat")
    return names


_UNIQUE = Field(min_length=1, max_length=MAX_FEATURES, json_schema_extra={"uniqueItems": True})
FeatureList = Annotated[list[ColumnName], _UNIQUE, AfterValidator(_distinct)]
FeatureTuple = Annotated[tuple[ColumnName, ...], _UNIQUE, AfterValidator(_distinct)]
Bits = Annotated[int, Field(strict=True, ge=0, le=256), INTEGRAL]
Exponent = Annotated[int, Field(strict=True, ge=-MAX_EXPONENT, le=MAX_EXPONENT), INTEGRAL]
Bound = Annotated[float, Field(allow_inf_nan=False, ge=-(2.0**64), le=2.0**64)]
ColumnBounds = Annotated[
    dict[ColumnName, Annotated[list[Bound], Field(min_length=2, max_length=2)]],
    Field(
        max_length=MAX_FEATURES + 1,
        description="Public bounds [low, high] per column, label included: data owners that protect"
        " their rows with differential privacy clip every value to them.",
    ),
]


def check_bounds(bounds: dict[str, list[float]] | None, columns: Sequence[str | None]) -> dict[str, list[float]] | None:
    """Bounds name only the job's columns, each with ``low < high``."""
    if bounds is None:
        return None
    for column, (low, high) in bounds.items():
        if column not in columns:
            raise inconsistent(f"bounds: {column!r} is neither a feature nor the label of the job")
        if not low < high:
            raise inconsistent(f"bounds: {column!r}: the low bound {low:g} is not below the high bound {high:g}")
    return bounds


class JobSpec(BaseModel):
    """What a job computes and how its numbers are encoded.

    Attributes
    ----------
    data_frac_bits
        Fractional bits of each data owner's precomputed statistics (A_i at 2**data_frac_bits).
    weight_frac_bits
        Fractional bits of the encrypted weights.
    weight_bits
        Integer bits of the weights: every weight the model creator sends has
        ``|w| < 2**weight_bits``; data owners size their bound checks on it.
    layout
        The slot layout of the data owners' packed replies.
    bounds
        Public ``[low, high]`` per column (label included), declared by the model creator for
        data owners that protect their rows with differential privacy: they clip to them
        (PROTOCOL.md section 8). ``None``: no bounds declared.
    feature_scales, label_scale
        The power of two each feature and the label are multiplied by before anything is
        encoded (common/protocol/scales.py); ``None`` and 0: none.
    protocol
        ``"gradients"``: a gradient round per step of the optimiser; ``"one_shot"``: each data
        owner sends its packed statistics (n_i, A_i, b_i) once, in one moments round, and the
        model creator solves exactly (PROTOCOL.md section 10).
    randomness
        How every party of the job makes fresh encryption randomness: ``"standard"`` (``r ** n``
        for a random unit r, decisional composite residuosity only) or ``"djn"`` (short
        exponents of a fixed base, which also assumes that short exponents hide as well as full
        ones; see :mod:`common.crypto.randomness`).
    """

    # Lax only so that JSON arrays become the tuple of features; every scalar field is strict.
    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: JobId
    model: ModelName
    features: FeatureTuple
    label: ColumnName
    data_frac_bits: Bits
    weight_frac_bits: Bits
    weight_bits: Annotated[int, Field(strict=True, ge=1, le=256), INTEGRAL]
    layout: SlotLayout
    min_data_owners: Annotated[int, Field(strict=True, ge=1, le=MAX_DATA_OWNERS), INTEGRAL]
    key_fingerprint: Fingerprint
    bounds: ColumnBounds | None = None
    feature_scales: tuple[Exponent, ...] | None = None
    label_scale: Exponent = 0

    protocol: Protocol = "gradients"
    randomness: Randomness = "standard"

    @field_validator("label")
    @classmethod
    def _label_is_no_feature(cls, label: str, info: ValidationInfo) -> str:
        if label in info.data.get("features", ()):
            raise inconsistent(f"{label!r} is also listed as a feature")
        return label

    @field_validator("layout")
    @classmethod
    def _layout_holds_weights(cls, layout: SlotLayout, info: ValidationInfo) -> SlotLayout:
        weight_bits = info.data.get("weight_bits", 0) + info.data.get("weight_frac_bits", 0)
        if weight_bits >= layout.value_bits:
            raise inconsistent(f"slots of {layout.value_bits} value bits cannot hold weights of {weight_bits} bits")
        return layout

    @field_validator("min_data_owners")
    @classmethod
    def _countable(cls, min_data_owners: int, info: ValidationInfo) -> int:
        layout = info.data.get("layout")
        if layout is not None and min_data_owners > layout.max_contributors:
            raise inconsistent("more than the layout can count")
        return min_data_owners

    @field_validator("feature_scales")
    @classmethod
    def _a_scale_per_feature(cls, scales: tuple[int, ...] | None, info: ValidationInfo) -> tuple[int, ...] | None:
        if scales is not None and len(scales) != len(info.data.get("features", ())):
            raise inconsistent(
                f"feature_scales: {len(scales)} exponents for {len(info.data.get('features', ()))} features"
            )
        return scales

    @field_validator("bounds")
    @classmethod
    def _bounds_of_job_columns(cls, bounds: dict[str, list[float]] | None, info: ValidationInfo) -> object:
        return check_bounds(bounds, (*info.data.get("features", ()), info.data.get("label")))

    @model_validator(mode="after")
    def _one_shot_fits_a_message(self) -> JobSpec:
        if self.protocol == "one_shot" and self.reply_ciphertexts(MOMENTS) > MAX_VECTOR_LENGTH:
            raise inconsistent(
                f"protocol: a one-shot reply of {len(self.features)} features needs"
                f" {self.reply_ciphertexts(MOMENTS)} ciphertexts, more than the {MAX_VECTOR_LENGTH} a message carries;"
                " use 'gradients'"
            )
        return self

    @classmethod
    def for_bounds(
        cls,
        job_id: str,
        model: str,
        features: Sequence[str],
        label: str,
        public_key: PublicKey,
        *,
        data_bits: int,
        data_frac_bits: int,
        weight_bits: int,
        weight_frac_bits: int,
        max_contributors: int,
        min_data_owners: int = 1,
        bounds: dict[str, list[float]] | None = None,
        feature_scales: tuple[int, ...] | None = None,
        label_scale: int = 0,
        protocol: Protocol = "gradients",
        randomness: Randomness = "standard",
    ) -> JobSpec:
        """The spec for declared bounds: slots wide enough for any gradient coordinate.

        A coordinate is a sum of products of a data statistic (``data_bits`` integer bits at
        ``2**data_frac_bits``) and a weight (``weight_bits`` integer bits at ``2**weight_frac_bits``),
        so its slot holds ``data_bits + data_frac_bits + weight_bits + weight_frac_bits`` bits; each
        data owner checks that its own statistics respect that bound before it joins.
        """
        value_bits = data_bits + data_frac_bits + weight_bits + weight_frac_bits
        return cls(
            job_id=job_id,
            model=model,
            features=tuple(features),
            label=label,
            data_frac_bits=data_frac_bits,
            weight_frac_bits=weight_frac_bits,
            weight_bits=weight_bits,
            layout=SlotLayout.for_key(public_key.bits, value_bits, max_contributors),
            min_data_owners=min_data_owners,
            key_fingerprint=public_key.fingerprint,
            bounds=bounds,
            feature_scales=feature_scales,
            label_scale=label_scale,
            protocol=protocol,
            randomness=randomness,
        )

    def check_key(self, public_key: PublicKey) -> None:
        """Raise unless ``public_key`` is the job's key and its plaintexts hold the job's slots."""
        public_key.check_fingerprint(self.key_fingerprint, "spec.key_fingerprint")
        if not self.layout.fits(public_key.bits):
            raise SchemaError("spec.layout: the slots do not fit the key's plaintext space")

    @property
    def dimension(self) -> int:
        """Number of coefficients: one per feature plus the intercept."""
        return len(self.features) + 1

    @property
    def gradient_frac_bits(self) -> int:
        """Scale of a gradient coordinate: data scale times weight scale."""
        return self.data_frac_bits + self.weight_frac_bits

    @property
    def main_kind(self) -> RoundKind:
        """The kind of the rounds that train: moments rounds in a one-shot job, else gradient rounds."""
        return "moments" if self.protocol == "one_shot" else "gradient"

    def check_round_kind(self, kind: str, where: str) -> None:
        """Raise unless a round of ``kind`` belongs to this job: statistics rounds and its :attr:`main_kind`."""
        if kind not in (STATISTICS, self.main_kind):
            raise ProtocolViolation(f"{where}: a {kind} round has no place in a job of protocol {self.protocol!r}")

    def reply_values(self, kind: str = GRADIENT) -> int:
        """Signed values in a data owner's reply to a round of ``kind``.

        A gradient round: the row count, then the gradient. A statistics round: the row count,
        then each feature's sum, then each feature's sum of squares. A moments round: the row
        count, the upper triangle of A_i row by row, then b_i.
        """
        if kind == STATISTICS:
            return 1 + 2 * len(self.features)
        if kind == MOMENTS:
            return 1 + self.dimension * (self.dimension + 1) // 2 + self.dimension
        return 1 + self.dimension

    def reply_ciphertexts(self, kind: str = GRADIENT) -> int:
        """Packed ciphertexts in a data owner's reply to a round of ``kind``."""
        return self.layout.ciphertext_count(self.reply_values(kind))
