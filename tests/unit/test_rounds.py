"""Collecting a round's replies (coordinator/rounds.py): the collector of an attempt and the registry of rounds.

The round policy (quorum, retries, aggregation) is tested in test_round_policy.py.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from common.protocol.errors import Conflict
from coordinator.rounds import RoundCollector, RoundRegistry

LIVENESS = 30  # seconds a background wait may take before the test calls it stuck (never reached when correct)


def make_collector(expected=("a", "b", "c"), job_id="job-1", round_number=3, attempt=0, **extra) -> RoundCollector:
    arguments = {"job_id": job_id, "round": round_number, "attempt": attempt, "expected": frozenset(expected)}
    if "kind" in {f.name for f in dataclasses.fields(RoundCollector)}:
        arguments["kind"] = "gradient"
    return RoundCollector(**arguments, **extra)


class SteppedCondition:
    """A condition whose wait() runs a callback instead of blocking: deterministic waiting, no clock."""

    def __init__(self, on_wait) -> None:
        self._lock = threading.RLock()
        self.on_wait = on_wait
        self.waits = 0

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc_info):
        self._lock.release()

    def notify_all(self) -> None:
        pass

    def wait(self, timeout=None) -> bool:
        self.waits += 1
        if self.waits > 10:
            raise AssertionError("waited again and again without progress")
        self.on_wait()
        return True


# --- RoundCollector ---------------------------------------------------------------------------


def test_add_from_expected_owners():
    collector = make_collector()
    collector.add("a", [1, 2])
    collector.add("c", [3, 4])
    assert collector.replies == {"a": [1, 2], "c": [3, 4]}
    assert collector.failures == {}


def test_duplicate_reply_is_a_conflict():
    collector = make_collector()
    collector.add("a", [1])
    with pytest.raises(Conflict, match="'a' already replied to round 3 of job job-1"):
        collector.add("a", [2])
    assert collector.replies == {"a": [1]}


def test_unexpected_owner_is_a_conflict():
    collector = make_collector()
    with pytest.raises(Conflict, match="'mallory' was not asked for round 3 of job job-1"):
        collector.add("mallory", [1])
    assert collector.replies == {}


def test_late_reply_after_close_is_a_conflict():
    collector = make_collector(expected=("a", "b"))
    collector.add("a", [1])
    collector.wait(0.05)
    assert collector.closed
    with pytest.raises(Conflict, match="job job-1 round 3 attempt 0 is closed"):
        collector.add("b", [2])
    assert collector.replies == {"a": [1]}
    assert collector.failures == {"b": "no reply within 0.05 s"}


def test_wait_times_out_and_marks_missing_owners():
    collector = make_collector()
    collector.add("b", [1])
    collector.fail("c", "connection refused")
    gathered = collector.wait(0.05)
    assert gathered == ({"b": [1]}, {"a": "no reply within 0.05 s", "c": "connection refused"})
    assert collector.closed
    assert collector.replies == {"b": [1]}
    assert collector.failures == {"a": "no reply within 0.05 s", "c": "connection refused"}


def test_wait_with_nobody_replying():
    collector = make_collector()
    collector.wait(0.05)
    assert collector.failures == {name: "no reply within 0.05 s" for name in "abc"}


def test_wait_returns_at_once_when_everyone_already_answered():
    """All replied or failed before wait(): it closes without waiting out its (one hour) timeout."""
    collector = make_collector(_changed=SteppedCondition(lambda: pytest.fail("waited although all answered")))
    collector.add("a", [1])
    collector.add("b", [2])
    collector.fail("c", "HTTP 500")
    collector.wait(3600)
    assert collector.closed
    assert collector.failures == {"c": "HTTP 500"}


def test_wait_wakes_up_when_the_last_reply_arrives():
    collector = make_collector(expected=("a", "b"))
    waiter = threading.Thread(target=collector.wait, args=(3600,), daemon=True)
    waiter.start()
    collector.add("a", [1])
    collector.fail("b", "refused")
    waiter.join(LIVENESS)
    assert not waiter.is_alive()
    assert collector.closed
    assert collector.replies == {"a": [1]}
    assert collector.failures == {"b": "refused"}


def test_wait_keeps_waiting_for_an_outstanding_owner():
    """wait() does not close while an expected owner has neither replied nor failed."""
    collector = None

    def reply_of_b():
        collector.add("b", [2])

    collector = make_collector(expected=("a", "b"), _changed=SteppedCondition(reply_of_b))
    collector.add("a", [1])
    collector.wait(3600)
    assert collector._changed.waits == 1
    assert collector.replies == {"a": [1], "b": [2]}
    assert collector.failures == {}


def test_failures_of_owners_not_asked_do_not_close_the_round_early():
    """An owner that refused the job is recorded as a failure but was never asked (as the runner does).

    It must not count towards the owners that answered: ``b`` is still outstanding.
    """
    collector = None

    def reply_of_b():
        collector.add("b", [2])

    collector = make_collector(expected=("a", "b"), _changed=SteppedCondition(reply_of_b))
    collector.failures["c"] = "refused the job: missing column"
    collector.add("a", [1])
    collector.wait(3600)
    assert collector.replies == {"a": [1], "b": [2]}
    assert collector.failures == {"c": "refused the job: missing column"}


def test_an_owner_is_never_both_a_reply_and_a_failure():
    """A reply arriving after the dispatch to its owner failed must not count that owner twice.

    Counted twice, ``a`` would let the round close before ``c`` answered and mark ``c`` as
    'no reply within 3600 s' at once.
    """
    collector = None

    def reply_of_c():
        collector.add("c", [3])

    collector = make_collector(_changed=SteppedCondition(reply_of_c))
    collector.fail("a", "read timed out")
    try:
        collector.add("a", [1])
    except Conflict:
        pass
    collector.add("b", [2])
    collector.wait(3600)
    assert not collector.replies.keys() & collector.failures.keys()
    assert collector.replies["c"] == [3]
    assert "c" not in collector.failures


def test_fail_after_reply_or_close_is_ignored():
    collector = make_collector(expected=("a", "b"))
    collector.add("a", [1])
    collector.fail("a", "late error")
    assert collector.failures == {}
    collector.wait(0.05)
    collector.fail("b", "after close")
    assert collector.failures == {"b": "no reply within 0.05 s"}


def test_concurrent_replies_from_many_owners():
    owners = [f"owner-{i}" for i in range(40)]
    collector = make_collector(expected=owners)
    waiter = threading.Thread(target=collector.wait, args=(3600,), daemon=True)
    waiter.start()
    senders = [threading.Thread(target=collector.add, args=(name, [i])) for i, name in enumerate(owners)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(LIVENESS)
    waiter.join(LIVENESS)
    assert not waiter.is_alive()
    assert collector.replies == {name: [i] for i, name in enumerate(owners)}
    assert collector.failures == {}


# --- RoundRegistry ----------------------------------------------------------------------------


def test_registry_get_open_collector():
    registry = RoundRegistry()
    collector = make_collector(attempt=2)
    registry.open(collector)
    assert registry.get("job-1", 3, 2) is collector


@pytest.mark.parametrize(("job_id", "round_number", "attempt"), [("job-1", 3, 1), ("job-1", 3, 3), ("job-1", 4, 2),
                                                                 ("job-2", 3, 2)])
def test_registry_get_wrong_round_or_attempt(job_id, round_number, attempt):
    registry = RoundRegistry()
    registry.open(make_collector(attempt=2))
    with pytest.raises(Conflict, match=f"job {job_id} round {round_number} attempt {attempt} is not open"):
        registry.get(job_id, round_number, attempt)


def test_registry_close():
    registry = RoundRegistry()
    collector = make_collector()
    registry.open(collector)
    registry.close(collector)
    with pytest.raises(Conflict):
        registry.get("job-1", 3, 0)


def test_registry_new_attempt_replaces_old_and_old_close_keeps_new():
    registry = RoundRegistry()
    first = make_collector(attempt=0)
    second = make_collector(attempt=1)
    registry.open(first)
    registry.open(second)
    with pytest.raises(Conflict):
        registry.get("job-1", 3, 0)
    registry.close(first)
    assert registry.get("job-1", 3, 1) is second


def test_registry_keeps_jobs_apart():
    registry = RoundRegistry()
    first = make_collector(job_id="job-1")
    second = make_collector(job_id="job-2")
    registry.open(first)
    registry.open(second)
    assert registry.get("job-1", 3, 0) is first
    assert registry.get("job-2", 3, 0) is second


def test_registry_claims_a_round_once_until_released():
    registry = RoundRegistry()
    assert registry.claim("job-1", 3)
    assert not registry.claim("job-1", 3)
    assert registry.claim("job-1", 4) and registry.claim("job-2", 3)
    registry.release("job-1", 3)
    assert registry.claim("job-1", 3)


def test_a_member_that_goes_silent_fails_the_attempt_before_its_deadline():
    collector = make_collector(expected=("a", "b", "c"))
    collector.add("a", [1])
    collector.add("b", [2])
    watched: list[frozenset[str]] = []

    def watch(pending: frozenset[str]) -> dict[str, str]:
        watched.append(pending)
        return {"c": "silent: answered neither the round nor 3 health checks in a row"} if len(watched) == 3 else {}

    replies, failures = collector.wait(LIVENESS, watch, interval=0.01)
    assert replies == {"a": [1], "b": [2]}
    assert failures == {"c": "silent: answered neither the round nor 3 health checks in a row"}
    assert watched == [frozenset({"c"})] * 3 and collector.silent == {"c"} and collector.closed


def test_members_that_miss_the_deadline_are_silent_and_a_reply_outweighs_a_watch():
    collector = make_collector(expected=("a", "b"))

    def watch(pending: frozenset[str]) -> dict[str, str]:
        if "a" in pending:
            collector.add("a", [1])  # a replies just as the watch finds it silent
        return dict.fromkeys(pending & {"a"}, "silent")

    replies, failures = collector.wait(0.05, watch, interval=0.01)
    assert replies == {"a": [1]} and failures == {"b": "no reply within 0.05 s"}
    assert collector.silent == {"b"}
