"""The same round with no encryption at all: the floor for everything that is not cryptography.

Each owner computes A_i w − b_i with numpy from the statistics it precomputed once per job; the
messages are JSON lists of floats; the coordinator sums them. Never used by the product.
"""

from __future__ import annotations

import json

import numpy as np

from bench.federation import Federation, GradientMismatch, KeyMaterial
from bench.timing import RoundMeasurement


class PlaintextRound:
    name = "plaintext"
    label = "plaintext"

    def __init__(self, keys: KeyMaterial, federation: Federation) -> None:
        self.federation = federation
        self.grams = [owner.gram for owner in federation.owners]
        self.moments = [owner.moment for owner in federation.owners]

    def refill(self) -> None:
        """Nothing to prepare between rounds."""

    def close(self) -> None:
        """Nothing to release."""

    def run_round(self) -> RoundMeasurement:
        measurement = RoundMeasurement(gradient=np.zeros(0))
        with measurement.phase("mc_encrypt"):
            query_body = json.dumps({"round": 0, "attempt": 1, "weights": list(self.federation.weights)})
        measurement.query_bytes = len(query_body.encode())
        with measurement.phase("tc_relay"):
            relayed = json.dumps(json.loads(query_body))
        replies = [
            measurement.owner(lambda index=index: self._owner_reply(index, relayed)) for index in range(len(self.grams))
        ]
        measurement.reply_bytes = len(replies[0].encode())
        with measurement.phase("tc_aggregate"):
            total_rows = 0
            gradient = np.zeros(self.federation.dimension)
            for reply in replies:
                body = json.loads(reply)
                total_rows += body["row_count"]
                gradient += np.asarray(body["gradient"])
            aggregate_body = json.dumps({"round": 0, "row_count": total_rows, "gradient": gradient.tolist()})
        with measurement.phase("mc_decrypt"):
            body = json.loads(aggregate_body)
            measurement.gradient = np.asarray(body["gradient"])
        if body["row_count"] != self.federation.total_rows:
            raise GradientMismatch(f"plaintext: row count {body['row_count']}, expected {self.federation.total_rows}")
        return measurement

    def _owner_reply(self, index: int, relayed: str) -> str:
        weights = np.asarray(json.loads(relayed)["weights"])
        gradient = self.grams[index] @ weights - self.moments[index]
        return json.dumps(
            {
                "data_owner": f"owner-{index}",
                "attempt": 1,
                "row_count": self.federation.owners[index].row_count,
                "gradient": gradient.tolist(),
            }
        )
