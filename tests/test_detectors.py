"""Drift detectors: exactness against scipy and the textbook, each drift kind on a stream
with a known change point, silence on stationary streams, robustness, checkpoints."""

from __future__ import annotations

import itertools
import math
import pickle
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from river.datasets import synth

from streamheal.config import Config, DetectorsConfig
from streamheal.detectors import cusum as cusum_module
from streamheal.detectors import stats
from streamheal.detectors.alarm import Alarm
from streamheal.detectors.base import Level
from streamheal.detectors.concept import ErrorMonitor, rise_start
from streamheal.detectors.cusum import VectorCusum
from streamheal.detectors.suite import Drift, DriftSuite, Observation
from streamheal.engine import Engine
from streamheal.events import Event, Source
from streamheal.kafka.records import drift_record
from streamheal.policy import Action
from streamheal.scenarios import breast_cancer, prior_shift
from tests.conftest import events_from, scenario_events

# ---------------------------------------------------------------- helpers


def drifts(events: list[Event], config: Config | None = None, batch: int = 500) -> list[Drift]:
    engine = Engine(config or Config())
    found = []
    for i in range(0, len(events), batch):
        found += [o for o in engine.process(events[i : i + batch]) if isinstance(o, Drift)]
    return found


def firing(found: list[Drift], **match) -> list[Drift]:
    return [
        d
        for d in found
        if d.status == "firing" and all(getattr(d, k) == v for k, v in match.items())
    ]


def gaussian_rows(
    n: int,
    seed: int,
    shift_at: int | None = None,
    feature: int = 7,
    shift: float = 1.0,
    features: int = 30,
):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=features)
    for i in range(n):
        x = rng.normal(size=features)
        if shift_at is not None and i >= shift_at:
            x[feature] += shift
        y = int(x @ weights + rng.normal() > 0)
        yield {f"f{j:02d}": float(v) for j, v in enumerate(x)}, y


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "rounded"),
    [
        (500, 500, 0.0, False),
        (500, 300, 0.2, False),
        (40, 70, 0.5, False),
        (500, 500, 0.1, True),
        (12000, 300, 0.1, False),
        (1000, 11000, 0.05, False),
    ],
)
def test_ks_matches_scipy_ks_2samp_to_1e_6(n1: int, n2: int, shift: float, rounded: bool) -> None:
    rng = np.random.default_rng(n1 + n2)
    a, b = rng.normal(size=n1), rng.normal(shift, 1.0, size=n2)
    if rounded:  # ties within and across samples
        a, b = np.round(a, 1), np.round(b, 1)
    d, p = stats.ks_2samp(np.sort(a), b)
    expected = scipy.stats.ks_2samp(a, b)
    assert abs(d - expected.statistic) < 1e-12
    assert abs(p - expected.pvalue) < 1e-6


@given(st.integers(0, 2**32 - 1), st.integers(2, 60), st.integers(2, 60))
def test_ks_columns_give_scipys_statistic_for_every_selected_column(
    seed: int, n1: int, n2: int
) -> None:
    # Few distinct values: ties within and across the samples are the rule, not the exception.
    rng = np.random.default_rng(seed)
    reference = np.sort(rng.integers(0, 6, (n1, 4)).astype(float), axis=0)
    window = rng.integers(0, 7, (n2, 4)).astype(float) + rng.choice([0.0, 0.5], (n2, 4))
    which = rng.random(4) < 0.6
    if not which.any():
        which[0] = True
    got = stats.KsColumns(reference).statistics(window[:, which], which=which)
    expected = [
        scipy.stats.ks_2samp(reference[:, j], window[:, j]).statistic for j in np.flatnonzero(which)
    ]
    assert np.allclose(got, expected, rtol=0, atol=1e-12)


@given(st.integers(0, 2**32 - 1), st.integers(2, 300), st.integers(2, 300), st.floats(0, 1))
def test_ks_upper_bounds_never_fall_below_the_statistic(
    seed: int, n1: int, n2: int, shift: float
) -> None:
    # The bound proves a quiet check clear without the exact statistic: it must hold on
    # every sample, with ties and with a reference longer than the bound's grid.
    rng = np.random.default_rng(seed)
    reference = np.sort(np.round(rng.normal(size=(n1, 3)), 1), axis=0)
    window = np.sort(np.round(rng.normal(shift, 1, size=(n2, 3)), 1).T, axis=1)
    ready = stats.KsColumns(reference)
    exact = ready.statistics_of_sorted(window)
    bounds = ready.upper_bounds(window)
    assert (bounds >= exact - 1e-15).all()
    # On the KS lattice, so its p-value comes from the same cache.
    assert np.allclose(bounds * n1 * n2, np.round(bounds * n1 * n2), rtol=0, atol=1e-6)


