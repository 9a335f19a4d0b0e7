"""The label join on its own: bounds by count, bytes and age, and the reasons it gives."""

from __future__ import annotations

import gc
import pickle
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamheal.joins as joins
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


def test_closed_ids_stay_out_of_the_collectors_scans_and_enum_reasons_still_load() -> None:
    # A long-running partition closes 100,000 ids: were each one's entry tracked by the
    # garbage collector, every full collection would scan them all (see LabelJoin.closed).
    join = LabelJoin(max_entries=10, max_bytes=1 << 30, max_age_seconds=1e9)
    for i in range(5):
        join.close(f"c{i}", Reason.DUPLICATE_LABEL)
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in join.closed.values())
    # Checkpoints written before held the reasons as Reason members, in both formats.
    for value in join.closed:
        join.closed[value] = (Reason.DUPLICATE_LABEL, join.closed[value][1])
    for restored in (
        _restored(join),
        _loaded({"pending": {}, "closed": dict(join.closed), "expired": 0}),
    ):
        gc.collect()
        assert [type(reason) for reason, _ in restored.closed.values()] == [str] * 5
        assert not any(gc.is_tracked(entry) for entry in restored.closed.values())
        assert restored.take("c3", 1.0) is Reason.DUPLICATE_LABEL


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.sampled_from("abcdefgh"), max_size=8),
    run=st.lists(st.sampled_from("abcdefghij"), max_size=12),
    bound=st.integers(1, 6),
)
def test_closing_a_run_at_once_is_closing_it_id_by_id(
    before: list[str], run: list[str], bound: int
) -> None:
    # A run's ids, some already closed, some twice in the run, past the bound or not.
    one_by_one, at_once = (LabelJoin(bound, 1 << 20, 60.0) for _ in range(2))
    for join in (one_by_one, at_once):
        for event_id in before:
            join.close(event_id, Reason.EXPIRED_LABEL_ID)
    for event_id in run:
        one_by_one.close(event_id, Reason.DUPLICATE_LABEL)
    at_once.close_all(run, Reason.DUPLICATE_LABEL)
    assert list(at_once.closed.items()) == list(one_by_one.closed.items())
    assert at_once.seq == one_by_one.seq


def test_a_tail_read_before_its_ids_were_closed_again_or_forgotten_restores_the_join() -> None:
    # Checkpoints read the closed ids' tail incrementally (LabelJoin._closed_since): ids
    # closed again, or forgotten for space, after a checkpoint read them stay in it.
    join = LabelJoin(max_entries=4, max_bytes=1 << 30, max_age_seconds=1e9)
    for event_id in ("a", "b", "c"):
        join.close(event_id, Reason.DUPLICATE_LABEL)
    assert _contents(_restored(join)) == _contents(join)  # the tail holds a, b, c
    join.close("a", Reason.EXPIRED_LABEL_ID)  # closed again: now the youngest
    for event_id in ("d", "e", "f"):  # b and c are forgotten for space
        join.close(event_id, Reason.DUPLICATE_LABEL)
    assert list(join.closed) == ["a", "d", "e", "f"]
    restored = _restored(join)
    assert _contents(restored) == _contents(join)
    assert restored.take("a", 1.0) is Reason.EXPIRED_LABEL_ID
    assert restored.take("b", 1.0) is Reason.UNKNOWN_LABEL_ID


def test_closed_ids_of_any_text_round_trip_through_the_packed_log() -> None:
    join = LabelJoin(max_entries=100, max_bytes=1 << 30, max_age_seconds=1e9)
    ids = ["", "é", "🙂x", "a\x00b", "plain", "\u2028"]
    for i, event_id in enumerate(ids):
        join.close(event_id, Reason.DUPLICATE_LABEL if i % 3 else Reason.EXPIRED_LABEL_ID)
        assert _contents(_restored(join)) == _contents(join)  # incremental tails
    join._compact()  # every id sealed in packed segments
    assert _contents(_restored(join)) == _contents(join)


