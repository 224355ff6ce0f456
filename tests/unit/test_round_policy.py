"""The coordinator's round policy (coordinator/policy.py), without HTTP, threads or storage.

Who is asked in an attempt, whether its replies meet the quorum, when a round is tried again or
fails and with what reason, what an owner's error means, and aggregation: the slot-wise product
of the replies' ciphertexts, which adds their plaintexts.
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
    SchemaError,
    UpstreamError,
)
from common.protocol.spec import JobSpec
from coordinator.policy import Accept, Fail, Retry, RoundPolicy, aggregate, describe, refuses_job

OWNER = "http://127.0.0.1:5001/jobs/job-1"


# --- who is asked -----------------------------------------------------------------------------


def test_every_registered_owner_is_asked():
    assert RoundPolicy(1, 1).participants(["b", "a", "c"], {}) == ["a", "b", "c"]


def test_owners_that_refused_the_job_are_not_asked():
    refused = {"b": "refused the job: missing column 'bmi'"}
    assert RoundPolicy(1, 3).participants(["a", "b", "c"], refused) == ["a", "c"]


def test_nobody_is_asked_when_nobody_is_registered_or_everybody_refused():
    policy = RoundPolicy(1, 3)
    assert policy.participants([], {}) == []
    assert policy.participants(["a"], {"a": "refused the job: x"}) == []


def test_the_policy_of_a_job_takes_its_quorum_and_the_retries(small_key):
    spec = JobSpec(job_id="job-1", model="linear_regression", features=["age", "bmi"], label="progression",
                   data_frac_bits=32, weight_frac_bits=32, weight_bits=8,
                   layout=SlotLayout.for_key(small_key.public_key.bits, 136, 1000), min_data_owners=3,
                   key_fingerprint=small_key.public_key.fingerprint)
    assert RoundPolicy.for_job(spec, retries=2) == RoundPolicy(min_data_owners=3, attempts=3)
    assert RoundPolicy.for_job(spec, retries=0).attempts == 1


# --- quorum, retries, failure -----------------------------------------------------------------


def test_quorum_met_aggregates_who_replied_and_keeps_the_others_failures():
    decision = RoundPolicy(2, 3).decide(0, 1, ["a", "b", "c"], ["c", "a"], {"b": "no reply within 5 s"})
    assert decision == Accept(contributors=("a", "c"), failures={"b": "no reply within 5 s"})


def test_quorum_met_exactly_on_the_last_attempt():
    decision = RoundPolicy(1, 2).decide(4, 2, ["a", "b"], ["b"], {"a": "refused the job: x"})
    assert decision == Accept(contributors=("b",), failures={"a": "refused the job: x"})


def test_a_failure_of_an_owner_that_replied_after_all_does_not_count():
    """A request timed out although the owner had accepted it, and its reply came: it contributed."""
    decision = RoundPolicy(2, 1).decide(0, 1, ["a", "b"], ["a", "b"], {"a": "read timed out"})
    assert decision == Accept(contributors=("a", "b"), failures={})


def test_quorum_not_met_with_attempts_left_is_a_retry():
    decision = RoundPolicy(2, 3).decide(0, 1, ["a", "b"], ["a"], {"b": "no reply within 5 s"})
    assert isinstance(decision, Retry)
    assert decision.reason == "attempt 1: 1 of 2 required replies; b: no reply within 5 s; replied: a"


def test_retries_exhausted_fail_the_round_naming_the_real_cause():
    failures = {"a": "no reply within 5 s", "b": "refused the job: missing column 'bmi'"}
    decision = RoundPolicy(2, 3).decide(7, 3, ["a", "b"], [], failures)
    assert decision == Fail(
        "round 7: fewer than 2 data owner(s) answered in 3 attempt(s);"
        " a: no reply within 5 s; b: refused the job: missing column 'bmi'",
        failures,
    )
    assert "no data owner is registered" not in decision.reason


def test_a_failed_round_names_who_did_reply():
    decision = RoundPolicy(3, 1).decide(0, 1, ["a", "b", "c"], ["a", "c"], {"b": "could not reply: out of memory"})
    assert isinstance(decision, Fail)
    assert decision.reason == (
        "round 0: fewer than 3 data owner(s) answered in 1 attempt(s); b: could not reply: out of memory; replied: a, c"
    )
    assert decision.failures == {"b": "could not reply: out of memory"}


def test_registered_owners_that_all_replied_but_too_few_are_not_called_unregistered():
    decision = RoundPolicy(2, 1).decide(0, 1, ["a"], ["a"], {})
    assert isinstance(decision, Fail)
    assert "no data owner is registered" not in decision.reason
    assert decision.reason.endswith("answered in 1 attempt(s); replied: a")


def test_no_registered_owner_fails_saying_so():
    decision = RoundPolicy(1, 1).decide(0, 1, [], [], {})
    assert decision == Fail(
        "round 0: fewer than 1 data owner(s) answered in 1 attempt(s); no data owner is registered with the coordinator",
        {},
    )


@pytest.mark.parametrize(("attempt", "attempts", "expected"), [(1, 1, Fail), (1, 2, Retry), (2, 2, Fail),
                                                               (2, 3, Retry), (3, 3, Fail)])
def test_a_round_is_retried_until_its_attempts_are_used(attempt, attempts, expected):
    assert isinstance(RoundPolicy(1, attempts).decide(0, attempt, ["a"], [], {"a": "x"}), expected)


def test_describe():
    assert describe([], [], {}) == "no data owner is registered with the coordinator"
    assert describe(["a", "b"], ["b"], {"a": "x"}) == "a: x; replied: b"
    assert describe(["a", "b"], [], {"b": "y", "a": "x"}) == "a: x; b: y"


# --- what an owner's error means --------------------------------------------------------------


@pytest.mark.parametrize("error_class", [NotFound, BadRequest, SchemaError, DataError, Conflict, ProtocolViolation])
def test_an_error_the_owner_answered_with_refuses_the_job(error_class):
    assert refuses_job(error_class("PUT ...: HTTP 4xx: no", peer=OWNER))


@pytest.mark.parametrize(
    "error",
    [
        PeerUnreachable("PUT ...: connection refused", peer=OWNER),
        UpstreamError("PUT ...: HTTP 500: internal error", peer=OWNER),
        UpstreamError("PUT ...: unexpected answer (2 error(s))", peer=OWNER),
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
    assert [small_key.raw_decrypt(c) for c in total] == [sum(column) % public_key.n for column in zip(*rows)]


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
