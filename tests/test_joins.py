"""The label join on its own: bounds by count, bytes and age, and the reasons it gives."""

from __future__ import annotations

import pickle

from streamheal.events import Reason
from streamheal.joins import LabelJoin, Pending


def test_count_bound_drops_the_oldest_and_remembers_why() -> None:
    join = LabelJoin(max_entries=3, max_bytes=1 << 30, max_age_seconds=1e9)
    for i in range(5):
        join.remember(str(i), float(i), 10, {"x": i}, 0, now=float(i))
    assert list(join.pending) == ["2", "3", "4"] and join.expired == 2
    assert join.take("0", 10.0) is Reason.EXPIRED_LABEL_ID
    assert join.take("nope", 10.0) is Reason.UNKNOWN_LABEL_ID
    assert type(join.take("3", 10.0)) is Pending
    assert join.take("3", 11.0) is Reason.DUPLICATE_LABEL
    assert len(join.closed) <= 3


def test_byte_budget_holds_for_wide_events() -> None:
    join = LabelJoin(max_entries=10_000, max_bytes=50_000, max_age_seconds=1e9)
    for i in range(1_000):
        join.remember(str(i), float(i), 1_000, {}, None, now=float(i))
        assert join.bytes <= 50_000
    assert 0 < len(join) < 1_000
    assert join.expired == 1_000 - len(join)


def test_age_limit_by_event_time_and_by_the_labels_own_time() -> None:
    join = LabelJoin(max_entries=100, max_bytes=1 << 30, max_age_seconds=10.0)
    join.remember("old", 0.0, 10, {"x": 1}, 1, now=0.0)
    join.remember("young", 5.0, 10, {"x": 2}, 1, now=5.0)
    # A label 20 s after its features is too late by its own time, and expires only them.
    assert join.take("old", 20.0) is Reason.EXPIRED_LABEL_ID
    assert "young" in join
    join.expire(now=30.0)
    assert len(join) == 0 and join.expired == 2


def test_state_round_trip_continues_identically() -> None:
    join = LabelJoin(max_entries=5, max_bytes=1 << 30, max_age_seconds=100.0)
    for i in range(8):
        join.remember(str(i), float(i), 10, {"x": i}, i % 2, now=float(i))
    copy = LabelJoin(max_entries=5, max_bytes=1 << 30, max_age_seconds=100.0)
    copy.load(pickle.loads(pickle.dumps(join.state())))
    assert (copy.bytes, copy.expired, list(copy.pending)) == (
        join.bytes,
        join.expired,
        list(join.pending),
    )
    assert copy.take("6", 9.0).features == join.take("6", 9.0).features == {"x": 6}


def test_a_state_saved_with_plain_dicts_loads_and_forgets_its_oldest_ids_first() -> None:
    # Checkpoints written before 2026-11-29 hold the tables as dicts (insertion order).
    state = {
        "pending": {str(i): Pending({"x": i}, 0, float(i), 310) for i in range(3)},
        "closed": {f"c{i}": Reason.DUPLICATE_LABEL for i in range(3)},
        "expired": 7,
    }
    join = LabelJoin(max_entries=3, max_bytes=1 << 30, max_age_seconds=1e9)
    join.load(pickle.loads(pickle.dumps(state)))
    join.remember("3", 3.0, 10, {"x": 3}, 0, now=3.0)  # evicts "0", which closes it
    assert list(join.pending) == ["1", "2", "3"] and join.expired == 8
    assert list(join.closed) == ["c1", "c2", "0"]
    assert join.take("c0", 4.0) is Reason.UNKNOWN_LABEL_ID  # forgotten first
    assert join.take("c2", 4.0) is Reason.DUPLICATE_LABEL


def test_a_full_join_forgets_in_arrival_order_however_long_it_runs() -> None:
    # The tables are bounded FIFOs under constant churn: 50 times their size through them.
    join = LabelJoin(max_entries=200, max_bytes=1 << 30, max_age_seconds=1e9)
    for i in range(10_000):
        join.remember(f"p{i}", float(i), 10, {}, None, now=float(i))
        join.close(f"l{i}", Reason.DUPLICATE_LABEL)
    assert list(join.pending) == [f"p{i}" for i in range(9_800, 10_000)]
    assert len(join.closed) == 200 and join.expired == 9_800