def test_a_log_written_before_packing_still_restores() -> None:
    # "logs": the closed ids' tail and segments as (ids, numbers, reasons) tuples.
    saved, joins.SEGMENT_CHANGES = joins.SEGMENT_CHANGES, 8
    try:
        join = LabelJoin(max_entries=30, max_bytes=1 << 30, max_age_seconds=1e9)
        for i in range(47):
            join.remember(f"p{i}", float(i), 10, {"x": i}, 0, now=float(i))
            join.close(f"c{i}", Reason.DUPLICATE_LABEL)
            if i % 7 == 6:
                join.take(f"p{i - 3}", float(i))
        segments = join.checkpoint_segments()
        for event_id in ("c3", "late", "c46"):  # a tail: one closed again, one new
            join.close(event_id, Reason.EXPIRED_LABEL_ID)
        state = join.log_state()
    finally:
        joins.SEGMENT_CHANGES = saved

    def unpacked(changes: tuple) -> tuple:
        closed = list(joins._closed_changes(changes))
        return (
            tuple(c[0] for c in closed),
            array("q", [c[1] for c in closed]),
            tuple(c[2] for c in closed),
        )

    state["format"] = "logs"
    state["logs"][1]["tail"] = unpacked(state["logs"][1]["tail"])
    old = {
        name: s._replace(changes=unpacked(s.changes)) if name.startswith("join.c") else s
        for name, s in segments.items()
    }
    assert any(name.startswith("join.c") for name in old) and len(state["logs"][1]["tail"][0])
    restored = LabelJoin(30, 1 << 30, 1e9)
    restored.load_log(pickle.loads(pickle.dumps(state)), old)
    assert _contents(restored) == _contents(join)
    with pytest.raises(ValueError, match="does not add up"):
        list(joins._closed_changes(("ab", array("I", [1]).tobytes(), b"", (("x", 1),))))


def _loaded(state: dict) -> LabelJoin:
    join = LabelJoin(max_entries=10, max_bytes=1 << 30, max_age_seconds=1e9)
    join.load(pickle.loads(pickle.dumps(state)))
    return join


def _contents(join: LabelJoin) -> tuple:
    pending = [(k, e.features, e.prediction, e.ts, e.size) for k, e in join.pending.items()]
    closed = [(k, reason) for k, (reason, _) in join.closed.items()]
    return pending, closed, join.expired, join.bytes


def _restored(join: LabelJoin, seal: bool = True) -> LabelJoin:
    """``join`` as a worker checkpoints and restores it: the sealed segments as parts
    (each pickled on its own), the log state without them. ``seal=False``: as the log
    stands, without the sealing and forgetting a checkpoint does first."""
    sealed = (
        join.checkpoint_segments()
        if seal
        else {s.name: s for log in join._logs for s in log.sealed}
    )
    segments = {n: pickle.loads(pickle.dumps(s)) for n, s in sealed.items()}
    state = pickle.loads(pickle.dumps(join.log_state()))
    copy = LabelJoin(join.max_entries, join.max_bytes, join.max_age)
    copy.load_log(state, segments)
    return copy


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("rrrtttcck"), st.integers(0, 40)), min_size=1, max_size=400),
    st.integers(2, 30),
    st.sampled_from([3, 8, 64]),
)
def test_a_join_restored_from_its_change_log_is_the_join(
    steps: list[tuple[str, int]], bound: int, segment: int
) -> None:
    # Remember, take, close and checkpoint ("k") in any order, with ids repeating; each
    # restore from the log equals the live join and goes on exactly like it.
    saved, joins.SEGMENT_CHANGES = joins.SEGMENT_CHANGES, segment
    try:
        join = LabelJoin(max_entries=bound, max_bytes=40 * 320, max_age_seconds=50.0)
        restored = None
        for clock, (step, n) in enumerate(steps):
            for target in [j for j in (join, restored) if j is not None]:
                if step == "r":
                    target.remember(str(n), float(clock), 10, {"x": n}, n % 2, now=float(clock))
                elif step == "t":
                    found = target.take(str(n), float(clock))
                    assert (type(found) is Pending) or found in Reason
                elif step == "c":
                    target.close(str(n), Reason.DUPLICATE_LABEL)
            if step == "k":
                restored = _restored(join)
            assert _contents(_restored(join, seal=False)) == _contents(join)
            if restored is not None:
                assert _contents(restored) == _contents(join)
        assert _contents(_restored(join)) == _contents(join)
    finally:
        joins.SEGMENT_CHANGES = saved


