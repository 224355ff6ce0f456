"""Which owners are offline (coordinator/liveness.py): marked silent in a round, back when they answer health."""

from __future__ import annotations

import threading

from coordinator.liveness import Liveness, SilenceWatch
from coordinator.store import CoordinatorStore


def test_an_offline_owner_is_back_once_it_answers_health(tmp_path):
    answering = {"http://a": True, "http://c": False}
    liveness = Liveness(lambda url: answering[url], interval=0.01, book=CoordinatorStore(str(tmp_path / "c.sqlite3")))
    liveness.mark_offline("c", "http://c", "missed round 3 of job j")
    assert liveness.offline() == {"c": "missed round 3 of job j"}
    stop = threading.Event()
    watcher = threading.Thread(target=liveness.watch_forever, args=(stop,))
    watcher.start()
    try:
        stop.wait(0.1)
        assert liveness.offline() == {"c": "missed round 3 of job j"}, "no answer: still offline"
        answering["http://c"] = True
        for _ in range(500):
            if not liveness.offline():
                break
            stop.wait(0.01)
        assert liveness.offline() == {}
    finally:
        stop.set()
        watcher.join(5)


def test_a_member_is_silent_only_after_the_misses_in_a_row(tmp_path):
    answers = {"http://b": [False, True, False, False, False], "http://c": [False, False, False]}
    liveness = Liveness(lambda url: answers[url].pop(0), interval=1, book=CoordinatorStore(str(tmp_path / "c.sqlite3")))
    watch = SilenceWatch(liveness, {"b": "http://b", "c": "http://c"}, misses=3)
    assert watch({"b", "c"}) == {}
    assert watch({"b", "c"}) == {}
    ((name, reason),) = watch({"b", "c"}).items()
    assert name == "c"
    assert reason.startswith("silent: answered neither the round nor 3 health checks in a row")
    assert set(watch({"b"})) == set() and set(watch({"b"})) == {"b"}


def test_the_offline_marking_is_kept_in_the_store_for_the_next_start(tmp_path):
    now = [1000.0]
    store = CoordinatorStore(str(tmp_path / "c.sqlite3"))
    liveness = Liveness(lambda url: False, interval=1, book=store, clock=lambda: now[0])
    liveness.mark_offline("c", "http://c", "missed round 3 of job j")
    now[0] = 1005.0
    liveness.mark_offline("c", "http://c", "missed round 4 of job j")
    assert liveness.offline_since() == {"c": 1000.0}, "offline since the first marking"

    restarted = Liveness(lambda url: False, interval=1, book=CoordinatorStore(str(tmp_path / "c.sqlite3")))
    assert restarted.offline() == {"c": "missed round 4 of job j"}
    assert restarted.offline_since() == {"c": 1000.0}
    restarted.mark_online("c")
    assert Liveness(lambda url: False, interval=1, book=store).offline() == {}
