"""What a data owner remembers to enforce its policy (data_owner/ledger.py).

The trusted model creator key (trust on first use, and its race), the identity key first seen for
each peer, the member sets served per key and the events: each kept across a reopen of the file,
which is how the owner finds them after a restart.
"""

from __future__ import annotations

import stat
import threading

import pytest

from data_owner.ledger import Ledger

KEY = "a" * 64
OTHER_KEY = "b" * 64


@pytest.fixture
def ledger_path(tmp_path):
    return tmp_path / "state" / "ledger.sqlite3"


def test_a_new_ledger_remembers_nothing(ledger_path):
    ledger = Ledger(ledger_path)
    assert ledger.trusted_key() is None
    assert ledger.peer_identities(["owner-b"]) == {}
    assert ledger.served_sets(KEY) == []
    assert ledger.events() == [] and ledger.member_sets() == []


def test_the_ledger_is_readable_by_its_owner_only(ledger_path):
    Ledger(ledger_path)
    assert stat.S_IMODE(ledger_path.stat().st_mode) == 0o600


# --- the trusted key ------------------------------------------------------------------------------


def test_the_first_key_trusted_stays_trusted(ledger_path):
    ledger = Ledger(ledger_path)
    assert ledger.trust(KEY, 2048, "trusted on first use") == KEY
    assert ledger.trust(OTHER_KEY, 3072, "trusted on first use") == KEY
    trusted = ledger.trusted_key()
    assert trusted is not None
    assert (trusted["fingerprint"], trusted["bits"], trusted["source"]) == (KEY, 2048, "trusted on first use")
    assert trusted["since"] > 0


def test_the_trusted_key_survives_a_reopen(ledger_path):
    Ledger(ledger_path).trust(KEY, 2048, "trusted on first use")
    reopened = Ledger(ledger_path)
    assert reopened.trusted_key()["fingerprint"] == KEY
    assert reopened.trust(OTHER_KEY, 2048, "trusted on first use") == KEY


