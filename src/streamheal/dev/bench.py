"""Throughput of the Engine against a bare River loop, measured side by side in one run.

Variants: ``bare`` (River's predict_proba_one + learn_one, nothing else), the Engine with
all drift detectors on (``engine``) and off (``engine_core``), the same in mini-batch
mode, and ``naive``: River's KSWIN per feature plus ADWIN on the errors.

The stream is the breast-cancer data (30 features) drawn at random to ``events`` events,
each carrying its label (score, then learn). Events are decoded before timing: decoding
is the worker's job, the figures are about the Engine. Each variant runs ``rounds``
times, interleaved so that machine noise hits all of them alike. Throughputs are the best
round of each variant; each ratio is the median over rounds of the variant's throughput
divided by the bare loop's in the same round. Times are process CPU time, which a busy
neighbour disturbs less than wall time.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import river
from river import drift

from streamheal import models
from streamheal.config import Config
from streamheal.engine import Engine
from streamheal.events import Event, Source
from streamheal.scenarios import breast_cancer


def bench_events(count: int, seed: int = 7) -> list[Event]:
    """The breast-cancer scenario without drift: rows drawn at random (seeded), labels inline."""
    scenario = breast_cancer(events=count, seed=seed, label_delay=0, drift_at=count)
    source = Source("bench", 0, 0)
    return [
        Event(e["id"], e["ts"], e["features"], e["label"], (), source, b"") for e in scenario.events
    ]


def bare_river(config: Config, events: list[Event]) -> float:
    """The floor: River's own predict_proba_one + learn_one, nothing else."""
    model = models.build_model(config.model, seed=config.engine.seed)
    binary = models.is_binary_bool(model)
    pairs = [(e.features, bool(e.label) if binary else e.label) for e in events]
    start = time.process_time()
    for x, label in pairs:
        model.predict_proba_one(x)
        model.learn_one(x, label)
    return len(pairs) / (time.process_time() - start)


def through_engine(config: Config, events: list[Event]) -> float:
    engine = Engine(config)
    size = config.engine.batch_size
    batches = [events[i : i + size] for i in range(0, len(events), size)]
    start = time.process_time()
    for batch in batches:
        engine.process(batch)
    return len(events) / (time.process_time() - start)


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


def run_bench(
    config: Config, events: int = 50_000, rounds: int = 3, naive_events: int = 1000
) -> dict[str, Any]:
    stream = bench_events(events)
    on = config.replace(engine={"mode": "per_event"})
    off = on.replace(detectors={"enabled": False})
    variants: dict[str, Callable[[], float]] = {
        "bare_eps": lambda: bare_river(on, stream),
        "engine_eps": lambda: through_engine(on, stream),
        "engine_core_eps": lambda: through_engine(off, stream),
        "minibatch_eps": lambda: through_engine(on.replace(engine={"mode": "mini_batch"}), stream),
        "minibatch_core_eps": lambda: through_engine(
            off.replace(engine={"mode": "mini_batch"}), stream
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            samples[name].append(measure())
    # The best round is the one the machine disturbed least (timeit's advice); on a shared
    # machine single rounds of the same variant vary by +-40%.
    figures: dict[str, Any] = {name: round(max(v), 1) for name, v in samples.items()}
    # KSWIN costs ~330 us per feature per update: a short stream is enough to time it.
    figures["naive_eps"] = round(naive_river(on, stream[:naive_events]), 1)

    def paired(name: str) -> float:
        # Ratios pair each variant with the bare loop of the same round (measured seconds
        # apart, under the same machine load), then take the median over rounds.
        ratios = [v / b for v, b in zip(samples[name], samples["bare_eps"], strict=True)]
        return round(statistics.median(ratios), 3)

    figures.update(
        engine_over_bare=paired("engine_eps"),
        engine_core_over_bare=paired("engine_core_eps"),
        minibatch_over_bare=paired("minibatch_eps"),
        minibatch_core_over_bare=paired("minibatch_core_eps"),
        engine_over_naive=round(figures["engine_eps"] / figures["naive_eps"], 1),
        events=events,
        naive_events=min(naive_events, events),
        rounds=rounds,
        features=len(stream[0].features),
        model=config.model.name,
        batch_size=config.engine.batch_size,
        river=river.__version__,
        python=platform.python_version(),
    )
    return figures