def test_a_long_run_writes_each_sealed_segment_once_and_keeps_few() -> None:
    # Labels inline (each id closed) through a full join: the log sheds the segments no
    # live entry needs, names cycle through a bounded ring, and a checkpoint's own
    # changes stay under a segment.
    join = LabelJoin(max_entries=10_000, max_bytes=1 << 30, max_age_seconds=1e9)
    names_seen, written = set(), {}
    for i in range(200_000):
        join.close(f"id{i}", Reason.DUPLICATE_LABEL)
        if i % 500 == 499:  # a checkpoint per batch of 500
            segments = join.checkpoint_segments()
            state = join.log_state()
            assert len(state["logs"][1]["tail"][1]) // 4 < 4096 + 500  # lengths: uint32s
            new = [n for n, s in segments.items() if written.get(n) is not s]
            assert len(new) <= 1  # at most the one sealed since the last checkpoint
            written.update(segments)
            names_seen.update(segments)
    assert len(join.checkpoint_segments()) <= 10_000 // 4096 + 2
    assert all(name.startswith("join.c") for name in names_seen)  # nothing waits
    assert len(names_seen) <= join._ring()
    assert _contents(_restored(join)) == _contents(join)


def test_an_entry_sealed_in_a_segment_then_taken_stays_taken_after_a_restore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(joins, "SEGMENT_CHANGES", 3)
    join = LabelJoin(max_entries=10, max_bytes=1 << 30, max_age_seconds=1e9)
    for i in range(6):
        join.remember(str(i), float(i), 10, {"x": i}, 0, now=float(i))
    assert list(join.checkpoint_segments()) == ["join.p0"]  # "3" is in it now
    assert type(join.take("3", 7.0)) is Pending
    join.remember("9", 8.0, 10, {}, 0, now=8.0)
    restored = _restored(join)
    assert list(restored.pending) == ["0", "1", "2", "4", "5", "9"] == list(join.pending)
    assert restored.take("3", 9.0) is Reason.DUPLICATE_LABEL


def test_a_label_that_never_comes_does_not_pin_every_entry_since_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The waiting log keeps every segment from its oldest waiting entry on; one event
    # whose label never comes would keep every entry remembered and taken since (their
    # features too). The log re-seals its live entries instead, and restores stay exact.
    monkeypatch.setattr(joins, "SEGMENT_CHANGES", 16)
    join = LabelJoin(max_entries=1000, max_bytes=1 << 30, max_age_seconds=1e9)
    join.remember("stuck", 0.0, 10, {"x": -1}, 0, now=0.0)
    for i in range(5000):
        join.remember(str(i), float(i), 10, {"x": i}, 0, now=float(i))
        if i >= 20:
            assert type(join.take(str(i - 20), float(i))) is Pending
        if i % 50 == 49:
            join.checkpoint_segments()
            held = sum(len(s.changes) for s in join._logs[0].sealed)
            assert held <= 2 * (len(join.pending) + 16) + 2 * 50
        if i % 500 == 499:
            assert _contents(_restored(join)) == _contents(join)
    assert "stuck" in join.pending and _contents(_restored(join)) == _contents(join)
