"""A data owner's differential privacy for the jobs it joins: the release of each, and its budget.

The owner's operator chooses the per-job (ε, δ) and the budget (data_owner/policy.py); this module
turns a join into a release (data_owner/release.py), charged to the ledger before anything made
from it can leave, and shows the ledger on the owner's status page. The model creator has no say
in the noise: it learns only the owner's declaration, signed into the owner's job key.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from common.crypto.identity import canonical
from common.protocol.errors import Refused
from common.protocol.messages import PrivacyCharge, PrivacyLedger
from common.protocol.spec import JobSpec
from data_owner.accounting import epsilon_of, rho_for
from data_owner.ledger import Ledger
from data_owner.policy import OwnerPolicy
from data_owner.release import NoisyRelease, exact_blocks


def spec_digest(spec: JobSpec) -> str:
    """SHA-256 of the job's spec: a release is for exactly one spec, columns and bounds included."""
    stated = {"purpose": "federated_trainer/job-spec/v1", "spec": spec.model_dump(mode="json")}
    return hashlib.sha256(canonical(stated)).hexdigest()


class PrivacyGuard:
    """Draws, charges and stores each job's release; refuses jobs beyond the budget."""

    def __init__(self, policy: OwnerPolicy, ledger: Ledger) -> None:
        assert policy.dp_epsilon is not None and policy.dp_delta is not None and policy.privacy_budget is not None
        self.policy = policy
        self.ledger = ledger
        self.epsilon = policy.dp_epsilon
        self.delta = policy.dp_delta
        self.budget = policy.privacy_budget
        self.job_rho = rho_for(self.epsilon, self.delta)
        self.budget_rho = rho_for(self.budget, self.delta)

    def release(
        self, spec: JobSpec, key_fingerprint: str, features: npt.NDArray[np.float64], labels: npt.NDArray[np.float64]
    ) -> NoisyRelease:
        """The job's release: the stored one if the job was joined before, else a new, charged one.

        Raises
        ------
        Refused
            ``policy:bounds`` when the job declares no bounds for a column to clip,
            ``policy:budget`` when a new release would exceed the budget.
        """
        exact = exact_blocks(spec, features, labels)

        def draw() -> tuple[float, float, float, dict[str, object]]:
            drawn = NoisyRelease.draw(exact, self.job_rho, self.epsilon, self.delta)
            return self.epsilon, self.delta, drawn.declaration.rho, drawn.to_json()

        stored = self.ledger.release(spec.job_id, spec_digest(spec), key_fingerprint, self.budget_rho, draw)
        if stored is None:
            spent = self.spent_rho()
            raise Refused(
                "policy:budget",
                detail=f"a job costs ε = {self.epsilon:g}; ε = {epsilon_of(spent, self.delta):.4g} of the budget"
                f" {self.budget:g} is spent (δ = {self.delta:g})",
            )
        return NoisyRelease.from_json(stored[0])

    def spent_rho(self) -> float:
        return sum(float(charge["rho"]) for charge in self.ledger.charges())

    def status(self) -> PrivacyLedger:
        """The ledger as the owner's operator sees it: every charge, what is spent and what is left."""
        charges = self.ledger.charges()
        spent = sum(float(charge["rho"]) for charge in charges)
        spent_epsilon = epsilon_of(spent, self.delta)
        return PrivacyLedger(
            epsilon_per_job=self.epsilon,
            delta=self.delta,
            budget_epsilon=self.budget,
            rho_per_job=self.job_rho,
            budget_rho=self.budget_rho,
            spent_rho=spent,
            spent_epsilon=spent_epsilon,
            remaining_epsilon=max(0.0, self.budget - spent_epsilon),
            jobs_remaining=int(max(0.0, self.budget_rho - spent) // self.job_rho),
            charges=[PrivacyCharge.model_validate(charge) for charge in charges],
        )