@given(st.integers(0, 2**32 - 1), st.integers(1, 80))
def test_psi_of_sorted_rows_equals_psi_of_the_window(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    reference = np.sort(rng.normal(size=(200, 3)), axis=0)
    edges = [stats.quantile_edges(reference[:, j], 10) for j in range(3)]
    width = max(len(e) for e in edges)
    padded = np.full((3, width), np.inf)
    counts = np.zeros((3, width + 1), dtype=np.int64)
    for j, e in enumerate(edges):
        padded[j, : len(e)] = e
        counts[j, : len(e) + 1] = stats.binned_counts(e, reference[:, j])
    window = rng.normal(0.3, 1.2, size=(n, 3))
    window[rng.random((n, 3)) < 0.2] = np.nan
    expected = [  # the definition: PSI of each column's finite values, column by column
        stats.psi(counts[j, : len(e) + 1], stats.binned_counts(e, col[~np.isnan(col)]))
        for j, (e, col) in enumerate(zip(edges, window.T, strict=True))
    ]
    got = stats.psi_of_sorted(padded, counts, np.sort(window.T, axis=1))
    assert np.allclose(got, expected, rtol=0, atol=1e-12)


def test_psi_matches_the_textbook_formula_with_epsilon_for_empty_bins() -> None:
    reference = np.array([30, 50, 20, 0])
    current = np.array([10, 40, 30, 20])
    r = reference / reference.sum()
    c = current / current.sum()
    r[r == 0] = stats.PSI_EPSILON
    expected = sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))
    assert stats.psi(reference, current) == pytest.approx(expected, abs=1e-12)
    assert stats.psi(reference, reference) == 0.0


def test_psi_bins_are_reference_quantiles() -> None:
    reference = np.sort(np.random.default_rng(1).normal(size=1000))
    edges = stats.quantile_edges(reference, 10)
    counts = stats.binned_counts(edges, reference)
    assert len(counts) == 10 and counts.min() >= 99 and counts.max() <= 101


def test_chi_square_matches_scipy_contingency() -> None:
    a, b = np.array([40, 35, 25]), np.array([20, 30, 50])
    expected = scipy.stats.chi2_contingency(np.vstack([a, b]), correction=False)
    statistic, p = stats.chi2_homogeneity(a, b)
    assert statistic == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    many, p_many = stats.chi2_2x2_many(np.array([40, 3]), 100, np.array([80, 3]), 100)
    assert many[0] == pytest.approx(
        stats.chi2_homogeneity(np.array([60, 40]), np.array([20, 80]))[0]
    )
    assert p_many[1] == 1.0  # identical rates


def naive_cusum(scores: np.ndarray, k: float, prior: float) -> np.ndarray:
    """The textbook recursion, one event and one series at a time."""
    n, m = scores.shape
    upper, lower, total, count = np.zeros(m), np.zeros(m), np.zeros(m), np.full(m, prior)
    path = np.zeros((n, m))
    for t in range(n):
        for j in range(m):
            z = scores[t, j]
            if math.isnan(z):
                path[t, j] = max(upper[j], lower[j])
                continue
            total[j] += z
            count[j] += 1
            deviation = z - total[j] / count[j]
            upper[j] = max(0.0, upper[j] + deviation - k)
            lower[j] = max(0.0, lower[j] - deviation - k)
            path[t, j] = max(upper[j], lower[j])
    return path


def test_vectorized_cusum_equals_the_per_event_recursion_whatever_the_chunks() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(400, 5))
    scores[200:, 2] += 1.5
    scores[rng.random(scores.shape) < 0.05] = np.nan
    expected = naive_cusum(scores, k=0.25, prior=50)
    for chunks in ([400], [100, 300], [1] * 400, [37, 63, 100, 200]):
        cusum = VectorCusum(5, k=0.25, threshold=1e9, prior_weight=50)
        start = 0
        for size in chunks:
            cusum.begin(scores[start : start + size], start)
            for piece in range(0, size, 50):
                cusum.advance(min(50, size - piece))
            start += size
            np.testing.assert_allclose(cusum.statistic, expected[start - 1], atol=1e-9)


