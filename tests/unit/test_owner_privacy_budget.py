"""A data owner's privacy budget (data_owner/privacy.py over data_owner/ledger.py).

The charge and the stored release are one durable transaction: they survive a reopen of the
ledger (an owner restart), a job joined again gets its stored release back uncharged, a job past
the budget is refused with ``policy:budget`` and leaves nothing behind, and two joins at once
cannot both spend the last of the budget.
"""

from __future__ import annotations

import json
import threading

import pytest
from support import DIABETES_FEATURES, DIABETES_LABEL, SHIPPED

from common.dataset import load_columns
from common.protocol.errors import Refused
from common.protocol.spec import JobSpec
from data_owner.accounting import epsilon_of, rho_for
from data_owner.ledger import Ledger
from data_owner.policy import OwnerPolicy
from data_owner.privacy import PrivacyGuard

BOUNDS = json.loads((SHIPPED / "dp_job.json").read_text())["bounds"]
# A budget of 1.6 at δ = 1e-5 admits exactly two jobs of ε = 1 (their ρ add up).
POLICY = OwnerPolicy(dp_epsilon=1.0, dp_delta=1e-5, privacy_budget=1.6)


@pytest.fixture(scope="module")
def shipped():
    return load_columns(SHIPPED / "owner_a.csv", DIABETES_FEATURES, DIABETES_LABEL)


def spec(key, job_id, bounds=BOUNDS):
    return JobSpec.for_bounds(job_id, "linear_regression", DIABETES_FEATURES, DIABETES_LABEL, key.public_key,
                              data_bits=48, data_frac_bits=32, weight_bits=16, weight_frac_bits=32,
                              max_contributors=100, bounds=bounds)


def test_the_budget_admits_its_jobs_refuses_the_next_and_survives_a_restart(tmp_path, small_key, shipped):
    path = tmp_path / "ledger.sqlite3"
    guard = PrivacyGuard(POLICY, Ledger(path))
    assert guard.status().jobs_remaining == 2
    first = guard.release(spec(small_key, "job-1"), small_key.public_key.fingerprint, *shipped)

    restarted = PrivacyGuard(POLICY, Ledger(path))
    # The same job joined again after the restart: the very same noise, and no second charge.
    assert restarted.release(spec(small_key, "job-1"), small_key.public_key.fingerprint, *shipped) == first
    assert restarted.status().jobs_remaining == 1
    second = restarted.release(spec(small_key, "job-2"), small_key.public_key.fingerprint, *shipped)
    assert second.blocks != first.blocks
    with pytest.raises(Refused) as refused:
        restarted.release(spec(small_key, "job-3"), small_key.public_key.fingerprint, *shipped)
    assert refused.value.code == "policy:budget" and refused.value.column is None
    assert "1.46" in refused.value.detail and "1.6" in refused.value.detail

    status = PrivacyGuard(POLICY, Ledger(path)).status()
    assert [charge.job_id for charge in status.charges] == ["job-1", "job-2"]
    assert all(charge.key_fingerprint == small_key.public_key.fingerprint for charge in status.charges)
    assert all((charge.epsilon, charge.delta) == (1.0, 1e-5) for charge in status.charges)
    assert status.spent_rho == pytest.approx(2 * rho_for(1.0, 1e-5), rel=1e-9)
    assert status.spent_epsilon == pytest.approx(epsilon_of(2 * rho_for(1.0, 1e-5), 1e-5))
    assert status.remaining_epsilon == pytest.approx(1.6 - status.spent_epsilon)
    assert status.jobs_remaining == 0


def test_another_spec_under_the_same_job_id_is_a_new_release_and_a_new_charge(tmp_path, small_key, shipped):
    guard = PrivacyGuard(POLICY, Ledger(tmp_path / "ledger.sqlite3"))
    first = guard.release(spec(small_key, "job-1"), small_key.public_key.fingerprint, *shipped)
    wider = {**BOUNDS, "age": [0.0, 120.0]}
    other = guard.release(spec(small_key, "job-1", wider), small_key.public_key.fingerprint, *shipped)
    assert other.blocks != first.blocks
    assert guard.status().jobs_remaining == 0


def test_a_refused_job_leaves_no_charge(tmp_path, small_key, shipped):
    guard = PrivacyGuard(POLICY, Ledger(tmp_path / "ledger.sqlite3"))
    with pytest.raises(Refused) as refused:
        guard.release(spec(small_key, "job-1", {k: v for k, v in BOUNDS.items() if k != "bmi"}),
                      small_key.public_key.fingerprint, *shipped)
    assert (refused.value.code, refused.value.column) == ("policy:bounds", "bmi")
    assert guard.status().charges == [] and guard.status().jobs_remaining == 2


def test_joins_at_once_never_spend_more_than_the_budget(tmp_path, small_key, shipped):
    path = tmp_path / "ledger.sqlite3"
    guards = [PrivacyGuard(POLICY, Ledger(path)) for _ in range(6)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(guards))

    def join(index: int) -> None:
        barrier.wait()
        try:
            guards[index].release(spec(small_key, f"job-{index}"), small_key.public_key.fingerprint, *shipped)
            outcomes.append("joined")
        except Refused as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=join, args=(i,)) for i in range(len(guards))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["joined"] * 2 + ["policy:budget"] * 4
    assert len(guards[0].status().charges) == 2


@pytest.mark.parametrize("fields, missing", [
    ({"dp_epsilon": 1.0}, "dp_delta, privacy_budget"),
    ({"dp_epsilon": 1.0, "dp_delta": 1e-5}, "privacy_budget"),
    ({"privacy_budget": 3.0}, "dp_epsilon, dp_delta"),
])
def test_the_privacy_settings_go_together(fields, missing):
    with pytest.raises(ValueError, match=f"{missing} missing"):
        OwnerPolicy(**fields)


def test_a_budget_smaller_than_one_job_is_refused():
    with pytest.raises(ValueError, match="smaller than one job"):
        OwnerPolicy(dp_epsilon=2.0, dp_delta=1e-5, privacy_budget=1.0)
