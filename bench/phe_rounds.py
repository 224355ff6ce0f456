"""Baselines written directly with python-paillier's ``EncryptedNumber`` API (never used by the product).

Both baselines do what a careful phe user would: ``pk.encrypt`` of floats (phe's encoding, one
exponent per number), arithmetic with ``EncryptedNumber`` operators (phe aligns exponents on every
addition), ``sk.decrypt``, one ciphertext per value, and JSON messages carrying each ciphertext as
a decimal string with its exponent, as the seed project serialised them::

    {"ciphertext": str(c.ciphertext()), "exponent": c.exponent}

- :class:`SeedStyleRound` — the seed's per-sample gradient: E(r_i) = Σ_k x_ik·E(w_k) − y_i for
  every row, then Xᵀ·E(r) (d sums of n products). Its cost grows with the rows.
- :class:`PheGramRound` — the same protocol as the product (A_i = XᵀX and b_i = Xᵀy precomputed
  once per job), so d² products per owner and round, but with phe's numbers instead of packed
  fixed point.

Randomness, as phe does it: ``pk.encrypt`` obfuscates every ciphertext with a fresh ``r ** n``;
a data owner's reply is serialised with ``ciphertext(be_secure=True)``, which obfuscates each
computed value once more (the protocol requires it). The coordinator's sum is serialised with
``be_secure=False``, since it is made of obfuscated replies — phe's default would add d
needless exponentiations there, which would flatter the product.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from phe.paillier import EncryptedNumber

from bench.federation import Federation, GradientMismatch, KeyMaterial
from bench.timing import RoundMeasurement


def to_wire(numbers: Sequence[EncryptedNumber], be_secure: bool) -> list[dict]:
    """Ciphertexts as the seed sent them: decimal strings with their exponents."""
    return [{"ciphertext": str(c.ciphertext(be_secure=be_secure)), "exponent": c.exponent} for c in numbers]


def from_wire(items: Sequence[dict], public_key) -> list[EncryptedNumber]:
    """Parse :func:`to_wire`'s output (phe checks nothing about the values it is given)."""
    return [EncryptedNumber(public_key, int(item["ciphertext"]), int(item["exponent"])) for item in items]


def encrypted_sum(terms) -> EncryptedNumber:
    """Σ of EncryptedNumbers with phe's ``+`` (exponent alignment included)."""
    iterator = iter(terms)
    total = next(iterator)
    for term in iterator:
        total = total + term
    return total


class PheRound:
    """The round every phe baseline shares; subclasses say how an owner computes its gradient."""

    name = "phe"
    label = "phe"

    def __init__(self, keys: KeyMaterial, federation: Federation) -> None:
        self.keys = keys
        self.federation = federation
        self.fingerprint = keys.private_key.public_key.fingerprint

    def refill(self) -> None:
        """Prepare nothing: phe makes its randomness when it encrypts."""

    def close(self) -> None:
        """Nothing to release."""

    def owner_gradient(self, index: int, encrypted_weights: list[EncryptedNumber]) -> list[EncryptedNumber]:
        raise NotImplementedError

    def run_round(self) -> RoundMeasurement:
        public_key, private_key = self.keys.phe_public, self.keys.phe_private
        measurement = RoundMeasurement(gradient=np.zeros(0))
        with measurement.phase("mc_encrypt"):
            encrypted = [public_key.encrypt(w) for w in self.federation.weights]
            query_body = json.dumps(
                {
                    "round": 0,
                    "attempt": 1,
                    "key_fingerprint": self.fingerprint,
                    "encrypted_weights": to_wire(encrypted, be_secure=True),
                }
            )
        measurement.query_bytes = len(query_body.encode())
        with measurement.phase("tc_relay"):
            relayed = json.dumps(json.loads(query_body))
        replies = [
            measurement.owner(lambda index=index: self._owner_reply(index, relayed))
            for index in range(len(self.federation.owners))
        ]
        measurement.reply_bytes = len(replies[0].encode())
        measurement.reply_ciphertexts = self.federation.dimension + 1
        with measurement.phase("tc_aggregate"):
            sums: list[EncryptedNumber] | None = None
            for reply in replies:
                numbers = from_wire(json.loads(reply)["ciphertexts"], public_key)
                sums = numbers if sums is None else [a + b for a, b in zip(sums, numbers, strict=True)]
            aggregate_body = json.dumps(
                {
                    "round": 0,
                    "attempt": 1,
                    "data_owners": [f"owner-{i}" for i in range(len(replies))],
                    "ciphertexts": to_wire(sums, be_secure=False),
                }
            )
        with measurement.phase("mc_decrypt"):
            values = [private_key.decrypt(c) for c in from_wire(json.loads(aggregate_body)["ciphertexts"], public_key)]
        if values[0] != self.federation.total_rows:
            raise GradientMismatch(
                f"{self.name}: decrypted row count {values[0]}, expected {self.federation.total_rows}"
            )
        measurement.gradient = np.asarray(values[1:], dtype=np.float64)
        return measurement

    def _owner_reply(self, index: int, relayed: str) -> str:
        public_key = self.keys.phe_public
        weights = from_wire(json.loads(relayed)["encrypted_weights"], public_key)
        gradient = self.owner_gradient(index, weights)
        row_count = public_key.encrypt(self.federation.owners[index].row_count)
        return json.dumps(
            {
                "data_owner": f"owner-{index}",
                "attempt": 1,
                "key_fingerprint": self.fingerprint,
                "ciphertexts": to_wire([row_count, *gradient], be_secure=True),
            }
        )


class PheGramRound(PheRound):
    """The product's protocol (Gram matrix once per job) on phe's EncryptedNumber API."""

    name = "phe-gram"
    label = "phe-gram"

    def __init__(self, keys: KeyMaterial, federation: Federation) -> None:
        super().__init__(keys, federation)
        self.grams = [[[float(a) for a in row] for row in owner.gram] for owner in federation.owners]
        self.moments = [[float(b) for b in owner.moment] for owner in federation.owners]

    def owner_gradient(self, index: int, encrypted_weights: list[EncryptedNumber]) -> list[EncryptedNumber]:
        """E(A_i w − b_i): d² ciphertext-by-float products, one row of A_i per coordinate."""
        return [
            encrypted_sum(w * a for w, a in zip(encrypted_weights, row, strict=True)) - b
            for row, b in zip(self.grams[index], self.moments[index], strict=True)
        ]


class SeedStyleRound(PheRound):
    """The seed's per-sample gradient, Xᵀ(Xw − y), computed row by row on encrypted weights."""

    name = "seed-style"
    label = "seed-style"

    def __init__(self, keys: KeyMaterial, federation: Federation) -> None:
        super().__init__(keys, federation)
        self.rows = [[[float(x) for x in row] for row in owner.design] for owner in federation.owners]
        self.labels = [[float(y) for y in owner.labels] for owner in federation.owners]

    def owner_gradient(self, index: int, encrypted_weights: list[EncryptedNumber]) -> list[EncryptedNumber]:
        """E(r_i) = Σ_k x_ik·E(w_k) − y_i for every row i, then E(g_j) = Σ_i x_ij·E(r_i)."""
        rows = self.rows[index]
        residuals = [
            encrypted_sum(w * x for w, x in zip(encrypted_weights, row, strict=True)) - y
            for row, y in zip(rows, self.labels[index], strict=True)
        ]
        return [
            encrypted_sum(r * row[j] for r, row in zip(residuals, rows, strict=True))
            for j in range(self.federation.dimension)
        ]
