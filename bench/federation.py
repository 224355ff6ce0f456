"""The synthetic federation, the key pair every variant shares, and the check against numpy.

Data are drawn from a seeded generator, so a run is reproducible; the weights of the round are
chosen on the model creator's fixed-point grid, so every variant (fixed point, phe's floats,
plain floats) evaluates the gradient at exactly the same point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import phe

from common.crypto.paillier import PrivateKey

# The model creator's defaults (model_creator/config.py): DATA_BITS, DATA_FRAC_BITS, the integer
# bits of the default max_abs_weight, WEIGHT_FRAC_BITS, MAX_DATA_OWNERS.
DATA_BITS = 64
DATA_FRAC_BITS = 32
WEIGHT_BITS = 32
WEIGHT_FRAC_BITS = 32
MAX_DATA_OWNERS = 1000

# How far a variant's decrypted gradient may be from numpy's, relative to the gradient's size.
RELATIVE_TOLERANCE = 1e-6


class GradientMismatch(AssertionError):
    """A variant decrypted a gradient that is not numpy's: its times mean nothing."""


@dataclass(frozen=True)
class OwnerData:
    """One data owner's rows: features without the intercept column, and labels."""

    features: np.ndarray
    labels: np.ndarray

    @property
    def row_count(self) -> int:
        return int(self.labels.shape[0])

    @property
    def design(self) -> np.ndarray:
        """The rows with a leading column of ones (the intercept)."""
        return np.hstack([np.ones((self.row_count, 1)), self.features])

    @property
    def gram(self) -> np.ndarray:
        """A_i = XᵀX, computed by numpy (independently of the product's common.protocol.models)."""
        return self.design.T @ self.design

    @property
    def moment(self) -> np.ndarray:
        """b_i = Xᵀy."""
        return self.design.T @ self.labels


@dataclass(frozen=True)
class Federation:
    """K data owners with d − 1 features each, and the weights of the round being measured."""

    owners: tuple[OwnerData, ...]
    weights: tuple[float, ...]
    query: tuple[int, ...]

    @property
    def dimension(self) -> int:
        """Coefficients including the intercept (d)."""
        return len(self.weights)

    @property
    def rows_per_owner(self) -> int:
        return self.owners[0].row_count

    @property
    def total_rows(self) -> int:
        return sum(owner.row_count for owner in self.owners)

    def reference_gradient(self) -> np.ndarray:
        """Return numpy's Σ_i (A_i w − b_i) at the round's weights."""
        weights = np.asarray(self.weights)
        return sum((owner.gram @ weights - owner.moment for owner in self.owners), np.zeros(self.dimension))


def make_federation(dimension: int, rows_per_owner: int, owners: int, seed: int) -> Federation:
    """Draw standard normal features, a noisy linear label, and weights in [−2, 2] on the 2**−32 grid."""
    generator = np.random.default_rng(seed)
    coefficients = generator.normal(size=dimension)
    parties = []
    for _ in range(owners):
        features = generator.normal(size=(rows_per_owner, dimension - 1))
        labels = coefficients[0] + features @ coefficients[1:] + 0.5 * generator.normal(size=rows_per_owner)
        parties.append(OwnerData(features, labels))
    query = tuple(int(q) for q in np.rint(np.ldexp(generator.uniform(-2.0, 2.0, size=dimension), WEIGHT_FRAC_BITS)))
    weights = tuple(math.ldexp(q, -WEIGHT_FRAC_BITS) for q in query)
    return Federation(tuple(parties), weights, query)


@dataclass(frozen=True)
class KeyMaterial:
    """One Paillier key pair, as the product's objects and as python-paillier's.

    Generated once per run and shared by every variant, so no variant is timed on a luckier key.
    """

    private_key: PrivateKey
    phe_public: phe.PaillierPublicKey
    phe_private: phe.PaillierPrivateKey

    @property
    def bits(self) -> int:
        return self.private_key.public_key.bits

    @classmethod
    def from_private_key(cls, private_key: PrivateKey) -> KeyMaterial:
        public = phe.PaillierPublicKey(int(private_key.public_key.n))
        return cls(private_key, public, phe.PaillierPrivateKey(public, int(private_key.p), int(private_key.q)))

    @classmethod
    def generate(cls, bits: int) -> KeyMaterial:
        return cls.from_private_key(PrivateKey.generate(bits))


def check_gradient(
    variant: str, gradient: np.ndarray, federation: Federation, tolerance: float = RELATIVE_TOLERANCE
) -> float:
    """Return the relative error of a variant's gradient; raise :class:`GradientMismatch` past ``tolerance``."""
    reference = federation.reference_gradient()
    gradient = np.asarray(gradient, dtype=np.float64)
    if gradient.shape != reference.shape or not np.all(np.isfinite(gradient)):
        raise GradientMismatch(
            f"{variant}: gradient of shape {gradient.shape} (or not finite); expected {reference.shape}"
        )
    scale = max(float(np.max(np.abs(reference))), 1.0)
    error = float(np.max(np.abs(gradient - reference))) / scale
    if error > tolerance:
        raise GradientMismatch(
            f"{variant} at d={federation.dimension}: decrypted gradient differs from numpy's by"
            f" {error:.3g} (relative), more than {tolerance:g}"
        )
    return error
