"""The job specification every party of a job agrees on, and the limits it must respect.

The model creator fixes it at job start; the coordinator and every data owner receive it with the
public key and check each message of the job against it (key fingerprint, vector lengths, slot
layout). It carries nothing a data owner must not learn: no hyperparameters of the optimiser,
no weights.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.protocol.errors import SchemaError
from common.protocol.models import MODELS
from common.crypto.packing import SlotLayout
from common.crypto.paillier import PublicKey
from common.protocol.wire import require_int, require_object, require_str, require_str_list

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_FEATURES = 500

GRADIENT = "gradient"
STATISTICS = "statistics"
ROUND_KINDS = (GRADIENT, STATISTICS)


def require_round_kind(body: dict[str, Any], default: str | None = GRADIENT, where: str = "body") -> str:
    """The round kind a message names (``default`` when absent, required when ``None``)."""
    kind = body.get("kind", default)
    if kind not in ROUND_KINDS:
        raise SchemaError(f"{where}.kind: expected one of {', '.join(ROUND_KINDS)}")
    return kind


@dataclass(frozen=True)
class JobSpec:
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
    """

    job_id: str
    model: str
    features: tuple[str, ...]
    label: str
    data_frac_bits: int
    weight_frac_bits: int
    weight_bits: int
    layout: SlotLayout
    min_data_owners: int
    key_fingerprint: str

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

    def reply_values(self, kind: str = GRADIENT) -> int:
        """Signed values in a data owner's reply to a round of ``kind``.

        A gradient round: the row count, then the gradient. A statistics round: the row count,
        then each feature's sum, then each feature's sum of squares.
        """
        if kind == STATISTICS:
            return 1 + 2 * len(self.features)
        return 1 + self.dimension

    def reply_ciphertexts(self, kind: str = GRADIENT) -> int:
        """Packed ciphertexts in a data owner's reply to a round of ``kind``."""
        return self.layout.ciphertext_count(self.reply_values(kind))

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "model": self.model,
            "features": list(self.features),
            "label": self.label,
            "data_frac_bits": self.data_frac_bits,
            "weight_frac_bits": self.weight_frac_bits,
            "weight_bits": self.weight_bits,
            "layout": self.layout.to_json(),
            "min_data_owners": self.min_data_owners,
            "key_fingerprint": self.key_fingerprint,
        }

    @classmethod
    def from_json(cls, payload: Any, where: str = "spec") -> JobSpec:
        """Parse and check a spec; every error names the offending field."""
        body = require_object(payload, where)
        job_id = require_str(body, "job_id", where, 64)
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise SchemaError(f"{where}.job_id: letters, digits, '-' and '_' only")
        model = require_str(body, "model", where)
        if model not in MODELS:
            raise SchemaError(f"{where}.model: unknown model {model!r}; known: {', '.join(MODELS)}")
        features = require_str_list(body, "features", where, MAX_FEATURES)
        label = require_str(body, "label", where)
        if label in features:
            raise SchemaError(f"{where}.label: {label!r} is also listed as a feature")
        spec = cls(
            job_id=job_id,
            model=model,
            features=tuple(features),
            label=label,
            data_frac_bits=require_int(body, "data_frac_bits", where, 0, 256),
            weight_frac_bits=require_int(body, "weight_frac_bits", where, 0, 256),
            weight_bits=require_int(body, "weight_bits", where, 1, 256),
            layout=SlotLayout.from_json(body.get("layout"), f"{where}.layout"),
            min_data_owners=require_int(body, "min_data_owners", where, 1, 100_000),
            key_fingerprint=require_str(body, "key_fingerprint", where, 64),
        )
        if spec.min_data_owners > spec.layout.max_contributors:
            raise SchemaError(f"{where}.min_data_owners: more than the layout can count")
        if spec.weight_bits + spec.weight_frac_bits >= spec.layout.value_bits:
            raise SchemaError(
                f"{where}.layout.value_bits: slots of {spec.layout.value_bits} bits cannot hold"
                f" weights of {spec.weight_bits + spec.weight_frac_bits} bits"
            )
        return spec
