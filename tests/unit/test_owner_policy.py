"""A data owner's privacy policy (data_owner/policy.py), without HTTP or a ledger.

Each check accepts what the policy allows and refuses the rest with its fixed code; the policy
file is read with the command line over it, and a bad one is refused naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.crypto.packing import SlotLayout
from common.protocol.errors import REFUSAL_CODES, Refused
from common.protocol.spec import JobSpec
from data_owner.policy import (
    POLICY_FILE,
    OwnerPolicy,
    check_job,
    check_key,
    check_members,
    check_round,
    policy_warnings,
)

SPEC_FEATURES = ("age", "sex", "bmi")


def spec_for(key, *, model: str = "linear_regression", features=SPEC_FEATURES, label: str = "progression",
             weight_bits: int = 8, weight_frac_bits: int = 32) -> JobSpec:
    return JobSpec(job_id="job-1", model=model, features=features, label=label, data_frac_bits=32,
                   weight_frac_bits=weight_frac_bits, weight_bits=weight_bits,
                   layout=SlotLayout.for_key(key.public_key.bits, 200, 1000), min_data_owners=1,
                   key_fingerprint=key.public_key.fingerprint)


def refused(code: str, call, *args) -> Refused:
    """The refusal ``call(*args)`` raises: its code is ``code`` and one of the known codes."""
    with pytest.raises(Refused) as info:
        call(*args)
    assert info.value.code == code and code in REFUSAL_CODES
    assert info.value.message.startswith(code)
    return info.value


# --- the policy itself --------------------------------------------------------------------------


def test_the_default_policy_serves_the_single_owner_flow_and_says_what_it_risks():
    policy = OwnerPolicy()
    assert (policy.min_peers, policy.max_rounds, policy.max_weight_bits) == (1, 1000, 64)
    assert policy.allow_columns is None and policy.allow_models is None and policy.model_creator_key is None
    assert policy.min_key_bits == 2048
    warnings = policy_warnings(policy)
    assert any("min_peers is 1" in warning for warning in warnings)
    assert any("--model-creator-key" in warning for warning in warnings)
    assert not any("test-only" in warning for warning in warnings)


def test_a_stricter_policy_warns_only_of_the_test_only_flag(small_key):
    policy = OwnerPolicy(min_peers=3, model_creator_key=small_key.public_key.fingerprint, test_only_small_keys=True)
    assert policy.min_key_bits == 1024
    (warning,) = policy_warnings(policy)
    assert "test-only" in warning


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"min_peers": 0}, id="min-peers-zero"),
        pytest.param({"min_peers": 10**6}, id="min-peers-beyond-any-round"),
        pytest.param({"max_rounds": 0}, id="max-rounds-zero"),
        pytest.param({"max_weight_bits": 1}, id="max-weight-bits-one"),
        pytest.param({"max_weight_bits": 513}, id="max-weight-bits-too-many"),
        pytest.param({"allow_columns": [""]}, id="empty-column-name"),
        pytest.param({"allow_models": ["svm"]}, id="unknown-model"),
        pytest.param({"model_creator_key": "AB" * 32}, id="fingerprint-not-lower-hex"),
        pytest.param({"model_creator_key": "ab"}, id="fingerprint-too-short"),
        pytest.param({"min_peer": 2}, id="unknown-field"),
    ],
)
def test_a_policy_out_of_its_limits_is_not_a_policy(fields):
    with pytest.raises(ValidationError):
        OwnerPolicy.model_validate(fields)


def test_a_policy_cannot_change_once_made():
    policy = OwnerPolicy()
    with pytest.raises(ValidationError):
        policy.min_peers = 5  # type: ignore[misc]


# --- the policy file ----------------------------------------------------------------------------


def test_without_a_policy_file_the_overrides_and_defaults_apply(tmp_path):
    assert OwnerPolicy.load(tmp_path, {}) == OwnerPolicy()
    assert OwnerPolicy.load(tmp_path, {"min_peers": 3}).min_peers == 3


def test_the_policy_file_is_read_and_the_command_line_wins(tmp_path):
    (tmp_path / POLICY_FILE).write_text(json.dumps({"min_peers": 2, "max_rounds": 50, "allow_columns": ["age", "bmi"]}))
    policy = OwnerPolicy.load(tmp_path, {"max_rounds": 10})
    assert policy.min_peers == 2 and policy.max_rounds == 10 and policy.allow_columns == frozenset({"age", "bmi"})


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param("{not json", "not a readable JSON policy", id="bad-json"),
        pytest.param("", "not a readable JSON policy", id="empty-file"),
        pytest.param("[2]", "expected a JSON object", id="not-an-object"),
        pytest.param('"min_peers"', "expected a JSON object", id="a-string"),
        pytest.param('{"min_peers": 0}', "min_peers: Input should be greater than or equal to 1", id="field-too-small"),
        pytest.param('{"max_rounds": "many"}', "max_rounds", id="field-not-a-number"),
        pytest.param('{"allow_columns": ["age", ""]}', "allow_columns.1", id="bad-item-of-a-field"),
        pytest.param('{"model_creator_key": "not-a-fingerprint"}', "model_creator_key", id="bad-fingerprint"),
        pytest.param('{"min_peer": 2}', "min_peer: Extra inputs are not permitted", id="unknown-field"),
    ],
)
def test_a_bad_policy_file_is_refused_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / POLICY_FILE
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        OwnerPolicy.load(tmp_path, {})
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)


def test_a_bad_override_is_not_blamed_on_the_file(tmp_path):
    path = tmp_path / POLICY_FILE
    path.write_text(json.dumps({"min_peers": 2}))
    with pytest.raises(ValueError) as info:
        OwnerPolicy.load(tmp_path, {"min_peers": 0})
    assert str(info.value).startswith("policy: min_peers") and str(path) not in str(info.value)


def test_an_unreadable_policy_file_is_refused_naming_it(tmp_path):
    (tmp_path / POLICY_FILE).mkdir()
    with pytest.raises(ValueError) as info:
        OwnerPolicy.load(tmp_path, {})
    assert str(tmp_path / POLICY_FILE) in str(info.value)


# --- the key ------------------------------------------------------------------------------------


def test_the_first_key_is_accepted_when_none_is_trusted_yet(small_key):
    check_key(OwnerPolicy(test_only_small_keys=True), small_key.public_key, None)


def test_the_trusted_key_is_accepted(small_key):
    check_key(OwnerPolicy(test_only_small_keys=True), small_key.public_key, small_key.public_key.fingerprint)


def test_another_key_than_the_trusted_one_is_refused_naming_both_to_the_owner_only(small_key, other_small_key):
    refusal = refused("policy:key", check_key, OwnerPolicy(test_only_small_keys=True), other_small_key.public_key,
                      small_key.public_key.fingerprint)
    assert refusal.message == "policy:key" and refusal.column is None
    assert small_key.public_key.fingerprint in refusal.detail
    assert other_small_key.public_key.fingerprint in refusal.detail


def test_a_small_key_is_refused_without_the_test_only_flag(small_key):
    refusal = refused("policy:key_size", check_key, OwnerPolicy(), small_key.public_key, None)
    assert "1024" in refusal.detail and "2048" in refusal.detail
    # Even the trusted key: the size is checked first.
    refused("policy:key_size", check_key, OwnerPolicy(), small_key.public_key, small_key.public_key.fingerprint)


def test_a_key_of_the_real_size_needs_no_flag(real_key):
    check_key(OwnerPolicy(), real_key.public_key, None)
    check_key(OwnerPolicy(), real_key.public_key, real_key.public_key.fingerprint)


# --- the job ------------------------------------------------------------------------------------


def test_a_job_within_the_default_policy_is_accepted(small_key):
    check_job(OwnerPolicy(), spec_for(small_key))


@pytest.mark.parametrize(("model", "allowed"), [("linear_regression", True), ("logistic_regression", True),
                                              ("ridge", False)])
def test_the_models_the_policy_allows(small_key, model, allowed):
    policy = OwnerPolicy(allow_models=frozenset({"linear_regression", "logistic_regression"}))
    if allowed:
        check_job(policy, spec_for(small_key, model=model))
    else:
        refused("policy:model", check_job, policy, spec_for(small_key, model=model))


def test_a_model_the_policy_does_not_allow_is_refused(small_key):
    policy = OwnerPolicy(allow_models=frozenset({"logistic_regression"}))
    refusal = refused("policy:model", check_job, policy, spec_for(small_key))
    assert refusal.message == "policy:model" and "linear_regression" in refusal.detail


def test_columns_the_policy_publishes_are_accepted(small_key):
    check_job(OwnerPolicy(allow_columns=frozenset({*SPEC_FEATURES, "progression", "bp"})), spec_for(small_key))


@pytest.mark.parametrize(
    ("features", "label", "column"),
    [
        pytest.param(SPEC_FEATURES, "progression", "bmi", id="a-feature"),
        pytest.param(("age", "sex"), "bmi", "bmi", id="the-label"),
    ],
)
def test_a_column_the_policy_does_not_publish_is_refused_naming_it(small_key, features, label, column):
    policy = OwnerPolicy(allow_columns=frozenset({"age", "sex", "progression"}))
    refusal = refused("policy:columns", check_job, policy, spec_for(small_key, features=features, label=label))
    assert refusal.column == column and refusal.message == f"policy:columns (column '{column}')"


@pytest.mark.parametrize(("weight_bits", "weight_frac_bits"), [(32, 32), (8, 56), (1, 63)])
def test_weights_up_to_max_weight_bits_are_accepted(small_key, weight_bits, weight_frac_bits):
    check_job(OwnerPolicy(), spec_for(small_key, weight_bits=weight_bits, weight_frac_bits=weight_frac_bits))


@pytest.mark.parametrize(("weight_bits", "weight_frac_bits"), [(33, 32), (8, 57), (40, 32)])
def test_weights_wider_than_max_weight_bits_are_refused(small_key, weight_bits, weight_frac_bits):
    spec = spec_for(small_key, weight_bits=weight_bits, weight_frac_bits=weight_frac_bits)
    refusal = refused("policy:max_weight_bits", check_job, OwnerPolicy(), spec)
    assert str(weight_bits + weight_frac_bits) in refusal.detail and refusal.message == "policy:max_weight_bits"


def test_max_weight_bits_is_the_policys(small_key):
    check_job(OwnerPolicy(max_weight_bits=40), spec_for(small_key))
    refused("policy:max_weight_bits", check_job, OwnerPolicy(max_weight_bits=39), spec_for(small_key))


# --- the round ----------------------------------------------------------------------------------


def test_rounds_below_max_rounds_are_accepted():
    for round_number in (0, 1, 9):
        check_round(OwnerPolicy(max_rounds=10), round_number)


@pytest.mark.parametrize("round_number", [10, 11, 10**6])
def test_rounds_from_max_rounds_on_are_refused(round_number):
    refusal = refused("policy:max_rounds", check_round, OwnerPolicy(max_rounds=10), round_number)
    assert str(round_number) in refusal.detail and refusal.message == "policy:max_rounds"


# --- the member set -----------------------------------------------------------------------------


def test_a_member_set_with_this_owner_is_accepted_and_returned():
    assert check_members(OwnerPolicy(), "a", ["a"], []) == frozenset({"a"})
    assert check_members(OwnerPolicy(min_peers=3), "b", ["c", "a", "b"], []) == frozenset({"a", "b", "c"})


@pytest.mark.parametrize(
    "members",
    [
        pytest.param(["b", "c"], id="without-this-owner"),
        pytest.param(["a", "b", "b"], id="a-peer-twice"),
        pytest.param(["a", "a", "b"], id="this-owner-twice"),
    ],
)
def test_a_member_set_without_this_owner_or_with_a_name_twice_is_refused(members):
    refused("policy:members", check_members, OwnerPolicy(), "a", members, [])


@pytest.mark.parametrize(("min_peers", "members"), [(2, ["a"]), (3, ["a", "b"]), (5, ["a", "b", "c", "d"])])
def test_a_member_set_smaller_than_min_peers_is_refused(min_peers, members):
    refusal = refused("policy:min_peers", check_members, OwnerPolicy(min_peers=min_peers), "a", members, [])
    assert refusal.message == "policy:min_peers" and str(min_peers) in refusal.detail


@pytest.mark.parametrize(("min_peers", "members"), [(2, ["a", "b"]), (3, ["a", "b", "c"]), (3, list("abcdef"))])
def test_a_member_set_of_min_peers_or_more_is_accepted(min_peers, members):
    assert check_members(OwnerPolicy(min_peers=min_peers), "a", members, []) == frozenset(members)


SERVED = frozenset("abcde")


@pytest.mark.parametrize(
    ("members", "difference"),
    [
        pytest.param("abcde", 0, id="the-same-set"),
        pytest.param("edcba", 0, id="the-same-set-in-another-order"),
        pytest.param("abc", 2, id="two-fewer"),
        pytest.param("abcdefg", 2, id="two-more"),
        pytest.param("abcfg", 4, id="two-swapped"),
        pytest.param("afghi", 8, id="mostly-others"),
    ],
)
def test_member_sets_that_differ_by_none_or_by_min_peers_or_more_are_accepted(members, difference):
    assert len(frozenset(members) ^ SERVED) == difference
    policy = OwnerPolicy(min_peers=2)
    assert check_members(policy, "a", list(members), [SERVED]) == frozenset(members)


@pytest.mark.parametrize(
    ("min_peers", "members"),
    [
        pytest.param(2, "abcd", id="one-fewer"),
        pytest.param(2, "abcdef", id="one-more"),
        pytest.param(3, "abcd", id="one-fewer-of-three"),
        pytest.param(3, "abc", id="two-fewer-of-three"),
        pytest.param(3, "abcdeg", id="one-more-of-three"),
        pytest.param(4, "abcdfg", id="one-swapped-for-two-of-four"),
        pytest.param(4, "abcdf", id="one-swapped-of-four"),
    ],
)
def test_member_sets_that_differ_by_fewer_than_min_peers_are_refused(min_peers, members):
    difference = len(frozenset(members) ^ SERVED)
    assert 0 < difference < min_peers
    refusal = refused("policy:differencing", check_members, OwnerPolicy(min_peers=min_peers), "a", list(members),
                      [SERVED])
    assert refusal.message == "policy:differencing" and f"differ by {difference}" in refusal.detail


@pytest.mark.parametrize(("min_peers", "members"), [(3, "abcdefgh"), (3, "abcfg"), (4, "abcfg"), (4, "abfg")])
def test_member_sets_that_differ_by_min_peers_or_more_are_accepted(min_peers, members):
    assert len(frozenset(members) ^ SERVED) >= min_peers
    assert check_members(OwnerPolicy(min_peers=min_peers), "a", list(members), [SERVED]) == frozenset(members)


def test_every_served_set_is_compared():
    served = [frozenset("abc"), frozenset("abcdefg"), frozenset("xyza")]
    policy = OwnerPolicy(min_peers=2)
    refused("policy:differencing", check_members, policy, "a", list("xyzab"), served)
    refused("policy:differencing", check_members, policy, "a", list("abcdefgh"), served)
    assert check_members(policy, "a", list("abcde"), served) == frozenset("abcde")


def test_with_min_peers_1_any_set_with_this_owner_is_accepted():
    served = [frozenset("a"), frozenset("ab"), frozenset("abc")]
    for members in ("a", "ab", "abc", "abcd"):
        assert check_members(OwnerPolicy(), "a", list(members), served) == frozenset(members)


def test_the_size_is_checked_before_the_differences():
    refused("policy:min_peers", check_members, OwnerPolicy(min_peers=3), "a", ["a", "b"], [frozenset("abc")])


def test_refusals_name_no_member_to_others():
    refusal = refused("policy:differencing", check_members, OwnerPolicy(min_peers=2), "a", ["a", "b"],
                      [frozenset("abc")])
    assert refusal.message == "policy:differencing" and "'c'" in refusal.detail


def test_the_policy_fields_are_the_command_lines(tmp_path: Path):
    """Each field has its flag in ``python -m data_owner`` (and so is settable by the operator)."""
    from data_owner.__main__ import policy_options

    class Args:
        model_creator_key = "ab" * 32
        min_peers = 2
        max_rounds = 5
        max_weight_bits = 48
        allow_columns = " age, bmi ,"
        allow_models = "linear_regression"
        test_only_small_keys = True
        dp_epsilon = 1.0
        dp_delta = 1e-5
        privacy_budget = 3.0

    options = policy_options(Args())  # type: ignore[arg-type]
    assert sorted(options) == sorted(OwnerPolicy.model_fields)
    policy = OwnerPolicy.load(tmp_path, options)
    assert policy.allow_columns == frozenset({"age", "bmi"}) and policy.allow_models == frozenset({"linear_regression"})