@pytest.mark.parametrize("ledgers", [1, 8], ids=["one-ledger", "one-ledger-per-thread"])
def test_a_race_to_trust_on_first_use_has_one_winner_that_every_caller_is_told(ledger_path, ledgers):
    """Two joins under different keys at once: both learn the one key that was stored first."""
    shared = Ledger(ledger_path)
    handles = [shared] * 8 if ledgers == 1 else [Ledger(ledger_path) for _ in range(8)]
    start = threading.Barrier(len(handles))
    answers: dict[int, str] = {}

    def trust(index: int, ledger: Ledger) -> None:
        start.wait()
        answers[index] = ledger.trust(f"{index:x}" * 64, 2048, "trusted on first use")

    threads = [threading.Thread(target=trust, args=(index, ledger)) for index, ledger in enumerate(handles)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == len(handles)
    (winner,) = set(answers.values())
    assert shared.trusted_key()["fingerprint"] == winner
    assert winner in {f"{index:x}" * 64 for index in range(len(handles))}


# --- peers ----------------------------------------------------------------------------------------


def test_a_peers_first_identity_key_is_kept(ledger_path):
    ledger = Ledger(ledger_path)
    ledger.remember_peers({"owner-b": "key-of-b", "owner-c": "key-of-c"})
    ledger.remember_peers({"owner-b": "another-key", "owner-d": "key-of-d"})
    assert ledger.peer_identities(["owner-b", "owner-c", "owner-d", "owner-e"]) == {
        "owner-b": "key-of-b", "owner-c": "key-of-c", "owner-d": "key-of-d"}
    assert ledger.peer_identities(["owner-e"]) == {}


def test_peers_survive_a_reopen(ledger_path):
    Ledger(ledger_path).remember_peers({"owner-b": "key-of-b"})
    assert Ledger(ledger_path).peer_identities(["owner-b"]) == {"owner-b": "key-of-b"}


def test_peer_identities_of_a_large_member_set(ledger_path):
    ledger = Ledger(ledger_path)
    names = [f"owner-{index}" for index in range(5000)]
    ledger.remember_peers({name: f"key-{name}" for name in names[::2]})
    assert ledger.peer_identities(names) == {name: f"key-{name}" for name in names[::2]}


# --- served member sets ---------------------------------------------------------------------------


def test_served_sets_are_kept_per_model_creator_key(ledger_path):
    ledger = Ledger(ledger_path)
    ledger.admit("job-1", "request-1", 1000, KEY, frozenset({"a", "b", "c"}), 0)
    ledger.admit("job-2", "request-2", 1000, KEY, frozenset({"a", "d"}), 3)
    ledger.admit("job-3", "request-3", 1000, OTHER_KEY, frozenset({"a"}), 0)
    assert sorted(map(sorted, ledger.served_sets(KEY))) == [["a", "b", "c"], ["a", "d"]]
    assert ledger.served_sets(OTHER_KEY) == [frozenset({"a"})]
    assert ledger.served_sets("c" * 64) == []


def test_a_set_served_again_is_kept_once_with_where_it_was_first_served(ledger_path):
    ledger = Ledger(ledger_path)
    ledger.admit("job-1", "request-4", 1000, KEY, frozenset({"b", "a"}), 0)
    ledger.admit("job-2", "request-5", 1000, KEY, frozenset({"a", "b"}), 7)
    assert ledger.served_sets(KEY) == [frozenset({"a", "b"})]
    (entry,) = ledger.member_sets()
    assert entry["members"] == ["a", "b"] and entry["job_id"] == "job-1" and entry["round"] == 0
    assert entry["key_fingerprint"] == KEY and entry["served_at"] > 0


def test_served_sets_survive_a_reopen(ledger_path):
    ledger = Ledger(ledger_path)
    ledger.admit("job-1", "request-6", 1000, KEY, frozenset({"a", "b", "c"}), 0)
    ledger.admit("job-1", "request-7", 1000, KEY, frozenset({"a", "x", "y"}), 1)
    reopened = Ledger(ledger_path)
    assert sorted(map(sorted, reopened.served_sets(KEY))) == [["a", "b", "c"], ["a", "x", "y"]]
    assert [entry["members"] for entry in reopened.member_sets()] == [["a", "b", "c"], ["a", "x", "y"]]


# --- events ---------------------------------------------------------------------------------------


def test_events_are_listed_newest_first_with_their_details(ledger_path):
    ledger = Ledger(ledger_path)
    ledger.record_event("job-1", "joined", detail="linear_regression on 10 features")
    ledger.record_event("job-1", "refused", 3, "policy:differencing", None, "members ['a'] differ by 1")
    ledger.record_event("job-2", "refused", None, "bad_value", "bp", "/data/a.csv: row 7, column 'bp': not a number")
    events = ledger.events()
    assert [event["outcome"] for event in events] == ["refused", "refused", "joined"]
    assert {key: events[0][key] for key in ("job_id", "round", "code", "column", "detail")} == {
        "job_id": "job-2", "round": None, "code": "bad_value", "column": "bp",
        "detail": "/data/a.csv: row 7, column 'bp': not a number"}
    assert events[1]["round"] == 3 and events[1]["code"] == "policy:differencing" and events[1]["column"] is None
    assert events[2]["code"] is None and events[2]["detail"] == "linear_regression on 10 features"
    assert events[0]["at"] >= events[2]["at"] > 0


def test_events_are_limited_and_survive_a_reopen(ledger_path):
    ledger = Ledger(ledger_path)
    for round_number in range(5):
        ledger.record_event("job-1", "contributed", round_number)
    reopened = Ledger(ledger_path)
    assert [event["round"] for event in reopened.events(limit=3)] == [4, 3, 2]
    assert len(reopened.events()) == 5


def test_distinct_round_requests_are_counted_once_each_up_to_the_limit(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    members = frozenset({"a", "b"})
    assert ledger.admit("job-1", "request-1", 2, KEY, members, 0)
    assert ledger.admit("job-1", "request-1", 2, KEY, members, 0)  # asked again: counted once
    assert ledger.admit("job-1", "request-2", 2, KEY, members, 0)  # another request under round 0
    assert not ledger.admit("job-1", "request-3", 2, KEY, members, 1)  # past the limit: refused
    assert ledger.admit("job-2", "request-3", 2, KEY, members, 0)  # counted per job
    reopened = Ledger(tmp_path / "ledger.sqlite3")
    assert not reopened.admit("job-1", "request-4", 2, KEY, members, 2)  # the count survives a restart
