"""A data owner's privacy policy and the checks it makes before it computes anything.

PROTOCOL.md sections 2, 7 and 9: an owner's rows are protected by what the owner itself checks,
not by trusting the coordinator or the model creator. Every check here is a pure function from
(policy, job, round, member set, what the owner remembers) to nothing or a :class:`Refused` with
a fixed code; the owner's services call them and persist what they record.

======================  ==========================================================================
code                    refused when
======================  ==========================================================================
policy:key              the job's key is not the model creator key this owner trusts (pinned by
                        its operator, or trusted on first use)
policy:key_size         the key is smaller than 2048 bits (unless the test-only flag allows it)
policy:model            the policy names the models it serves and the job's is not one
policy:columns          the job reads a column the policy does not publish
policy:max_weight_bits  the weights may be wider than the policy allows (wide weights let a model
                        creator read several statistics from one coordinate)
policy:max_rounds       the job asks for more rounds than the policy allows: a round number beyond
                        it, or more distinct round requests (the ledger counts them, so attempts
                        with other weights under one round number count too)
policy:min_peers        a round's member set has fewer owners than the policy's ``min_peers``
policy:members          the member set does not include this owner, or repeats a name
policy:differencing     the member set differs from one this owner already served under the same
                        key by fewer than ``min_peers`` owners, so subtracting the two sums would
                        isolate fewer than ``min_peers`` owners' statistics
policy:bounds           the owner protects its rows with differential privacy and the job declares
                        no bounds for a column it must clip
policy:budget           the job's privacy cost would take the owner past its privacy budget
======================  ==========================================================================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.crypto.paillier import PublicKey
from common.protocol.errors import Refused
from common.protocol.spec import MAX_DATA_OWNERS, ColumnName, Fingerprint, JobSpec, ModelName

logger = logging.getLogger(__name__)

POLICY_FILE = "policy.json"
SECURE_KEY_BITS = 2048
TEST_KEY_BITS = 1024


class OwnerPolicy(BaseModel):
    """What a data owner allows a job to ask of it; set by its operator.

    ``min_peers`` counts the owner itself. With 1 (the default, so that the seed's single-owner
    flow trains) the model creator can read this owner's statistics; the owner warns at start-up.

    ``dp_epsilon``, ``dp_delta`` and ``privacy_budget`` go together: every job this owner joins
    then costs it (``dp_epsilon``, ``dp_delta``)-DP (data_owner/release.py), and the jobs together
    may cost at most (``privacy_budget``, ``dp_delta``), composed in zCDP (data_owner/accounting.py).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_peers: Annotated[int, Field(ge=1, le=MAX_DATA_OWNERS)] = 1
    max_rounds: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    max_weight_bits: Annotated[int, Field(ge=2, le=512)] = 64
    allow_columns: frozenset[ColumnName] | None = None
    allow_models: frozenset[ModelName] | None = None
    model_creator_key: Fingerprint | None = None
    test_only_small_keys: bool = False
    dp_epsilon: Annotated[float, Field(ge=1e-3, le=1e3)] | None = None
    dp_delta: Annotated[float, Field(ge=1e-15, le=0.1)] | None = None
    privacy_budget: Annotated[float, Field(ge=1e-3, le=1e4)] | None = None

    @model_validator(mode="after")
    def _privacy_settings_together(self) -> OwnerPolicy:
        given = {
            "dp_epsilon": self.dp_epsilon,
            "dp_delta": self.dp_delta,
            "privacy_budget": self.privacy_budget,
        }
        if any(v is not None for v in given.values()):
            missing = [name for name, value in given.items() if value is None]
            if missing:
                raise ValueError(
                    f"differential privacy needs dp_epsilon, dp_delta and privacy_budget; {', '.join(missing)} missing"
                )
            assert self.privacy_budget is not None and self.dp_epsilon is not None
            if self.privacy_budget < self.dp_epsilon:
                raise ValueError(
                    f"privacy_budget {self.privacy_budget:g} is smaller than one job's dp_epsilon {self.dp_epsilon:g}"
                )
        return self

    @property
    def private(self) -> bool:
        """Whether this owner protects its rows with differential privacy."""
        return self.dp_epsilon is not None

    @classmethod
    def load(cls, state_dir: Path, overrides: dict[str, object]) -> OwnerPolicy:
        """The policy file in the state dir (if any), overridden by the command line's settings.

        Raises
        ------
        ValueError
            Naming the file and the field, when the file is not a valid policy.
        """
        path = state_dir / POLICY_FILE
        stored: dict[str, object] = {}
        if path.exists():
            try:
                loaded = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"{path}: not a readable JSON policy ({exc})") from None
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: expected a JSON object of policy fields")
            stored = loaded
        try:
            return cls.model_validate({**stored, **overrides})
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            field = ".".join(str(part) for part in error["loc"]) or "policy"
            top = str(error["loc"][0]) if error["loc"] else ""
            source = path if top in stored and top not in overrides else "policy"
            raise ValueError(f"{source}: {field}: {error['msg']}") from None

    @property
    def min_key_bits(self) -> int:
        return TEST_KEY_BITS if self.test_only_small_keys else SECURE_KEY_BITS


