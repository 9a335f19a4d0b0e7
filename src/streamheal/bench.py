"""Throughput of the Engine against a bare River loop, measured side by side in one run.

The stream is the breast-cancer data (30 features) drawn at random to ``events`` events,
each carrying its label (score, then learn). Events are decoded before timing: decoding
is the worker's job, the figures are about the Engine. Each variant runs ``rounds``
times, interleaved so that machine noise hits all of them alike; the median round is
reported. Times are process CPU time, which a busy neighbour disturbs less than wall time.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import river

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


def run_bench(config: Config, events: int = 50_000, rounds: int = 3) -> dict[str, Any]:
    stream = bench_events(events)
    per_event = config.replace(engine={"mode": "per_event"})
    mini_batch = config.replace(engine={"mode": "mini_batch"})
    variants: dict[str, Callable[[], float]] = {
        "bare_eps": lambda: bare_river(per_event, stream),
        "engine_eps": lambda: through_engine(per_event, stream),
        "minibatch_eps": lambda: through_engine(mini_batch, stream),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            samples[name].append(measure())
    figures: dict[str, Any] = {name: round(statistics.median(v), 1) for name, v in samples.items()}
    figures["engine_over_bare"] = round(figures["engine_eps"] / figures["bare_eps"], 3)
    figures["minibatch_over_bare"] = round(figures["minibatch_eps"] / figures["bare_eps"], 3)
    figures.update(
        events=events,
        rounds=rounds,
        model=config.model.name,
        batch_size=config.engine.batch_size,
        river=river.__version__,
        python=platform.python_version(),
    )
    return figures
