"""The batch matrix (streamheal.block) changes nothing but speed.

When a batch's features become one matrix, the guard checks them all at once, the
mini-batch model gets its frame from it and the drift suite skips encoding them again.
Each of those must give exactly what the careful path gives, for any batch a hostile
producer can send.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamheal import block as block_module
from streamheal import engine as engine_module
from streamheal import models
from streamheal.block import FeatureBlock
from streamheal.config import Config, GuardsConfig
from streamheal.detectors.reference import Reference
from streamheal.engine import Engine
from streamheal.events import Event, Source
from streamheal.guards import InputGuard

NAMES = ["a", "b", "c"]
cell = st.one_of(
    st.floats(-50, 50),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-100, 100),
    st.integers(min_value=10**300, max_value=10**400),
    st.booleans(),
    st.none(),
    st.sampled_from(["1.5", "x", ""]),
)
row = st.dictionaries(st.sampled_from([*NAMES, "d"]), cell, min_size=1, max_size=4)
plain_row = st.fixed_dictionaries({n: st.floats(-50, 50) for n in NAMES})


class _Fancy(float):
    """A float subclass: the C pass leaves it to the Python path."""


odd_cell = st.one_of(cell, st.builds(_Fancy, st.floats(-5, 5)), st.just(2**70), st.just(-(2**63)))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(
        st.one_of(
            row,
            plain_row,
            st.dictionaries(st.sampled_from([*NAMES, "d"]), odd_cell, min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_the_compiled_pass_makes_the_block_the_python_path_makes(rows) -> None:
    compiled = block_module.compiled
    if compiled is None:
        pytest.skip("built without the C extension")
    fast = FeatureBlock.of(rows)
    block_module.compiled = None
    try:
        slow = FeatureBlock.of(rows)
    finally:
        block_module.compiled = compiled
    assert (fast is None) == (slow is None)
    if fast is not None:
        assert fast.names == slow.names
        assert fast.matrix.tobytes() == slow.matrix.tobytes()  # bit for bit: -0.0, NaN


def trained_guard() -> InputGuard:
    guard = InputGuard(GuardsConfig(reference_size=40))
    for i in range(40):
        guard.admit({"a": float(i), "b": float(-i), "c": float(i % 7)})
    return guard


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.one_of(row, plain_row), min_size=1, max_size=8))
def test_a_block_holds_exactly_the_numbers_the_careful_encoding_reads(rows) -> None:
    block = FeatureBlock.of(rows)
    if block is None:
        return
    assert all(list(r) == list(block.names) or set(r) == set(block.names) for r in rows)
    careful = Reference({n: np.zeros(1) for n in block.names}, {}, {}, 1, 2).numeric_matrix(rows)
    np.testing.assert_array_equal(block.matrix, careful)
    assert block.take(rows[::-1], list(reversed(block.names))).tolist() == [
        [float(r[n]) for n in reversed(block.names)] for r in rows[::-1]
    ]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    size=st.integers(1, 12),
    asks=st.lists(
        st.tuples(
            st.sampled_from(["next", "head", "reversed", "copy"]),
            st.integers(0, 12),
            st.permutations(["a", "b", "c"]),
            st.integers(1, 3),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_a_block_takes_any_rows_in_any_order_and_gives_a_copy(size, asks) -> None:
    # Runs (found fast: from where the last ask ended, or from the first row), rows out
    # of order, and rows that are not the block's (equal dicts), one ask after another.
    rows = [{"a": float(i), "b": -2.0 * i, "c": i % 3} for i in range(size)]
    block = FeatureBlock.of(rows)
    end = 0
    for kind, count, names, width in asks:
        if kind == "next":
            picked = rows[end : end + count]
            end = min(end + count, size) if picked else end
        elif kind == "head":
            picked = rows[:count]
            end = min(count, size)
        elif kind == "reversed":
            picked = rows[:count][::-1]
        else:
            picked = [dict(r) for r in rows[:count]]
        names = names[:width]
        taken = block.take(picked, names)
        if kind == "copy" and picked:
            assert taken is None
            continue
        assert taken.tolist() == [[float(r[n]) for n in names] for r in picked]
        taken[...] = np.nan  # the caller's own copy
        assert not np.isnan(block.matrix).any()


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.one_of(row, plain_row), min_size=1, max_size=8))
def test_the_guard_skips_exactly_the_rows_admit_would_change_nothing_for(rows) -> None:
    # Admitting only the rows unchanged_rows does not clear ends in the same state, with
    # the same rows, as admitting every row.
    block = FeatureBlock.of(rows)
    if block is None:
        return
    every, skipping = trained_guard(), trained_guard()
    unchanged = skipping.unchanged_rows(block)
    if unchanged is None:
        return
    admitted_all = [every.admit(r) for r in rows]
    admitted_some = [
        r if keep else skipping.admit(r) for r, keep in zip(rows, unchanged, strict=True)
    ]
    assert admitted_some == admitted_all
    for r, keep, out in zip(rows, unchanged, admitted_all, strict=True):
        assert not keep or out is r

    def state(guard: InputGuard) -> str:  # _fast only caches the last key order
        return repr({k: v for k, v in vars(guard).items() if k != "_fast"})

    assert state(skipping) == state(every)


def test_batches_that_cannot_be_one_matrix_are_refused() -> None:
    assert FeatureBlock.of([{"a": 1.0}, {"a": "1.5"}]) is None  # numpy would parse it
    assert FeatureBlock.of([{"a": 1.0}, {"a": None}]) is None
    assert FeatureBlock.of([{"a": 1.0}, {"b": 1.0}]) is None  # same width, other name
    assert FeatureBlock.of([{"a": 1.0}, {"a": 1.0, "b": 2.0}]) is None
    assert FeatureBlock.of([{"a": 10**400}]) is None  # beyond a float
    assert FeatureBlock.of([{}]) is None
    assert FeatureBlock.of([]) is None
    shuffled = FeatureBlock.of([{"a": 1.0, "b": 2.0}, {"b": 4.0, "a": 3.0}])
    assert shuffled is not None and shuffled.matrix.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert shuffled.take([{"a": 1.0}], ["a"]) is None  # not one of its rows


def test_the_guard_refuses_a_block_with_a_value_out_of_bounds_or_nan() -> None:
    guard = trained_guard()
    inside = [{"a": 5.0, "b": -3.0, "c": 2.0}]
    assert guard.unchanged_rows(FeatureBlock.of(inside)) == [True]
    assert guard.unchanged_rows(FeatureBlock.of([{"c": 2.0, "a": 5.0, "b": -3.0}])) == [True]
    for bad in (1e308, math.nan, math.inf):
        rows = [*inside, {"a": bad, "b": -3.0, "c": 2.0}]
        assert guard.unchanged_rows(FeatureBlock.of(rows)) == [True, False]
    assert guard.unchanged_rows(FeatureBlock.of([{"a": 5.0, "b": -3.0}])) is None


def test_mini_batch_frames_from_the_block_equal_the_careful_frames() -> None:
    rng = np.random.default_rng(3)
    later = [{"b": int(y), "a": float(x)} for x, y in rng.normal(size=(30, 2)) * 10]
    # The batch's matrix holds them in another row order and another column order.
    block = FeatureBlock.of([{"a": 0.0, "b": 0}, *later[::-1]])
    from_block = models.feature_frame(later, block)
    careful = models.feature_frame(later)
    assert list(from_block.columns) == list(careful.columns) == ["b", "a"]
    assert from_block.dtypes.tolist() == careful.dtypes.tolist()
    np.testing.assert_array_equal(from_block.to_numpy(), careful.to_numpy())


def _hostile_stream(seed: int) -> list[Event]:
    """A drift stream with the odd hostile value: a string, a null, a huge number, a new
    name, an int, a bool, keys in another order, and a bad label now and then."""
    from streamheal.scenarios import breast_cancer

    rng = np.random.default_rng(seed)
    scenario = breast_cancer(events=6000, seed=seed, label_delay=20, drift_at=3500)
    events = []
    for i, e in enumerate(scenario.events):
        features, missing, label = e.get("features"), (), e.get("label")
        if features is not None and rng.random() < 0.02:
            features = dict(features)
            name = sorted(features)[int(rng.integers(len(features)))]
            kind = int(rng.integers(7))
            if kind == 0:
                features[name] = "1.5"
            elif kind == 1:
                del features[name]
                missing = (name,)
            elif kind == 2:
                features[name] = 1e300
            elif kind == 3:
                features[f"new_{i % 50}"] = 1.0
            elif kind == 4:
                features[name] = int(features[name])
            elif kind == 5:
                features[name] = True
            else:
                features = dict(reversed(list(features.items())))
        if label is not None and rng.random() < 0.005:
            label = 7  # not 0/1: dead-lettered by the binary model
        events.append(Event(e["id"], e["ts"], features, label, missing, Source("t", 0, i), b"x"))
    return events


def _outputs(events: list[Event], mode: str) -> list[str]:
    engine = Engine(Config().replace(engine={"mode": mode}))
    out = []
    for i in range(0, len(events), 700):
        out += [repr(o) for o in engine.process(events[i : i + 700])]
    return out


def test_the_engine_gives_the_same_outputs_with_and_without_the_matrix(monkeypatch) -> None:
    # The matrix is an optimization: forcing every batch down the careful path (no block)
    # must change no output, hostile values included.
    events = _hostile_stream(seed=5)
    with_block = {mode: _outputs(events, mode) for mode in ("per_event", "mini_batch")}

    class NoBlock(FeatureBlock):
        @classmethod
        def of(cls, rows):  # type: ignore[override]
            return None

    monkeypatch.setattr(engine_module, "FeatureBlock", NoBlock)
    for mode, expected in with_block.items():
        assert _outputs(events, mode) == expected, mode


@pytest.mark.parametrize("label_delay, size", [(0, 700), (20, 2000)])
def test_the_suite_reads_the_same_covariate_scores_from_the_block(monkeypatch, label_delay, size):
    # Clean numbers, so every batch has its matrix, a drift, and a bad label now and then
    # (its row is in the block but never observed: the checks around it are no run). The
    # detectors' state must match the careful encoding's after every batch, not only the
    # records (a stationary stretch writes none). The reference rolls on at the drift, so
    # a new covariate monitor starts mid-batch and must not read the old one's encoding.
    from streamheal.scenarios import breast_cancer

    scenario = breast_cancer(events=6000, seed=2, label_delay=label_delay, drift_at=3000)
    events = [
        Event(e["id"], e["ts"], e.get("features"), 7 if i % 301 == 5 else e.get("label"), (),
              Source("t", 0, i), b"x")
        for i, e in enumerate(scenario.events)
    ]  # fmt: skip

    class NoBlock(FeatureBlock):
        @classmethod
        def of(cls, rows):  # type: ignore[override]
            return None

    for mode in ("per_event", "mini_batch"):
        config = Config().replace(
            engine={"mode": mode}, detectors={"roll_reference_on_drift": True}
        )
        engines = [Engine(config) for _ in range(2)]
        monitors = set()
        for start in range(0, len(events), size):
            batch = events[start : start + size]
            with monkeypatch.context() as patched:
                patched.setattr(engine_module, "FeatureBlock", NoBlock)
                careful = [repr(o) for o in engines[1].process(batch)]
            assert [repr(o) for o in engines[0].process(batch)] == careful, (mode, start)
            a, b = (engine.drift.covariate for engine in engines)
            monitors.add(id(a))
            if a is not None:
                for name in ("upper", "lower", "peak", "total"):
                    np.testing.assert_array_equal(getattr(a.cusum, name), getattr(b.cusum, name))
                np.testing.assert_array_equal(a.numeric_window, b.numeric_window)
        assert len(monitors - {id(None)}) >= 2  # the reference rolled on


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=3), min_size=1, max_size=30),
    st.lists(
        st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=4, max_size=4),
        min_size=1,
        max_size=30,
    ),
)
def test_the_scalers_pandas_path_gives_rivers_frame(learned, scored) -> None:
    # The default model's scaler transforms a float64 DataFrame without River's narwhals
    # wrapping: the same frame, to the bit, as River's own transform_many (an unseen
    # column "d", constant columns, NaN cells, an index that is not 0..n-1).
    import pandas as pd
    from river import preprocessing

    scaler = models._StandardScaler()
    scaler.learn_many(pd.DataFrame(learned, columns=["a", "b", "c"]))
    frame = pd.DataFrame(scored, columns=["c", "a", "d", "b"], index=range(7, 7 + len(scored)))
    ours = scaler.transform_many(frame)
    rivers = preprocessing.StandardScaler.transform_many(scaler, frame)
    pd.testing.assert_frame_equal(ours, rivers, check_exact=True)
    assert ours.to_numpy().tobytes() == rivers.to_numpy().tobytes()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3), min_size=0, max_size=40),
    st.lists(st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=4), min_size=1, max_size=40),
    st.booleans(),
)
def test_the_default_models_batch_probabilities_are_rivers_bit_for_bit(
    learned, scored, one_by_one
) -> None:
    # Mini-batch scoring of the default model computes the scaler's and the classifier's
    # arithmetic on the matrix: River's pipeline must give the same bits (a fresh model,
    # constant columns, an unseen column "d", a non-default index, learned in a batch or
    # row by row).
    import pandas as pd

    model = models.build_model(Config().model, seed=1)
    labels = [bool(i % 3) for i in range(len(learned))]
    if learned and one_by_one:
        for row, label in zip(learned, labels, strict=True):
            model.learn_one(dict(zip("abc", row, strict=True)), label)
    elif learned:
        model.learn_many(pd.DataFrame(learned, columns=["a", "b", "c"]), pd.Series(labels))
    frame = pd.DataFrame(scored, columns=["c", "a", "d", "b"], index=range(3, 3 + len(scored)))
    ours = models.default_proba_many(model, frame)
    rivers = model.predict_proba_many(frame)
    assert list(rivers.columns) == [False, True]
    assert ours.tobytes() == rivers.to_numpy().tobytes()


def test_the_default_models_batch_probabilities_are_rivers_on_batch_sized_frames() -> None:
    # At a batch's size the matrix-vector product goes through BLAS, whose summation
    # order depends on the matrix's memory layout: the fast path must hand the classifier
    # the layout River's frames do (2,000 x 30, as the benchmark's batches).
    import pandas as pd

    rng = np.random.default_rng(4)
    names = [f"f{j}" for j in range(30)]
    scales = 10 ** rng.uniform(-2, 3, size=30)
    model = models.build_model(Config().model, seed=1)
    for _ in range(3):
        learned = pd.DataFrame(rng.normal(size=(2000, 30)) * scales, columns=names)
        model.learn_many(learned, pd.Series(rng.random(2000) < 0.4))
        frame = pd.DataFrame(rng.normal(size=(2000, 30)) * scales, columns=names)
        ours = models.default_proba_many(model, frame)
        assert ours.tobytes() == model.predict_proba_many(frame).to_numpy().tobytes()


def test_only_the_default_model_on_numbers_takes_the_matrix_path() -> None:
    import pandas as pd

    numbers = pd.DataFrame({"a": [1.0, 2.0], "b": [0.5, -1.0]})
    default = models.build_model(Config().model, seed=1)
    assert models.default_proba_many(default, numbers) is not None
    assert models.default_proba_many(default, numbers.assign(s=["x", "y"])) is None
    assert models.default_proba_many(default, numbers.astype({"a": "int64"})) is None
    tree = models.build_model(Config().model.__class__(name="hoeffding_tree"), seed=1)
    assert models.default_proba_many(tree, numbers) is None
    several = Config().model.__class__(name="logistic_regression", params={"multiclass": True})
    assert models.default_proba_many(models.build_model(several, seed=1), numbers) is None


def test_the_unions_pandas_path_gives_rivers_frame() -> None:
    # The default model's union returns the one branch with columns as it is, where River
    # concatenated through narwhals: the same frame for numbers only, strings only, and
    # (through River's concat) both.
    import pandas as pd
    from river import compose

    model = models.build_model(Config().model, seed=1)
    union = model.steps["TransformerUnion"]
    assert isinstance(union, models._Union)
    numbers = pd.DataFrame({"a": [1.0, 2.5, -3.0], "b": [0.5, 0.25, 8.0]}, index=[4, 5, 6])
    strings = pd.DataFrame({"s": ["x", "y", "x"]}, index=[4, 5, 6])
    both = pd.concat([numbers, strings], axis=1)
    for frame in (numbers, both):
        model.learn_many(frame, pd.Series([True, False, True], index=frame.index))
    for frame in (numbers, strings, both):
        ours = union.transform_many(frame)
        rivers = compose.TransformerUnion.transform_many(union, frame)
        pd.testing.assert_frame_equal(ours, rivers, check_exact=True)


class _Text(str):
    """A str subclass: a string all the same."""


any_value = st.one_of(
    st.floats(allow_nan=True),
    st.integers(),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.builds(_Text, st.text(max_size=3)),
    st.builds(_Fancy, st.floats(-5, 5)),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.fractions(),
    st.complex_numbers(allow_nan=False),
    st.builds(np.float32, st.floats(-5, 5, width=32)),
    st.builds(np.int64, st.integers(-5, 5)),
    st.lists(st.integers(), max_size=2),
)


@given(st.dictionaries(st.text(min_size=1, max_size=3), any_value, max_size=6))
def test_the_type_selectors_take_what_rivers_select_type_takes(x) -> None:
    # The default model's selectors take an exact float or int on its type alone; River's
    # SelectType asks isinstance of every value (slow against the numbers.Number ABC).
    import numbers

    from river import compose

    pairs = ((models._SelectNumbers(), numbers.Number), (models._SelectStrings(), str))
    for ours, kind in pairs:
        rivers = compose.SelectType(kind).transform_one(x)
        assert ours.transform_one(x) == rivers
        assert list(ours.transform_one(x)) == list(rivers)


OUTLIERS = [1e12, -1e12, 1e300, math.inf, -math.inf, math.nan, -0.0, 0.0]


def learning_rows(names: list[str], size: int, seed: int, outliers: float, ints: bool) -> list:
    """Rows as a stream might send them while a guard learns: ordinary values, a share
    ``outliers`` of them extreme (each kind of clip, NaN included), and with ``ints`` now
    and then an int (then the block goes row by row)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(size):
        row = {}
        for name in names:
            value = float(rng.normal(0, 20))
            if rng.random() < outliers:
                value = OUTLIERS[rng.integers(len(OUTLIERS))]
            if ints and rng.random() < 0.05:
                value = int(rng.integers(-3, 3))
            row[name] = value
        rows.append(row)
    return rows


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    reference_size=st.integers(10, 150),
    cap=st.integers(2, 5),
    batches=st.lists(
        st.tuples(
            st.lists(st.sampled_from("abcde"), min_size=1, max_size=4, unique=True),
            st.integers(1, 120),
            st.integers(0, 2**32 - 1),
            st.sampled_from([0.0, 0.03, 0.2]),
            st.booleans(),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_a_learning_guard_admits_a_block_as_it_admits_its_rows_one_by_one(
    reference_size, cap, batches
) -> None:
    # admit_learning against admit() row by row, over batches that cross the provisional
    # and final bounds at any row: the same admitted rows (the same objects where nothing
    # changed), the same first clips at the same rows, the same state afterwards.
    cfg = GuardsConfig(reference_size=reference_size, max_distinct_features=cap)
    at_once, one_by_one = InputGuard(cfg), InputGuard(cfg)
    for names, size, seed, outliers, ints in batches:
        rows = learning_rows(names, size, seed, outliers, ints)
        expected, firsts = [], {}
        for i, row in enumerate(rows):
            before = len(one_by_one.first_clip)
            expected.append(one_by_one.admit(row))
            if len(one_by_one.first_clip) > before:
                firsts[i] = one_by_one.first_clip[before:]
        block = FeatureBlock.of(rows)
        learned = None if block is None else at_once.admit_learning(block)
        if learned is None:
            got = [at_once.admit(row) for row in rows]
        else:
            got = [learned.replaced.get(i, row) for i, row in enumerate(rows)]
            assert learned.first_clips == firsts
        assert repr(got) == repr(expected)  # as written: NaN equals nothing
        assert [g is r for g, r in zip(got, rows, strict=True)] == [
            e is r for e, r in zip(expected, rows, strict=True)
        ]
        assert repr(vars(at_once)) == repr(vars(one_by_one))


def test_a_new_partitions_first_rows_go_through_the_guard_as_a_block() -> None:
    # The case admit_learning is for: a fresh guard, one layout of floats, no missing name.
    guard = InputGuard(GuardsConfig(reference_size=100))
    rows = learning_rows(list("abc"), 150, seed=1, outliers=0.05, ints=False)
    learned = guard.admit_learning(FeatureBlock.of(rows))
    assert learned is not None and learned.replaced and learned.first_clips
    assert all(type(guard.features[n]) is tuple for n in "abc")
    assert guard.admit_learning(FeatureBlock.of(rows)) is None  # bounded: nothing to learn
