"""Hostile and careless input against the Engine: nothing raises, nothing ruins the model.

Covers issue 8's holes without a broker: decoding arbitrary bytes and JSON, deeply nested
JSON with NaN, a 1e308 feature, a far-future ts, an endless stream of new feature names,
wide events against the label-join buffer's byte budget, and a replay of a poisoned file.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamheal.config import Config
from streamheal.engine import Engine, Prediction
from streamheal.events import Event, Reason, Rejection, Source, decode
from streamheal.guards import GOOD_STATE_BYTES_PER_EVENT, EventClock, InputGuard, ModelWatch, Notice
from streamheal.policy import Action
from streamheal.replay import file_records, replay
from streamheal.scenarios import breast_cancer

SRC = Source("events", 0, 0)
DEEP_WITH_NAN = (
    b'{"id": "deep", "ts": 1, "features": {"x": NaN}, "y": ' + b"[" * 5000 + b"]" * 5000 + b"}"
)


def decoded(events: list[dict], start: int = 0) -> list[Event | Rejection]:
    return [decode(orjson.dumps(e), Source("events", 0, start + i)) for i, e in enumerate(events)]


def in_batches(engine: Engine, events: list[dict], size: int = 100) -> list:
    """Every output of ``events`` decoded and processed ``size`` records at a time."""
    outputs = []
    for start in range(0, len(events), size):
        outputs += engine.process(decoded(events[start : start + size], start=start))
    return outputs


def accounting_holds(engine: Engine) -> bool:
    c = engine.counters
    return c.records == c.feature_events + c.labels_joined + c.dead_lettered_total


# ------------------------------------------------------------------ decoding never raises
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=300), st.integers(), st.none()),
        "ts": st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(min_value=-(10**30), max_value=10**30),
            st.text(max_size=5),
        ),
        "features": st.one_of(
            st.dictionaries(
                st.text(max_size=12),
                st.one_of(
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-(10**25), max_value=10**25),
                    st.text(max_size=8),
                    st.none(),
                    json_values,
                ),
                max_size=8,
            ),
            json_values,
        ),
        "label": st.one_of(st.integers(), st.booleans(), st.text(max_size=5), json_values),
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_decode_turns_any_bytes_into_an_event_or_a_rejection(raw: bytes) -> None:
    result = decode(raw, SRC)
    assert isinstance(result, Event | Rejection)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_like, max_size=30), st.sampled_from(["per_event", "mini_batch"]))
def test_the_engine_takes_any_json_events_without_raising_and_accounts_for_each(
    events: list[dict], mode: str
) -> None:
    # Python's json writes NaN/Infinity as bare literals (the fallback parser's path) and
    # integers of any size; orjson is not used here on purpose.
    raws = [json.dumps(e).encode() for e in events]
    records = [decode(raw, Source("events", 0, i)) for i, raw in enumerate(raws)]
    engine = Engine(Config().replace(engine={"mode": mode}))
    outputs = engine.process(records)
    assert accounting_holds(engine)
    assert engine.counters.records == len(events)
    predictions = [o for o in outputs if type(o) is Prediction]
    assert len(predictions) == engine.counters.feature_events
    for prediction in predictions:
        assert all(p - p == 0.0 for p in prediction.probabilities.values())


def test_deeply_nested_json_with_nan_is_dead_lettered_as_too_deep() -> None:
    result = decode(DEEP_WITH_NAN, SRC)
    assert type(result) is Rejection and result.reason is Reason.TOO_DEEP
    assert result.raw == DEEP_WITH_NAN


def test_event_bounds_are_dead_letter_reasons() -> None:
    cases = {
        Reason.BAD_ID: {"id": "x" * 257, "ts": 1.0, "features": {"a": 1.0}},
        Reason.TOO_MANY_FEATURES: {
            "id": "w",
            "ts": 1.0,
            "features": {f"f{i}": 1 for i in range(1001)},
        },
        Reason.BAD_FEATURE_NAME: {"id": "n", "ts": 1.0, "features": {"n" * 257: 1.0}},
        Reason.BAD_TS: {"id": "ms", "ts": 1764201600250, "features": {"a": 1.0}},
    }
    for reason, event in cases.items():
        result = decode(orjson.dumps(event), SRC, max_bytes=1 << 20)
        assert type(result) is Rejection and result.reason is reason, (reason, result)
        assert len(result.detail) <= 300
    # A 400-digit integer is read as orjson reads a number past 64 bits, as a float: past
    # a double's range, infinite, so missing (as Infinity), whether or not NaN is there.
    huge_int = b'{"id": "big", "ts": 1, "features": {"a": NaN, "b": 1' + b"0" * 400 + b"}}"
    assert decode(huge_int, SRC).missing == ("a", "b")
    huge_ts = b'{"id": "t", "ts": 1' + b"0" * 400 + b', "features": {"a": NaN}}'
    assert decode(huge_ts, SRC).reason is Reason.BAD_TS


# ------------------------------------------------------------------ numbers
def _accuracy_after(poison_at: int, poison: dict | None, config: Config) -> tuple[float, Engine]:
    events = breast_cancer(events=4000, seed=3).events
    if poison is not None:
        events = [*events[:poison_at], poison, *events[poison_at:]]
    engine = Engine(config)
    records = decoded(events)
    cut = poison_at + (poison is not None)
    for i in range(0, cut, 100):
        engine.process(records[i : min(i + 100, cut)])
    before = (engine.counters.correct, engine.counters.labeled)
    window = records[cut : cut + 1000]
    for i in range(0, len(window), 100):
        engine.process(window[i : i + 100])
    correct = engine.counters.correct - before[0]
    labeled = engine.counters.labeled - before[1]
    return correct / labeled, engine


def _poison() -> dict:
    features = dict(breast_cancer(events=1, seed=9).events[0]["features"])
    features["mean radius"] = 1e308
    return {"id": "poison", "ts": 1.0, "features": features, "label": 1}


def test_a_1e308_feature_is_clipped_and_accuracy_stays_within_a_point_of_a_clean_run() -> None:
    config = Config()
    clean, _ = _accuracy_after(1500, None, config)
    poisoned, engine = _accuracy_after(1500, _poison(), config)
    assert abs(poisoned - clean) <= 0.01, (poisoned, clean)
    assert engine.guard.clipped["mean radius"] >= 1
    assert engine.counters.model_restores == 0  # the input guard was enough


def test_a_model_broken_by_learning_is_restored_to_its_last_good_state_at_once() -> None:
    # With the input guard off, 1e308 reaches the scaler and the weights turn NaN: the
    # model watch must notice on the spot and bring back the last good state.
    config = Config().replace(guards={"clip_outliers": False})
    clean, _ = _accuracy_after(1500, None, config)
    poisoned, engine = _accuracy_after(1500, _poison(), config)
    assert engine.counters.model_restores >= 1
    assert abs(poisoned - clean) <= 0.01, (poisoned, clean)
    assert engine.watch is not None and engine.watch.restores == engine.counters.model_restores


def test_a_restore_is_an_action_record_and_probabilities_stay_finite() -> None:
    config = Config().replace(guards={"clip_outliers": False}, detectors={"enabled": False})
    engine = Engine(config)
    events = breast_cancer(events=300, seed=3).events
    engine.process(decoded(events[:200]))
    outputs = engine.process(decoded([_poison(), *events[200:]], start=200))
    restores = [o for o in outputs if type(o) is Action and o.action == "restore"]
    assert len(restores) == 1 and "restored" in restores[0].message
    for output in outputs:
        if type(output) is Prediction:
            assert all(p - p == 0.0 for p in output.probabilities.values())


def test_a_string_feature_with_endless_values_folds_into_other() -> None:
    guard = InputGuard(Config().guards.__class__(max_categories=3))
    admitted = [guard.admit({"colour": f"c{i}"})["colour"] for i in range(6)]
    assert admitted == ["c0", "c1", "c2", "__other__", "__other__", "__other__"]
    assert guard.folded_values == 3


# ------------------------------------------------------------------ event time
def test_a_far_future_ts_does_not_expire_the_labels_that_are_waiting() -> None:
    events = breast_cancer(events=3000, seed=4, label_delay=300).events
    future = {"id": "future", "ts": 1e10, "features": {"mean radius": 14.0}}
    at = 1000
    poisoned = [*events[:at], future, *events[at:]]
    engine = Engine(Config())
    outputs = []
    records = decoded(poisoned)
    for i in range(0, len(records), 100):
        outputs += engine.process(records[i : i + 100])
    lost = [o for o in outputs if type(o) is Rejection and o.reason is Reason.EXPIRED_LABEL_ID]
    assert lost == []
    assert engine.counters.future_ts == 1
    assert [o.notice for o in outputs if type(o) is Notice].count("future_ts") == 1
    assert engine.clock.now is not None and engine.clock.now < 1e10


def test_old_and_equal_timestamps_are_normal_and_few_hostile_ones_move_nothing() -> None:
    clock = EventClock(max_skew=86_400.0)
    for t in range(100):
        clock.advance(1000.0 + t)
    assert clock.advance(1000.0) == clock.advance(1050.0) == clock.now  # old, equal: normal
    honest = clock.now
    for step in range(1, 6):  # a day ahead each, inside the skew: a walk of 5 days
        clock.advance(honest + step * 86_000.0)
    assert clock.now < honest + 100  # a few stepping timestamps do not carry the clock
    for t in range(200):  # the whole stream really moves on: the clock follows
        clock.advance(5000.0 + t)
    assert 5000.0 <= clock.now < 5200.0


def test_labels_for_unknown_ids_cannot_walk_the_clock_and_expire_waiting_labels() -> None:
    events = breast_cancer(events=1500, seed=4, label_delay=200).events
    walk = [
        {"id": f"walk-{i}", "ts": events[500]["ts"] + (i + 1) * 86_000.0, "label": 1}
        for i in range(5)
    ]
    engine = Engine(Config())
    records = decoded([*events[:500], *walk, *events[500:]])
    outputs = []
    for i in range(0, len(records), 100):
        outputs += engine.process(records[i : i + 100])
    reasons = Counter(o.reason for o in outputs if type(o) is Rejection)
    assert reasons == {Reason.UNKNOWN_LABEL_ID: 5}


def test_a_far_future_first_event_does_not_set_the_clock() -> None:
    events = breast_cancer(events=1000, seed=4, label_delay=100).events
    first = {"id": "first", "ts": 9.9e10, "features": {"mean radius": 14.0}}
    engine = Engine(Config())
    outputs = []
    records = decoded([first, *events])
    for i in range(0, len(records), 100):
        outputs += engine.process(records[i : i + 100])
    lost = [o for o in outputs if type(o) is Rejection and o.reason is Reason.EXPIRED_LABEL_ID]
    assert lost == []


# ------------------------------------------------------------------ bounded memory
def test_new_feature_names_past_the_cap_are_ignored_counted_and_noticed_once() -> None:
    config = Config().replace(guards={"max_distinct_features": 100})
    engine = Engine(config)
    outputs = []
    for batch in range(20):
        events = [
            {
                "id": f"e{batch}-{i}",
                "ts": float(batch * 50 + i),
                "features": {f"n{batch}-{i}-{k}": float(k) for k in range(20)},
                "label": i % 2,
            }
            for i in range(50)
        ]
        outputs += engine.process(decoded(events, start=batch * 50))
    assert len(engine.guard.features) == 100
    assert engine.guard.ignored_names == 20 * 50 * 20 - 100
    caps = [o for o in outputs if type(o) is Notice and o.notice == "feature_cap_reached"]
    assert len(caps) == 1
    assert engine.counters.feature_events == 1000 and accounting_holds(engine)


def test_a_feature_that_first_appears_late_in_the_reference_window_does_not_stop_it() -> None:
    # The reference's split-half check compared a name seen only in the second half with
    # a first half that lacks it, and raised: one producer adding a field while the
    # reference filled stopped the partition's Engine on every retry.
    engine = Engine(Config())
    events = [
        {
            "id": f"e{i}",
            "ts": float(i),
            "features": {"x": float(i % 7), **({"late": float(i % 3)} if i >= 400 else {})},
            "label": i % 2,
        }
        for i in range(1200)
    ]
    in_batches(engine, events)
    assert engine.counters.feature_events == 1200 and accounting_holds(engine)
    assert engine.drift.covariate is not None  # the reference was taken


@pytest.mark.parametrize("cuts", [[], [5], [7], list(range(1, 12))])
def test_a_guard_notice_carries_its_events_index_wherever_the_batch_was_cut(cuts) -> None:
    # Found by an adversarial run: notices were stamped with the batch's first index, so
    # a restarted worker wrote other alert records than an uninterrupted one. Event 3 is
    # dead-lettered whole (label 5 for a binary model): it takes no index.
    config = Config().replace(guards={"max_distinct_features": 3})
    rows = []
    for i in range(12):
        features = {"a": float(i), "b": 1.0}
        if i == 7:
            features["a"] = "12.5"  # a string for a numeric feature
        if i == 8:
            features["a"] = 1e308  # clipped
        if i == 10:
            features.update(c=1.0, d=2.0)  # the fourth name: past the cap
        label = 5 if i == 3 else i % 2
        rows.append(orjson.dumps({"id": f"e{i}", "ts": 1000 + i, "features": features,
                                  "label": label}))  # fmt: skip
    records = [decode(raw, Source("events", 0, i)) for i, raw in enumerate(rows)]
    engine, notices, start = Engine(config), {}, 0
    for end in [*cuts, len(records)]:
        for output in engine.process(records[start:end]):
            if type(output) is Notice:
                notices[output.notice] = output.index
            elif type(output) is Prediction:
                notices.setdefault("predictions", []).append((output.id, output.index))
        start = end
    index_of = dict(notices.pop("predictions"))
    assert notices == {
        "type_mismatch": index_of["e7"],
        "outlier_clipped": index_of["e8"],
        "feature_cap_reached": index_of["e10"],
    }
    assert index_of["e7"] == 6  # e3 took no index


def test_a_value_of_the_other_kind_is_left_out_counted_and_noticed_once() -> None:
    # A Hoeffding tree's splitter raised TypeError on a string in a numeric feature, on
    # every retry of the batch; the linear model one-hot encoded a number's text.
    for model in ({"name": "hoeffding_tree", "params": {}}, {}):
        engine = Engine(Config().replace(model=model) if model else Config())
        events = [
            {
                "id": f"e{i}",
                "ts": float(i),
                "features": {
                    "x": "oops" if i % 50 == 7 else float(i % 7),
                    "colour": 3.5 if i % 50 == 9 else ("red" if i % 2 else "blue"),
                },
                "label": i % 2,
            }
            for i in range(600)
        ]
        outputs = in_batches(engine, events)
        assert engine.counters.feature_events == 600 and accounting_holds(engine)
        assert engine.guard.mismatched == {"x": 12, "colour": 12}
        notices = [o.feature for o in outputs if type(o) is Notice and o.notice == "type_mismatch"]
        assert sorted(notices) == ["colour", "x"]


def test_a_label_of_the_other_kind_is_a_dead_letter_in_both_modes() -> None:
    # A Hoeffding tree that learned the label "yes" beside integer labels could no longer
    # sort its classes: every prediction after raised, and the checkpoint kept the model.
    for mode in ("per_event", "mini_batch"):
        config = Config().replace(
            engine={"mode": mode}, model={"name": "hoeffding_tree", "params": {}}
        )
        engine = Engine(config)
        events = [
            {
                "id": f"e{i}",
                "ts": float(i),
                "features": {"x": float(i % 7)},
                "label": "yes" if i % 100 == 42 else i % 3,
            }
            for i in range(400)
        ]
        events.append({"id": "f1", "ts": 400.0, "features": {"x": 1.0}})
        events.append({"id": "f1", "ts": 401.0, "label": "no"})  # a late label, wrong kind
        outputs = in_batches(engine, events)
        bad = [o for o in outputs if type(o) is Rejection and o.reason is Reason.BAD_LABEL]
        assert len(bad) == 5, mode
        assert "labels are integers" in bad[0].detail
        assert engine.counters.feature_events == 397 and accounting_holds(engine)
        assert engine.pending_labels == 1  # f1's features wait for a label it can learn
        engine.model.predict_proba_one({"x": 1.0})  # the classes still sort


def _hostile(seed: int, events: int = 2000, rate: float = 0.05) -> list[bytes]:
    """A drift stream (labels 20 behind) with a hostile edit on about ``rate`` of its
    events: a string, null, huge or integer value, a new or late name, an empty or
    all-string feature set, reordered keys, a label of another kind, a duplicate id or a
    far-off timestamp."""
    rnd = random.Random(seed)
    scenario = breast_cancer(events=events, seed=seed, label_delay=20, drift_at=events // 2)
    out, ids = [], []
    for i, event in enumerate(scenario.events):
        event = dict(event)
        features = event.get("features")
        if features is not None and rnd.random() < rate:
            features = dict(features)
            name = rnd.choice(sorted(features))
            edit = rnd.randrange(9)
            if edit == 0:
                features[name] = rnd.choice(["a", "1.5", ""])
            elif edit == 1:
                features[name] = None
            elif edit == 2:
                features[name] = rnd.choice([1e300, -1e300, -0.0])
            elif edit == 3:
                features[f"new{rnd.randrange(50)}"] = rnd.random()
            elif edit == 4:
                features[name] = rnd.randrange(-(10**18), 10**18)
            elif edit == 5:
                features = dict(reversed(list(features.items())))
            elif edit == 6:
                features = {f"s{j}": rnd.choice("xyz") for j in range(3)}
            elif edit == 7:
                features = {}
            else:
                features[f"late{i // 300}"] = float(i % 5)
            event["features"] = features
        if rnd.random() < rate / 4:
            event["label"] = rnd.choice([2, -1, "yes", True, None])
        if rnd.random() < rate / 4 and ids:
            event["id"] = rnd.choice(ids)
        if rnd.random() < rate / 8:
            event["ts"] += rnd.choice([1e9, -1e6])
        ids.append(event["id"])
        out.append(orjson.dumps(event))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_hostile_streams_never_stop_a_partition(seed: int) -> None:
    # Past the reference window and a drift, in both modes and with three kinds of model:
    # every record is scored, joined or dead-lettered, and nothing raises.
    raws = _hostile(seed)
    models = [{}, {"name": "hoeffding_tree", "params": {}}, {"params": {"multiclass": True}}]
    for mode in ("per_event", "mini_batch"):
        config = Config().replace(engine={"mode": mode}, model=models[seed % 3])
        engine = Engine(config)
        records = [decode(raw, Source("events", 0, i)) for i, raw in enumerate(raws)]
        for start in range(0, len(records), 250):
            engine.process(records[start : start + 250])
        assert engine.counters.records == len(raws) and accounting_holds(engine), mode
        assert engine.drift.covariate is not None, mode  # past the reference window


def test_the_label_join_buffer_keeps_to_its_byte_budget_evicting_the_oldest() -> None:
    budget = 200_000
    config = Config().replace(
        engine={"join_buffer_max_bytes": budget}, detectors={"enabled": False}
    )
    engine = Engine(config)
    wide = {f"feature_{k:03d}": float(k) for k in range(200)}
    events = [{"id": f"w{i}", "ts": float(i), "features": wide} for i in range(500)]
    records = decoded(events)
    for i in range(0, len(records), 50):
        engine.process(records[i : i + 50])
        assert engine.pending_bytes <= budget
    assert 0 < engine.pending_labels < 500
    assert engine.counters.unlabeled_expired == 500 - engine.pending_labels
    late = engine.process(decoded([{"id": "w0", "ts": 501.0, "label": 1}], start=500))
    assert [o.reason for o in late] == [Reason.EXPIRED_LABEL_ID]


def test_guard_state_round_trips_and_keeps_the_current_bounds() -> None:
    engine = Engine(Config())
    engine.process(decoded(breast_cancer(events=700, seed=1).events))
    state = engine.state_dict()
    tighter = Engine(Config().replace(guards={"max_distinct_features": 5}))
    tighter.load_state_dict(state)
    assert tighter.guard.cfg.max_distinct_features == 5
    assert tighter.guard.features.keys() == engine.guard.features.keys()
    assert tighter.pending_bytes == engine.pending_bytes


# ------------------------------------------------------------------ replay of a poisoned file
def test_a_replay_with_poison_records_completes_within_a_point_of_the_clean_stream(
    tmp_path: Path,
) -> None:
    events = breast_cancer(events=6000, seed=8, label_delay=100).events
    clean_file, poisoned_file = tmp_path / "clean.jsonl", tmp_path / "poisoned.jsonl"
    clean_file.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    wide = {f"w{k}": 1.0 for k in range(3000)}
    poison_lines = {
        1000: DEEP_WITH_NAN,
        2000: orjson.dumps(_poison()),
        3000: orjson.dumps({"id": "future", "ts": 1e10, "features": {"mean radius": 14.0}}),
        4000: orjson.dumps({"id": "wide", "ts": 1.0, "features": wide}),
    }
    lines = []
    for i, event in enumerate(events):
        if i in poison_lines:
            lines.append(poison_lines[i])
        lines.append(orjson.dumps(event))
    poisoned_file.write_bytes(b"\n".join(lines) + b"\n")
    config = [("default", Config())]
    [clean], _, _ = replay(file_records(clean_file), config, progress=False)
    [poisoned], _, _ = replay(file_records(poisoned_file), config, progress=False)
    a, b = clean.engine.counters, poisoned.engine.counters
    assert abs(a.correct / a.labeled - b.correct / b.labeled) <= 0.01
    assert b.labeled == a.labeled + 1  # every clean label joined, plus the poison's own
    assert b.dead_lettered.get(Reason.EXPIRED_LABEL_ID, 0) == a.dead_lettered.get(
        Reason.EXPIRED_LABEL_ID, 0
    )
    assert b.future_ts == 1
    assert b.dead_lettered[Reason.TOO_DEEP] == 1


def test_an_early_extreme_value_is_clipped_by_provisional_bounds() -> None:
    # Before the reference is complete, one 1e12 would leave the scaler's variance huge
    # (and the feature useless) for thousands of events: provisional bounds stop it.
    guard = InputGuard(Config().guards)
    for i in range(40):
        guard.admit({"x": float(i % 7)})
    assert guard.admit({"x": 1e12})["x"] < 1000
    assert guard.clipped["x"] == 1


def test_strings_no_output_can_carry_and_unprintable_values_are_dead_letters() -> None:
    # A lone surrogate only gets past the NaN-tolerant parser; writing it would crash later.
    surrogate = b'{"id": "\\ud800", "ts": 1.0, "features": {"x": 0.5}, "note": NaN}'
    assert decode(surrogate, SRC).reason is Reason.NOT_JSON
    # A 1,000-deep value is refused with a bounded detail, not a failing repr().
    deep = b'{"id": "d", "ts": 1.0, "features": {"x": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    result = decode(deep, SRC)
    assert result.reason is Reason.BAD_FEATURE_VALUE and len(result.detail) <= 300
    huge_label = b'{"id": "l", "ts": 1.0, "features": {"x": NaN}, "label": 1' + b"0" * 30 + b"}"
    assert decode(huge_label, SRC).reason is Reason.BAD_LABEL


def test_a_model_with_a_large_pickle_keeps_its_good_state_less_often() -> None:
    watch = ModelWatch(every=1000)
    watch.keep(b"\0" * 3_000, version=1)  # a linear model: every 1,000 labeled events
    assert watch.interval == 1000 and watch.since_good == 0
    watch.keep(b"\0" * 700_000, version=1)  # a grown tree: about 1 us per event
    assert watch.interval == 10_000 == 1000 * (700_000 // (GOOD_STATE_BYTES_PER_EVENT * 1000))
    watch.load_state_dict(watch.state_dict())  # restored: a good state at the next step
    assert watch.since_good == watch.interval == 1000


def test_a_tree_engine_spaces_its_good_states_by_the_size_of_its_pickle() -> None:
    from streamheal.dev.bench import bench_events

    events = bench_events(6000)
    engine = Engine(Config().replace(model={"name": "hoeffding_tree"}))
    engine.process(events)
    watch = engine.watch
    assert watch.good is not None and watch.interval == 1000 * max(
        1, len(watch.good) // (GOOD_STATE_BYTES_PER_EVENT * 1000)
    )
    assert watch.since_good < watch.interval
