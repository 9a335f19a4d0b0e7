"""Throughput of the Engine against a bare River loop, measured side by side in one run.

Variants: the Engine with all drift detectors on (``engine``) and off (``engine_core``),
the same in mini-batch mode, and ``naive``: River's KSWIN per feature plus ADWIN on the
errors.

The stream is the breast-cancer data (30 features) drawn at random to ``events`` events,
each carrying its label (score, then learn). Events are decoded before timing: decoding
is the worker's job, the figures are about the Engine.

Each ratio pairs a variant with a bare loop (River's predict_proba_one + learn_one, same
model, same events) batch by batch: the bare loop takes a batch, then the Engine takes
the same batch, and so on, each timed in process CPU time. Both sides of a ratio thus
run within a fraction of a second of each other, so the load a shared machine puts on
them is the same; pairing whole runs of several seconds instead left single ratios
±15% apart on this project's build machine, batch pairing about ±2%. Each ratio is the
median over ``rounds``; throughputs are each side's best round.

The start-up heap and the stream are frozen out of the garbage collector's scans while
the variants run (:mod:`streamheal.heap`), as the worker freezes its own start-up heap.
The decoded stream is the benchmark's fixture, over 100,000 container objects that no
worker holds; unfrozen, every full collection set off by what the Engine keeps from batch
to batch scanned it, and charged the Engine 4-5 us per event (per-event mode, 50,000
events) that the bare loop, which keeps nothing, never set off.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import river
from river import drift

from streamheal import models
from streamheal.config import Config
from streamheal.detectors import cusum
from streamheal.engine import Engine
from streamheal.events import Event, Reason, Source
from streamheal.heap import frozen_heap
from streamheal.joins import LabelJoin
from streamheal.scenarios import breast_cancer


def bench_events(count: int, seed: int = 7) -> list[Event]:
    """The breast-cancer scenario without drift: rows drawn at random (seeded), labels inline."""
    scenario = breast_cancer(events=count, seed=seed, label_delay=0, drift_at=count)
    source = Source("bench", 0, 0)
    return [
        Event(e["id"], e["ts"], e["features"], e["label"], (), source, b"") for e in scenario.events
    ]


def paired(config: Config, events: list[Event]) -> tuple[float, float]:
    """CPU seconds of a bare River loop and of the Engine on ``events``, batch by batch
    in turn (see the module docstring): ``(bare, engine)``."""
    model = models.build_model(config.model, seed=config.engine.seed)
    binary = models.is_binary_bool(model)
    engine = Engine(config)
    size = config.engine.batch_size
    bare_seconds = engine_seconds = 0.0
    for start in range(0, len(events), size):
        batch = events[start : start + size]
        pairs = [(e.features, bool(e.label) if binary else e.label) for e in batch]
        began = time.process_time()
        for x, label in pairs:
            model.predict_proba_one(x)
            model.learn_one(x, label)
        bare_seconds += time.process_time() - began
        began = time.process_time()
        engine.process(batch)
        engine_seconds += time.process_time() - began
    return bare_seconds, engine_seconds


def naive_river(config: Config, events: list[Event]) -> float:
    """The naive way to watch the same stream: River's KSWIN on every feature and ADWIN on
    the errors, updated per event, beside the same model."""
    model = models.build_model(config.model, seed=config.engine.seed)
    binary = models.is_binary_bool(model)
    names = list(events[0].features)
    watchers = {name: drift.KSWIN(seed=config.engine.seed) for name in names}
    errors = drift.ADWIN()
    start = time.process_time()
    for event in events:
        x, label = event.features, bool(event.label) if binary else event.label
        proba = model.predict_proba_one(x)
        model.learn_one(x, label)
        for name, watcher in watchers.items():
            watcher.update(x[name])
        errors.update(int(max(proba, key=proba.get) != label))
    return len(events) / (time.process_time() - start)


def full_join(config: Config, operations: int = 100_000) -> dict[str, float]:
    """Microseconds per event of the label join once it is full at ``config``'s bounds, the
    state of every partition of a long-running worker (the Engine variants above, 50,000
    events from a fresh Engine, never fill the default 100,000): ``labeled``, events that
    carry their label (each id is closed, the oldest closed id forgotten); ``unlabeled``,
    events whose label never comes (each is remembered, the oldest evicted)."""
    capacity = config.engine.join_buffer_size
    features = {"x": 1.0}

    def labeled(join: LabelJoin, i: int) -> None:
        join.close(str(i), Reason.DUPLICATE_LABEL)

    def unlabeled(join: LabelJoin, i: int) -> None:
        join.remember(str(i), float(i), 100, features, None, float(i))

    figures: dict[str, float] = {"capacity": capacity}
    for name, step in (("labeled", labeled), ("unlabeled", unlabeled)):
        join = LabelJoin.from_config(config.engine)
        for i in range(capacity):
            step(join, i)
        began = time.process_time()
        for i in range(capacity, capacity + operations):
            step(join, i)
        figures[f"{name}_us"] = round((time.process_time() - began) / operations * 1e6, 2)
    return figures


def run_bench(
    config: Config, events: int = 50_000, rounds: int = 3, naive_events: int = 1000
) -> dict[str, Any]:
    stream = bench_events(events)
    on = config.replace(engine={"mode": "per_event"})
    off = on.replace(detectors={"enabled": False})
    variants = {
        "engine": on,
        "engine_core": off,
        "minibatch": on.replace(engine={"mode": "mini_batch"}),
        "minibatch_core": off.replace(engine={"mode": "mini_batch"}),
    }
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    fastest = dict.fromkeys([*variants, "bare"], float("inf"))
    with frozen_heap():  # the stream too: see the module docstring
        for _ in range(rounds):
            for name, variant in variants.items():
                bare, took = paired(variant, stream)
                ratios[name].append(bare / took)
                fastest[name] = min(fastest[name], took)
                fastest["bare"] = min(fastest["bare"], bare)
    figures: dict[str, Any] = {
        f"{name}_eps": round(events / seconds, 1) for name, seconds in fastest.items()
    }
    # KSWIN costs ~330 us per feature per update: a short stream is enough to time it.
    figures["naive_eps"] = round(naive_river(on, stream[:naive_events]), 1)
    figures["full_join"] = full_join(on)
    figures.update(
        {f"{name}_over_bare": round(statistics.median(r), 3) for name, r in ratios.items()},
        engine_over_naive=round(figures["engine_eps"] / figures["naive_eps"], 1),
        events=events,
        naive_events=min(naive_events, events),
        rounds=rounds,
        features=len(stream[0].features),
        model=config.model.name,
        batch_size=config.engine.batch_size,
        # Whether VectorCusum's inner loops ran compiled (setup.py) or in numpy.
        cusum_loops="compiled" if cusum.compiled is not None else "numpy",
        river=river.__version__,
        python=platform.python_version(),
    )
    return figures