def policy_warnings(policy: OwnerPolicy) -> list[str]:
    """What the operator should know about a policy that protects less than it could."""
    warnings = []
    if policy.min_peers == 1:
        warnings.append(
            "min_peers is 1: the model creator can read this owner's statistics from a round it is alone in;"
            " set --min-peers 2 or more"
        )
    if policy.model_creator_key is None:
        warnings.append("no model creator key is pinned: the first one seen is trusted (--model-creator-key)")
    if policy.test_only_small_keys:
        warnings.append("keys under 2048 bits are accepted (test-only flag): never use this with real data")
    return warnings


def check_key(policy: OwnerPolicy, public_key: PublicKey, trusted: str | None) -> None:
    """Refuse a key smaller than the policy allows, or other than the one this owner trusts.

    ``trusted`` is the pinned fingerprint, or the one trusted on first use (``None``: none yet,
    the caller will trust this one).
    """
    if public_key.bits < policy.min_key_bits:
        raise Refused(
            "policy:key_size",
            detail=f"key {public_key.fingerprint} has {public_key.bits} bits, fewer than {policy.min_key_bits}",
        )
    if trusted is not None and public_key.fingerprint != trusted:
        raise Refused(
            "policy:key",
            detail=f"the job's key {public_key.fingerprint} is not the trusted model creator key {trusted}",
        )


def check_job(policy: OwnerPolicy, spec: JobSpec) -> None:
    """Refuse a job whose model, columns or weight width the policy does not allow."""
    if policy.allow_models is not None and spec.model not in policy.allow_models:
        raise Refused("policy:model", detail=f"model {spec.model} is not among {sorted(policy.allow_models)}")
    if policy.allow_columns is not None:
        for column in (*spec.features, spec.label):
            if column not in policy.allow_columns:
                raise Refused("policy:columns", column, f"column {column!r} is not published by the policy")
    weight_bits = spec.weight_bits + spec.weight_frac_bits
    if weight_bits > policy.max_weight_bits:
        raise Refused(
            "policy:max_weight_bits",
            detail=f"weights of {weight_bits} bits asked, the policy allows {policy.max_weight_bits}",
        )


def check_round(policy: OwnerPolicy, round_number: int) -> None:
    """Refuse a round beyond the policy's ``max_rounds`` (rounds count from 0)."""
    if round_number >= policy.max_rounds:
        raise Refused("policy:max_rounds", detail=f"round {round_number} asked, the policy allows {policy.max_rounds}")


def check_members(
    policy: OwnerPolicy, own_name: str, members: Collection[str], served: Iterable[frozenset[str]]
) -> frozenset[str]:
    """The member set of a round, if this owner may contribute to a sum over it.

    ``served`` are the member sets this owner already contributed to under the same model creator
    key (its ledger). Two sums over sets that differ by fewer than ``min_peers`` owners would,
    subtracted, isolate fewer than ``min_peers`` owners' statistics — whatever rounds or jobs they
    came from, since the statistics are the same in every job on the same columns.
    """
    member_set = frozenset(members)
    if len(member_set) != len(members) or own_name not in member_set:
        raise Refused("policy:members", detail=f"member list {sorted(members)} repeats a name or lacks {own_name}")
    if len(member_set) < policy.min_peers:
        raise Refused(
            "policy:min_peers",
            detail=f"{len(member_set)} member(s) {sorted(member_set)}, the policy needs {policy.min_peers}",
        )
    for earlier in served:
        difference = len(member_set ^ earlier)
        if 0 < difference < policy.min_peers:
            raise Refused(
                "policy:differencing",
                detail=f"members {sorted(member_set)} differ by {difference} from {sorted(earlier)}, served before",
            )
    return member_set
