"""The coordinator's round policy (coordinator/policy.py), without HTTP, threads or storage.

Who takes part, an attempt's member set, the rule that an attempt is aggregated only when every
member replied (the masks cancel over the whole member set only, PROTOCOL.md section 9), who is
left out of the next attempt, when a round fails and with what reason, what an owner's error
means, and aggregation: the slot-wise product of the replies' ciphertexts, which adds their
plaintexts.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.crypto.packing import SlotLayout
from common.protocol.errors import (
    BadRequest,
    Conflict,
    DataError,
    FederatedError,
    NotFound,
    PeerUnreachable,
    ProtocolViolation,
    Refused,
    SchemaError,
    StorageUnavailable,
    UpstreamError,
)
from common.protocol.spec import JobSpec
from coordinator.policy import Accept, Fail, Retry, RoundPolicy, aggregate, describe, refusal_reason, refuses_job

OWNER = "http://127.0.0.1:5001/jobs/job-1"


# --- who is asked -----------------------------------------------------------------------------


def test_every_registered_owner_takes_part():
    assert RoundPolicy(1, 1).participants(["b", "a", "c"], {}) == ["a", "b", "c"]


def test_owners_that_refused_the_job_do_not_take_part():
    refused = {"b": "refused the job: missing column 'bmi'"}
    assert RoundPolicy(1, 3).participants(["a", "b", "c"], refused) == ["a", "c"]


def test_nobody_takes_part_when_nobody_is_registered_or_everybody_refused():
    policy = RoundPolicy(1, 3)
    assert policy.participants([], {}) == []
    assert policy.participants(["a"], {"a": "refused the job: x"}) == []


def test_the_member_set_is_the_joined_participants_not_left_out_by_name():
    policy = RoundPolicy(1, 3)
    assert policy.member_set(["c", "a", "b", "d"], {"a", "b", "c"}, {}) == ["a", "b", "c"]
    assert policy.member_set(["a", "b", "c"], {"a", "b", "c"}, {"b": "no reply within 5 s"}) == ["a", "c"]
    assert policy.member_set(["a"], {"a", "z"}, {}) == ["a"]
    assert policy.member_set([], {"a"}, {}) == []


def test_a_member_set_smaller_than_the_quorum_is_not_asked():
    assert RoundPolicy(2, 1).quorate(["a", "b"])
    assert not RoundPolicy(2, 1).quorate(["a"])
    assert not RoundPolicy(1, 1).quorate([])
    assert not RoundPolicy(0, 1).quorate([])


def test_the_policy_of_a_job_takes_its_quorum_and_the_retries(small_key):
    spec = JobSpec(job_id="job-1", model="linear_regression", features=["age", "bmi"], label="progression",
                   data_frac_bits=32, weight_frac_bits=32, weight_bits=8,
                   layout=SlotLayout.for_key(small_key.public_key.bits, 136, 1000), min_data_owners=3,
                   key_fingerprint=small_key.public_key.fingerprint)
    assert RoundPolicy.for_job(spec, retries=2) == RoundPolicy(min_data_owners=3, attempts=3)
    assert RoundPolicy.for_job(spec, retries=0).attempts == 1


# --- every member, or no aggregate ------------------------------------------------------------


def test_every_member_replied_aggregates_the_member_set_and_keeps_the_others_failures():
    failures = {"b": "refused the job: x", "d": "could not join: connection refused"}
    decision = RoundPolicy(2, 3).decide(0, 1, ["a", "b", "c", "d"], ["c", "a"], ["c", "a"], failures)
    assert decision == Accept(contributors=("a", "c"), failures=failures)


def test_every_member_replied_on_the_last_attempt():
    decision = RoundPolicy(1, 2).decide(4, 2, ["a", "b"], ["b"], ["b"], {"a": "no reply within 5 s"})
    assert decision == Accept(contributors=("b",), failures={"a": "no reply within 5 s"})


def test_a_failure_of_a_member_that_replied_after_all_does_not_count():
    """A request timed out although the owner had accepted it, and its reply came: it contributed."""
    decision = RoundPolicy(2, 1).decide(0, 1, ["a", "b"], ["a", "b"], ["a", "b"], {"a": "read timed out"})
    assert decision == Accept(contributors=("a", "b"), failures={})


def test_one_member_missing_is_not_aggregated_however_many_replied():
    """Masks cancel only over the whole member set: a quorum of replies is not enough."""
    members = ["a", "b", "c", "d"]
    decision = RoundPolicy(2, 3).decide(0, 1, members, members, ["a", "b", "c"], {"d": "no reply within 5 s"})
    assert decision == Retry(
        "attempt 1: 3 of 4 member(s) replied, and every member's reply is needed; d: no reply within 5 s;"
        " replied: a, b, c",
        left_out={"d": "no reply within 5 s"},
    )


def test_the_members_that_failed_are_left_out_of_the_next_attempt_not_the_others():
    failures = {"b": "refused: policy:differencing", "c": "no reply within 5 s", "x": "refused the job: y"}
    decision = RoundPolicy(1, 3).decide(0, 2, ["a", "b", "c", "x"], ["a", "b", "c"], ["a"], failures)
    assert isinstance(decision, Retry)
    assert decision.left_out == {"b": "refused: policy:differencing", "c": "no reply within 5 s"}
    assert RoundPolicy(1, 3).member_set(["a", "b", "c"], {"a", "b", "c"}, decision.left_out) == ["a"]


def test_a_member_that_forgot_the_job_is_not_left_out():
    """It is joined again, and takes part in the next attempt with its new job key."""
    failures = {"b": "forgot the job (it is joined again before its next attempt): HTTP 404"}
    decision = RoundPolicy(1, 2).decide(0, 1, ["a", "b"], ["a", "b"], ["a"], failures, rejoining=["b"])
    assert isinstance(decision, Retry)
    assert decision.left_out == {}


def test_a_member_with_neither_reply_nor_failure_is_counted_as_no_reply():
    decision = RoundPolicy(1, 2).decide(0, 1, ["a", "b"], ["a", "b"], ["a"], {})
    assert isinstance(decision, Retry) and decision.left_out == {"b": "no reply"}


def test_replies_of_non_members_do_not_count():
    decision = RoundPolicy(1, 1).decide(0, 1, ["a", "b"], ["a"], ["b"], {"a": "no reply within 5 s"})
    assert isinstance(decision, Fail)
    assert decision.failures == {"a": "no reply within 5 s"}


def test_too_few_members_is_not_aggregated_even_if_all_replied():
    decision = RoundPolicy(3, 2).decide(0, 1, ["a", "b", "c"], ["a", "b"], ["a", "b"], {"c": "refused the job: x"})
    assert isinstance(decision, Retry)
    assert decision.reason == (
        "attempt 1: 2 member(s), fewer than the 3 required; a: not asked: too few members;"
        " b: not asked: too few members; c: refused the job: x"
    )
    # Nobody was asked, so nobody failed: the next attempt may still have them.
    assert decision.left_out == {}


def test_retries_exhausted_fail_the_round_naming_the_real_cause():
    failures = {"a": "no reply within 5 s", "b": "refused: missing_column (column 'bmi')"}
    decision = RoundPolicy(2, 3).decide(7, 3, ["a", "b"], ["a", "b"], [], failures)
    assert decision == Fail(
        "round 7: not aggregated in 3 attempt(s); last attempt: 0 of 2 member(s) replied, and every member's"
        " reply is needed; a: no reply within 5 s; b: refused: missing_column (column 'bmi')",
        failures,
    )
    assert "no data owner is registered" not in decision.reason


def test_a_failed_round_names_who_did_reply():
    decision = RoundPolicy(2, 1).decide(0, 1, ["a", "b", "c"], ["a", "b", "c"], ["a", "c"],
                                        {"b": "refused: internal"})
    assert isinstance(decision, Fail)
    assert decision.reason == (
        "round 0: not aggregated in 1 attempt(s); last attempt: 2 of 3 member(s) replied, and every member's"
        " reply is needed; b: refused: internal; replied: a, c"
    )
    assert decision.failures == {"b": "refused: internal"}


def test_failures_of_earlier_attempts_stay_in_the_record():
    left_out = {"c": "no reply within 5 s"}
    decision = RoundPolicy(1, 2).decide(0, 2, ["a", "b", "c"], ["a", "b"], ["a", "b"], left_out)
    assert decision == Accept(("a", "b"), {"c": "no reply within 5 s"})


def test_registered_owners_all_members_but_too_few_are_not_called_unregistered():
    decision = RoundPolicy(2, 1).decide(0, 1, ["a"], ["a"], [], {})
    assert isinstance(decision, Fail)
    assert "no data owner is registered" not in decision.reason
    assert decision.reason.endswith(
        "last attempt: 1 member(s), fewer than the 2 required; a: not asked: too few members"
    )


def test_no_registered_owner_fails_saying_so():
    decision = RoundPolicy(1, 1).decide(0, 1, [], [], [], {})
    assert decision == Fail(
        "round 0: not aggregated in 1 attempt(s); last attempt: 0 member(s), fewer than the 1 required;"
        " no data owner is registered with the coordinator",
        {},
    )


@pytest.mark.parametrize(("attempt", "attempts", "expected"), [(1, 1, Fail), (1, 2, Retry), (2, 2, Fail),
                                                               (2, 3, Retry), (3, 3, Fail)])
def test_a_round_is_retried_until_its_attempts_are_used(attempt, attempts, expected):
    assert isinstance(RoundPolicy(1, attempts).decide(0, attempt, ["a"], ["a"], [], {"a": "x"}), expected)


def test_describe():
    assert describe([], [], {}) == "no data owner is registered with the coordinator"
    assert describe(["a", "b"], ["b"], {"a": "x"}) == "a: x; replied: b"
    assert describe(["a", "b"], [], {"b": "y", "a": "x"}) == "a: x; b: y"


@pytest.mark.parametrize(("code", "column", "reason"), [
    ("policy:min_peers", None, "refused: policy:min_peers"),
    ("missing_column", "bmi", "refused: missing_column (column 'bmi')"),
])
def test_a_refusal_is_recorded_as_its_code_and_column(code, column, reason):
    assert refusal_reason(code, column) == reason


# --- what an owner's error means --------------------------------------------------------------


def answered_by_the_owner(error: FederatedError) -> FederatedError:
    error.peer = OWNER
    return error


@pytest.mark.parametrize("error", [
    NotFound("PUT ...: HTTP 404: no"),
    BadRequest("PUT ...: HTTP 400: no"),
    SchemaError("PUT ...: HTTP 400: no"),
    DataError("PUT ...: HTTP 422: no"),
    Conflict("PUT ...: HTTP 409: no"),
    ProtocolViolation("PUT ...: HTTP 422: no"),
    Refused("policy:key"),
])
def test_an_error_the_owner_answered_with_refuses_the_job(error):
    assert refuses_job(answered_by_the_owner(error))


@pytest.mark.parametrize(
    "error",
    [
        PeerUnreachable("PUT ...: connection refused", peer=OWNER),
        UpstreamError("PUT ...: HTTP 500: internal error", peer=OWNER),
        UpstreamError("PUT ...: unexpected answer (2 error(s))", peer=OWNER),
        StorageUnavailable("PUT ...: HTTP 503: this party cannot use its state storage right now", peer=OWNER),
        DataError("raised here, not answered by the owner"),
        FederatedError("raised here"),
    ],
)
def test_an_owner_that_failed_without_refusing_may_join_later(error):
    assert not refuses_job(error)


# --- aggregate --------------------------------------------------------------------------------


def test_aggregate_adds_plaintexts(small_key):
    public_key = small_key.public_key
    replies = [[public_key.raw_encrypt(v) for v in row] for row in ([1, -2, 3], [10, 20, -30], [100, 0, 7])]
    total = aggregate(public_key.nsquare, replies)
    assert [small_key.raw_decrypt(c) for c in total] == [111, 18, public_key.n - 20]


def test_aggregate_is_the_slot_wise_product(small_key):
    public_key = small_key.public_key
    replies = [[public_key.raw_encrypt(v) for v in row] for row in ([1, 2], [3, 4], [5, 6])]
    total = aggregate(public_key.nsquare, replies)
    assert total == [replies[0][i] * replies[1][i] * replies[2][i] % public_key.nsquare for i in range(2)]


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6).flatmap(
    lambda width: st.lists(st.lists(st.integers(-(2**200), 2**200), min_size=width, max_size=width),
                           min_size=1, max_size=6)))
def test_aggregate_property(small_key, rows):
    public_key = small_key.public_key
    replies = [[public_key.raw_encrypt(v) for v in row] for row in rows]
    total = aggregate(public_key.nsquare, replies)
    assert len(total) == len(rows[0])
    assert all(0 < c < public_key.nsquare for c in total)
    sums = [sum(column) % public_key.n for column in zip(*rows, strict=True)]
    assert [small_key.raw_decrypt(c) for c in total] == sums


def test_aggregate_of_one_reply_is_that_reply(small_key):
    reply = [small_key.public_key.raw_encrypt(5), small_key.public_key.raw_encrypt(6)]
    assert aggregate(small_key.public_key.nsquare, [reply]) == reply


def test_aggregate_rejects_mismatched_lengths(small_key):
    public_key = small_key.public_key
    with pytest.raises(ProtocolViolation, match="differ in length"):
        aggregate(public_key.nsquare, [[public_key.raw_encrypt(1)] * 2, [public_key.raw_encrypt(1)] * 3])
    with pytest.raises(ProtocolViolation, match="differ in length"):
        aggregate(public_key.nsquare, [[public_key.raw_encrypt(1)] * 2, [public_key.raw_encrypt(1)] * 2, []])


def test_aggregate_rejects_no_reply(small_key):
    with pytest.raises(ProtocolViolation, match="no reply"):
        aggregate(small_key.public_key.nsquare, [])


def test_offline_owners_are_left_out_while_the_quorum_is_met_without_them():
    policy = RoundPolicy(min_data_owners=2, attempts=3)
    joined = {"a", "b", "c"}
    assert policy.member_set(["a", "b", "c"], joined, {}, offline={"c"}) == ["a", "b"]
    # Without them the quorum is not met: they are asked after all.
    assert policy.member_set(["a", "b", "c"], joined, {}, offline={"b", "c"}) == ["a", "b", "c"]
    assert policy.member_set(["a", "b", "c"], joined, {"a": "no reply"}, offline={"c"}) == ["b", "c"]
    assert policy.member_set(["a", "b", "c"], joined, {}, offline=set()) == ["a", "b", "c"]