def _cusum_run(compiled_loops: object, seed: int) -> list:
    """Every observable of a VectorCusum driven through chunks, advances, checks (with
    caps) and re-arms, with ``cusum.compiled`` set to ``compiled_loops``."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 8))
    cusum_module.compiled, saved = compiled_loops, cusum_module.compiled
    try:
        cusum = VectorCusum(m, k=0.25, threshold=4.0, prior_weight=int(rng.integers(1, 60)))
        seen, at = [], 0
        for _ in range(12):
            size = int(rng.integers(1, 120))
            scores = rng.normal(size=(size, m)) + rng.choice([0.0, 1.5], size=m)
            if rng.random() < 0.3:
                scores[rng.random(scores.shape) < 0.05] = np.nan
            indices = None if rng.random() < 0.5 else np.sort(rng.integers(at, at + 200, size))
            cusum.begin(scores, at, indices)
            left = size
            while left:
                step = min(left, int(rng.integers(1, 40)))
                seen.append(cusum.advance(step).tolist())
                left -= step
                seen.append((cusum.level().tolist(), cusum.last_zero.tolist()))
                if rng.random() < 0.5:
                    cusum.end_check()  # caps a long excursion, then walks the rest again
                if rng.random() < 0.2:
                    cusum.reset_series(int(rng.integers(m)))
            at += size + 200
            seen.append(pickle.dumps((cusum.upper, cusum.lower, cusum.peak, cusum.total)))
        return seen
    finally:
        cusum_module.compiled = saved


@pytest.mark.skipif(cusum_module.compiled is None, reason="the C loops were not built")
def test_the_compiled_cusum_loops_give_numpys_numbers_bit_for_bit() -> None:
    # Bit for bit, not approximately: a restarted worker, a replay and a machine without a
    # C compiler must all cross a threshold at the same event.
    for seed in range(40):
        assert _cusum_run(cusum_module.compiled, seed) == _cusum_run(None, seed), seed


@pytest.mark.skipif(cusum_module.compiled is None, reason="the C loops were not built")
def test_the_compiled_walk_propagates_nan_as_numpys_minimum_and_maximum() -> None:
    # A NaN in the increments or the state must come out of the path, its peak and its
    # last row exactly where numpy's minimum.accumulate and max put it.
    rng = np.random.default_rng(0)
    n, width = 50, 6
    for trial in range(200):
        cumulative = rng.normal(size=(n, width)).cumsum(axis=0)
        cumulative[rng.random((n, width)) < 0.05] = np.nan
        state = rng.normal(size=width)
        state[rng.random(width) < 0.2] = np.nan
        row = int(rng.integers(0, n - 1))
        walk = (cumulative[row:] - cumulative[row - 1] if row else cumulative[row:]) + state
        floor = np.minimum.accumulate(walk, axis=0)
        walk -= np.minimum(floor, 0.0)
        indices = np.arange(row, n, dtype=np.int64)[:, None]
        zeros, moved = np.zeros(width, dtype=np.int64), np.empty(width, dtype=np.int64)
        peaks, end, carried = np.empty(width), np.empty(width), np.empty(width)
        cusum_module.compiled.walk_summarize(
            cumulative, row, state, carried, row, n - row, indices, zeros, moved, peaks, end,
            n, width,
        )  # fmt: skip
        assert np.array_equal(end, walk[-1], equal_nan=True), trial
        assert np.array_equal(peaks, walk.max(axis=0), equal_nan=True), trial


@given(
    st.lists(
        st.one_of(
            st.floats(-1e12, 1e12, allow_subnormal=True),
            st.sampled_from([-0.0, 0.0, 1.0, 0.1, 1e-300]),  # ties, signed zeros, tiny steps
        ),
        min_size=1,
        max_size=700,
    ),
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12),
)
def test_sorted_quantiles_are_numpys_quantiles_bit_for_bit(values, extra_q) -> None:
    # The reference's bins and robust scores and the guard's bounds come from it: a
    # different last bit would move a PSI bin edge or a clipping bound. Equal as floats
    # is equal bit for bit here (finite values), but for the sign of a zero: numpy's
    # partition may put -0.0 and 0.0, which tie, either way round.
    ordered = np.sort(np.array(values))
    for q in ([0.01, 0.5, 0.99], [0.25, 0.5, 0.75], np.linspace(0, 1, 11)[1:-1], extra_q, [0, 1]):
        ours, numpys = stats.sorted_quantiles(ordered, q), np.quantile(ordered, q)
        assert ours.dtype == numpys.dtype and ours.shape == numpys.shape
        assert (ours == numpys).all(), (ours, numpys)


@pytest.mark.skipif(stats.compiled is None, reason="the C loops were not built")
@given(
    st.lists(
        st.lists(st.sampled_from([-np.inf, -1.0, -0.0, 0.0, 0.5, 1.0, np.inf, np.nan]), max_size=9),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.sampled_from([-np.inf, -1.0, 0.0, 0.25, 1.0, 2.0, np.inf, np.nan]), max_size=6),
    st.sampled_from(["left", "right"]),
)
def test_compiled_row_searches_answer_as_numpys_searchsorted(
    rows: list[list[float]], needles: list[float], side: str
) -> None:
    # Ties, signed zeros, infinities and NaN (sorted last, as np.sort leaves them).
    width = max(len(r) for r in rows)
    haystack = np.sort(np.array([r + [np.nan] * (width - len(r)) for r in rows]), axis=1)
    keys = np.tile(np.array(needles, dtype=float), (len(rows), 1))
    expected = [
        np.searchsorted(h, k, side=side).tolist() for h, k in zip(haystack, keys, strict=True)
    ]
    assert stats.searchsorted_rows(haystack, keys, side).tolist() == expected


@pytest.mark.skipif(stats.compiled is None, reason="the C loops were not built")
@given(st.integers(0, 2**32 - 1), st.integers(2, 60), st.integers(1, 60))
def test_compiled_ks_statistics_are_numpys_bit_for_bit(seed: int, n1: int, n2: int) -> None:
    rng = np.random.default_rng(seed)
    reference = np.sort(rng.integers(0, 6, (n1, 5)).astype(float), axis=0)  # ties
    window = np.sort(rng.integers(0, 7, (5, n2)) + rng.choice([0.0, 0.5], (5, n2)), axis=1)
    which = rng.random(5) < 0.6
    which[int(rng.integers(5))] = True
    ready = stats.KsColumns(reference)
    compiled = ready.statistics_of_sorted(window[which], which=which)
    saved, stats.compiled = stats.compiled, None
    try:
        expected = ready.statistics_of_sorted(window[which], which=which)
    finally:
        stats.compiled = saved
    assert compiled.tolist() == expected.tolist()


# ---------------------------------------------------------------- each drift kind


def test_a_one_sd_shift_on_one_of_30_features_is_caught_on_that_feature() -> None:
    found = drifts(events_from(gaussian_rows(8000, seed=1, shift_at=4000)))
    covariate = firing(found, kind="covariate")
    assert covariate and all(d.feature == "f07" for d in covariate)
    first = min(d.confirmed_index for d in covariate)
    assert 4000 < first <= 4300
    assert firing(found, kind="covariate", detector="ks")  # the windowed test agrees


def test_the_breast_cancer_shift_is_confirmed_on_mean_radius_within_300_events() -> None:
    found = drifts(scenario_events(breast_cancer(events=4000, drift_at=2000, label_delay=50)))
    radius = firing(found, kind="covariate", feature="mean radius")
    assert radius, found
    first = min(radius, key=lambda d: d.confirmed_index)
    assert 2000 < first.confirmed_index <= 2300
    assert abs(first.started_index - 2000) <= 50  # the change point estimate
    assert all(d.feature == "mean radius" for d in firing(found, kind="covariate"))


def test_a_categorical_shift_and_unseen_categories_are_caught_without_crashing() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for i in range(10000):  # windowed checks every 2,500 events; 2 of 3 must raise
        colours = ["red", "blue"] if i < 3000 else ["red", "blue", "green", "teal"]
        p = [0.5, 0.5] if i < 3000 else [0.1, 0.3, 0.3, 0.3]
        x = {"a": float(rng.normal()), "colour": str(rng.choice(colours, p=p))}
        rows.append((x, int(x["a"] > 0)))
    found = drifts(events_from(iter(rows)))
    colour = firing(found, kind="covariate", feature="colour")
    assert {d.detector for d in colour} >= {"chi2", "psi"}
    assert "__unseen__" in colour[0].current


def test_a_class_balance_change_is_caught_on_labels_and_on_predicted_classes() -> None:
    found = drifts(scenario_events(prior_shift(events=20000, drift_at=10000, label_delay=20)))
    label = firing(found, kind="prior", signal="label")
    predicted = firing(found, kind="model", signal="predicted_class")
    assert label and min(d.confirmed_index for d in label) > 10000
    assert predicted and min(d.confirmed_index for d in predicted) > 10000
    assert label[0].reference["0"] < 0.5 < label[0].current["0"]  # 40/60 -> 80/20


def stagger_rows(n: int, switch_at: int) -> Iterator[tuple[dict, object]]:
    before = iter(synth.STAGGER(classification_function=0, seed=1))
    after = iter(synth.STAGGER(classification_function=2, seed=2))
    for i in range(n):
        yield next(before if i < switch_at else after)


def test_a_concept_swap_on_stagger_is_caught_on_the_error_stream() -> None:
    found = drifts(events_from(stagger_rows(8000, 4000), label_delay=10))
    concept = firing(found, kind="concept")
    assert concept and 4000 < min(d.confirmed_index for d in concept) <= 4600
    assert concept[0].current["error_rate"] > concept[0].reference["error_rate"]
    assert not firing(found, kind="covariate")  # the inputs did not change


def test_a_concept_swap_on_agrawal_is_caught() -> None:
    before = iter(synth.Agrawal(classification_function=0, seed=3))
    after = iter(synth.Agrawal(classification_function=4, seed=4))
    rows = (next(before if i < 5000 else after) for i in range(10000))
    found = drifts(events_from(rows), Config().replace(model={"name": "hoeffding_tree"}))
    assert firing(found, kind="concept")


def test_confidence_decay_is_caught_when_inputs_move_towards_the_boundary() -> None:
    rng = np.random.default_rng(9)

    def rows():
        for i in range(12000):
            y = int(rng.random() < 0.5)
            spread = 3.0 if i < 6000 else 0.4
            x = rng.normal((2 * y - 1) * spread, 1.0, size=4)
            yield {f"x{j}": float(v) for j, v in enumerate(x)}, y

    found = drifts(events_from(rows()))
    confidence = firing(found, kind="confidence")
    assert confidence and min(d.confirmed_index for d in confidence) > 6000
    decayed = confidence[0]
    assert decayed.extra["estimated_accuracy"] is not None
    assert "realized_accuracy" in decayed.extra


def test_a_jump_in_the_missing_rate_is_itself_a_drift() -> None:
    events = []
    for i, (x, y) in enumerate(gaussian_rows(8000, seed=4, features=5)):
        missing = ()
        if i >= 4000 and i % 2:
            del x["f03"]
            missing = ("f03",)
        events.append(Event(f"e{i}", float(i), x, y, missing, Source("t", 0, i), b""))
    found = drifts(events)
    assert firing(found, kind="covariate", signal="missing_rate", feature="f03")


# ---------------------------------------------------------------- silence


def test_a_learning_model_on_a_stationary_stream_keeps_model_and_confidence_silent() -> None:
    found = drifts(scenario_events(breast_cancer(events=30000, drift_at=30000, label_delay=25)))
    assert not firing(found, kind="model")
    assert not firing(found, kind="confidence")
    assert not firing(found, kind="concept")


@pytest.mark.slow
def test_200k_stationary_events_with_all_detectors_declare_at_most_10_drifts() -> None:
    # 0.5 false alarms per 10,000 events is the default budget: at most 10 in 200,000.
    found = drifts(events_from(gaussian_rows(200_000, seed=11)), batch=1000)
    assert len(firing(found)) <= 10, [(d.key, d.confirmed_index) for d in firing(found)]


# ---------------------------------------------------------------- robustness, state

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.sampled_from(["a", "b", "zz"]),
    st.integers(-5, 5),
)


@given(
    st.lists(
        st.dictionaries(st.sampled_from(["x", "y", "c"]), values, max_size=3),
        min_size=0,
        max_size=260,
    )
)
def test_no_input_raises_or_poisons_the_detectors(rows: list[dict]) -> None:
    cfg = DetectorsConfig(
        reference_size=50,
        window_size=50,
        check_every=10,
        window_check_every=50,
        model_check_every=50,
        model_sample_size=20,
    )
    suite = DriftSuite(cfg)
    seen = Observation(
        rows=rows,
        top=[0.5] * len(rows),
        offsets=list(range(len(rows))),
        learned_at=[i + 1 for i in range(len(rows))],
        labels=[i % 2 for i in range(len(rows))],
        correct=[int(i % 3 == 0) for i in range(len(rows))],
    )
    from streamheal.models import build_model

    model = build_model(Config().model, seed=1)
    suite.observe(seen, model, 1)
    suite.observe(Observation(), model, 1)  # an empty batch
    if suite.covariate is not None:
        cusum = suite.covariate.cusum
        assert np.isfinite(cusum.upper).all() and np.isfinite(cusum.lower).all()
        assert np.isfinite(cusum.total).all()


def streams_that_fire_and_resolve() -> list[list[Event]]:
    """Streams whose drifts fire and resolve alarms of every sequential kind (covariate,
    label and class mix, concept), so clear readings feed existing alarms too."""
    return [
        scenario_events(breast_cancer(events=9000, drift_at=4000, label_delay=30)),
        scenario_events(prior_shift(events=9000, drift_at=4500, label_delay=20)),
        events_from(stagger_rows(9000, 4000), label_delay=10),
    ]


def drifts_through(config: Config, events: list[Event]) -> tuple[list[dict], Engine]:
    """The drifts a fresh Engine declares and resolves on ``events`` (batches of 700), as
    dicts, and the Engine after them."""
    engine = Engine(config)
    found = []
    for i in range(0, len(events), 700):
        found += [o for o in engine.process(events[i : i + 700]) if isinstance(o, Drift)]
    return [vars(d) for d in found], engine


@pytest.mark.parametrize("mode", ["per_event", "mini_batch"])
def test_a_quiet_check_ends_as_the_full_check_would(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DriftSuite._quiet_check closes a check whose readings are all clear without making
    # them; the full check is its oracle.
    streams = streams_that_fire_and_resolve()
    config = Config().replace(engine={"mode": mode})
    taken = []
    quiet = DriftSuite._quiet_check

    def counted(self: DriftSuite) -> bool:
        taken.append(quiet(self))
        return taken[-1]

    def run(events: list[Event]) -> tuple[list, bytes]:
        drifts, engine = drifts_through(config, events)
        return drifts, pickle.dumps(engine.drift.alarms)

    for events in streams:
        monkeypatch.setattr(DriftSuite, "_quiet_check", counted)
        fast = run(events)
        monkeypatch.setattr(DriftSuite, "_quiet_check", lambda self: False)
        assert fast == run(events)
    statuses = {d["status"] for d in fast[0]}
    assert statuses == {"firing", "resolved"}
    assert any(taken) and not all(taken)  # both paths were taken


@given(
    st.lists(st.sampled_from([0, 0, 0, 1, 2]), max_size=80),
    st.integers(1, 3),
    st.integers(1, 4),
    st.sampled_from([0, 150, 1000]),
)
def test_an_alarm_dropped_at_rest_and_made_anew_changes_as_the_kept_one_would(
    levels: list[int], confirm: int, window: int, cooldown: int
) -> None:
    # The suite forgets an alarm at rest (Alarm.at_rest) and makes a new one at the next
    # reading that is not clear; clear readings in between are not fed to anything.
    kept = Alarm(confirm, window, cooldown)
    fresh: Alarm | None = None
    for check, level in enumerate(levels):
        index = 100 * check
        expected = kept.update(level, index)
        if fresh is None and level == Level.CLEAR:
            continue
        fresh = fresh or Alarm(confirm, window, cooldown)
        assert fresh.update(level, index) == expected
        assert fresh.first_raise_index == kept.first_raise_index
        if expected is None and level == Level.CLEAR and fresh.at_rest(index):
            fresh = None


@pytest.mark.parametrize("mode", ["per_event", "mini_batch"])
def test_alarms_at_rest_are_forgotten_without_changing_a_drift(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kept, they grew with every signal that ever read "hold" (59 after 100,000 stationary
    # bench events) and each took a reading and an update at every check.
    streams = streams_that_fire_and_resolve()
    config = Config().replace(engine={"mode": mode})

    def run(events: list[Event]) -> tuple[list, int]:
        drifts, engine = drifts_through(config, events)
        return drifts, len(engine.drift.alarms)

    for events in streams:
        forgetting, few = run(events)
        with monkeypatch.context() as kept:
            kept.setattr(DriftSuite, "_forget", lambda self, keys: None)
            keeping, many = run(events)
        assert forgetting == keeping
        assert few < many
    assert {d["status"] for d in forgetting} == {"firing", "resolved"}


def test_a_suite_restored_mid_stream_continues_exactly_like_the_uninterrupted_one() -> None:
    events = scenario_events(breast_cancer(events=6000, drift_at=3000, label_delay=30))
    whole = Engine(Config())
    whole_out = []
    for i in range(0, len(events), 400):
        whole_out += whole.process(events[i : i + 400])

    first = Engine(Config())
    resumed_out = []
    for i in range(0, 4000, 400):
        resumed_out += first.process(events[i : i + 400])
    second = Engine(Config())
    second.load_state_dict(pickle.loads(pickle.dumps(first.state_dict())))  # as a checkpoint
    for i in range(4000, len(events), 400):
        resumed_out += second.process(events[i : i + 400])
    assert [drift_record(d) for d in resumed_out if isinstance(d, Drift)] == [
        drift_record(d) for d in whole_out if isinstance(d, Drift)
    ]

    # Snapshot bytes of a model restored from pickle may differ from the original's (pickle
    # memo layout); what it does may not: compare the outputs with the bytes set aside.
    def comparable(outputs: list) -> list:
        return [replace(o, model=None) if isinstance(o, Action) else o for o in outputs]

    assert comparable(resumed_out) == comparable(whole_out)


@pytest.mark.parametrize("name", ["adwin", "hddm_a"])
def test_the_error_monitor_reads_the_same_whatever_the_chunks(name: str) -> None:
    # Its windows take a chunk at once; a firing must still compare the windows as they
    # stood at its own error, as one error at a time would.
    rng = np.random.default_rng(11)
    rates = np.r_[np.full(3000, 0.1), np.full(3000, 0.45), np.full(3000, 0.05)]
    errors = (rng.random(len(rates)) < rates).astype(int).tolist()

    def readings(chunk: int) -> list[tuple]:
        monitor = ErrorMonitor(name, 0.002, 300)
        monitor.watch_falls(True)
        seen = []
        for start in range(0, len(errors), 100):
            for piece in range(start, start + 100, chunk):
                end = min(piece + chunk, start + 100)
                monitor.observe(errors[piece:end], list(range(piece, end)))
            seen.append((monitor.fired_at, monitor.error_before))
            seen.append((monitor.fell_at, monitor.error_before_fall))
            monitor.fired_at = monitor.fell_at = None
        return seen

    one_by_one = readings(1)
    assert any(fired for fired, _ in one_by_one[::2]) and any(f for f, _ in one_by_one[1::2])
    assert readings(100) == one_by_one == readings(7)


def test_the_error_monitor_reads_river_adwins_windows_as_their_own_methods_would(
    monkeypatch,
) -> None:
    # The default detectors' fast path (their windows read directly) against River's
    # ADWIN methods: every rise, fall, start of the fall watch, and window, chunk by chunk.
    from streamheal.detectors import concept

    rng = np.random.default_rng(5)
    rates = np.r_[np.full(2000, 0.1), np.full(2000, 0.5), np.full(2000, 0.05), np.full(2000, 0.3)]
    errors = (rng.random(len(rates)) < rates).astype(int).tolist()
    cuts = np.cumsum(rng.integers(1, 150, size=len(errors)))
    cuts = [0, *cuts[cuts < len(errors)].tolist(), len(errors)]

    def readings() -> list[tuple]:
        monitor = ErrorMonitor("adwin", 0.002, 300, warning_delta=0.05)
        seen = []
        for start, end in itertools.pairwise(cuts):
            monitor.watch_falls(start >= 2500)
            monitor.observe(errors[start:end], list(range(start, end)))
            adwins = (monitor.detector, monitor.falls, monitor.warns)
            windows = [(d.width, d.total) for d in adwins if d]
            seen.append((start, monitor.fired_at, monitor.error_before, windows))
            seen.append((monitor.take_warning(), monitor.since_change()))
            seen.append((start, monitor.fell_at, monitor.error_before_fall))
            seen.append([repr(e) for e in monitor.evidence(True, True)])
        return seen

    fast = readings()
    assert concept._bare_adwin(ErrorMonitor("adwin", 0.002, 300).detector)
    monkeypatch.setattr(concept, "_bare_adwin", lambda detector: False)
    careful = readings()
    assert any(r[1] for r in careful[::4]) and any(r[1] for r in careful[2::4])
    assert any(r[0] for r in careful[1::4])
    assert fast == careful


@pytest.mark.parametrize("name", ["adwin", "page_hinkley", "ddm", "hddm_a"])
def test_every_selectable_concept_detector_catches_the_stagger_swap(name: str) -> None:
    config = Config().replace(detectors={"concept_detector": name})
    found = drifts(events_from(stagger_rows(8000, 4000), label_delay=10), config)
    assert firing(found, kind="concept", detector=name)


def test_a_stored_reference_profile_skips_the_reference_warm_up(tmp_path) -> None:
    import json

    learned = Engine(Config())
    run_events = events_from(gaussian_rows(1500, seed=21, features=5))
    for i in range(0, len(run_events), 500):
        learned.process(run_events[i : i + 500])
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(learned.drift.profile()))

    config = Config().replace(detectors={"reference_profile": str(profile)})
    fresh = Engine(config)
    assert fresh.drift.covariate is not None  # no reference to learn: only the window fills
    shifted = events_from(
        gaussian_rows(2000, seed=22, features=5, shift_at=500, feature=2, shift=1.5)
    )
    found = [
        o
        for i in range(0, 2000, 500)
        for o in fresh.process(shifted[i : i + 500])
        if isinstance(o, Drift)
    ]
    assert firing(found, kind="covariate", feature="f02")


def test_rolling_the_reference_forward_accepts_the_new_normal() -> None:
    rows = gaussian_rows(20000, seed=23, features=5, shift_at=5000, feature=1, shift=1.5)
    events = events_from(rows)
    rolled = drifts(events, Config().replace(detectors={"roll_reference_on_drift": True}))
    kept = drifts(events, Config())
    assert firing(rolled, feature="f01") and firing(kept, feature="f01")
    # With the reference rolled forward, the shifted level is the new normal: the windowed
    # tests have nothing left to say about f01, while the fixed reference keeps saying it.
    assert not firing(rolled, feature="f01", detector="ks")
    assert firing(kept, feature="f01", detector="ks")


def test_a_cusum_drift_record_carries_reference_and_current_window_summaries() -> None:
    found = drifts(scenario_events(breast_cancer(events=4000, drift_at=2000, label_delay=50)))
    record = firing(found, feature="mean radius", detector="cusum")[0]
    assert set(record.reference) >= {"mean", "std", "q05", "q50", "q95"}
    assert record.current["mean"] > record.reference["mean"]  # +N(2, 1) on mean radius


def test_a_stored_reference_profile_keeps_the_model_and_confidence_tests(tmp_path) -> None:
    import json

    learned = Engine(Config())
    run_events = events_from(gaussian_rows(1500, seed=21, features=5))
    for i in range(0, len(run_events), 500):
        learned.process(run_events[i : i + 500])
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(learned.drift.profile()))
    config = Config().replace(detectors={"reference_profile": str(profile)})
    later = events_from(gaussian_rows(3000, seed=22, features=5))
    references = []
    for batch in (500, 137):  # the reference rows do not depend on how the stream was cut
        engine = Engine(config)
        for i in range(0, len(later), batch):
            engine.process(later[i : i + batch])
        predictions = engine.drift.predictions
        assert predictions.warm  # the windowed model tests run: their budget is not wasted
        references.append(predictions.reference_rows)
    assert (
        references[0] == references[1] and len(references[0]) == config.detectors.model_sample_size
    )


def test_rise_start_places_a_rise_of_the_error_rate() -> None:
    rng = np.random.default_rng(11)
    placed = []
    for _ in range(20):
        errors = (rng.random(500) < np.r_[np.full(420, 0.05), np.full(80, 0.5)]).astype(int)
        placed.append(rise_start(errors.tolist()))
    assert abs(np.median(placed) - 80) <= 5 and all(60 <= p <= 100 for p in placed)
    # A fall is not a rise, and too few errors to split: every error counts as new.
    assert rise_start([1] * 200 + [0] * 100) == 300
    assert rise_start([0] * 10 + [1] * 9) == 19
    assert rise_start([0] * 30 + [1] * 10) == 10  # the shortest newer part
