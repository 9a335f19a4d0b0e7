"""Self-healing against peers: prequential accuracy, recovery after drifts and speed on
drifting streams, one run.

    .venv/bin/python bench/heal.py [--events 100000] [--json]

Streams (seeded; drifts at 25%, 50% and 75% of the stream): SEA, Agrawal and STAGGER
with abrupt concept drifts (River's generators switched by hand), Hyperplane with gradual
drifts (a new hyperplane takes over over 10% of the stream). Labels arrive with their
features. Methods, each with the same base model:

- ``none``: the base model alone, no adaptation;
- ``drift_retraining``: River's ``DriftRetrainingClassifier`` (DDM; background model on
  warning, swapped on drift);
- ``streamheal``: the Engine with the default detectors and policy;
- ``streamheal_catch_up`` (tree base): the same with ``policy.catch_up_weight = 10``;
- ``arf``: River's ``ARFClassifier`` and ``hat``: River's ``HoeffdingAdaptiveTreeClassifier``
  (their own learners, for reference).

Recovery: prequential accuracy over the first 1,000 and the first 5,000 events after each
drift starts, averaged over the drifts (``after_1k``, ``after_5k``): how fast a method is
right again, which is what self-healing is for.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from river import drift, forest, tree

from streamheal import models
from streamheal.config import Config
from streamheal.engine import Engine, Prediction
from streamheal.events import Event, Source
from streamheal.heap import frozen_heap
from streamheal.scenarios import SCENARIOS


def stream(name: str, events: int, seed: int = 7, generator_seed: int = 0) -> list[Event]:
    points = drift_points(events)
    width = events // 10 if name == "hyperplane" else 1
    scenario = SCENARIOS[name](
        events=events, drift_at=points, width=width, seed=seed, generator_seed=generator_seed
    )
    source = Source(name, 0, 0)
    return [
        Event(e["id"], e["ts"], e["features"], e["label"], (), source, b"")
        for e in scenario.stream()
    ]


Measured = tuple[list[bool], float]  # right or wrong per event, events per second


def prequential(model: Any, events: list[Event], binary: bool) -> Measured:
    right = []
    start = time.process_time()
    for event in events:
        label = bool(event.label) if binary else event.label
        right.append(model.predict_one(event.features) == label)
        model.learn_one(event.features, label)
    return right, len(events) / (time.process_time() - start)


def through_engine(config: Config, events: list[Event]) -> Measured:
    engine = Engine(config)
    labels = {e.id: e.label for e in events}
    right = []
    start = time.process_time()
    for i in range(0, len(events), 500):
        for output in engine.process(events[i : i + 500]):
            if type(output) is Prediction:
                right.append(output.prediction == labels[output.id])
    return right, len(events) / (time.process_time() - start)


def drift_points(events: int) -> list[int]:
    return [events // 4, events // 2, 3 * events // 4]


def recovery(right: list[bool], points: list[int], span: int) -> float:
    """Mean accuracy over the ``span`` events after each drift point."""
    return sum(sum(right[p : p + span]) / len(right[p : p + span]) for p in points) / len(points)


def methods(base: str, data: list[Event]) -> dict[str, Callable[[], Measured]]:
    config = Config().replace(model={"name": base})

    def make() -> Any:
        return models.build_model(config.model, seed=1)

    binary = models.is_binary_bool(make())
    return {
        "none": lambda: prequential(make(), data, binary),
        "drift_retraining": lambda: prequential(
            drift.DriftRetrainingClassifier(make(), drift.binary.DDM()), data, binary
        ),
        "streamheal": lambda: through_engine(config, data),
    } | (
        {  # catch-up (off by default): a tree started after a drift learns at weight 10
            "streamheal_catch_up": lambda: through_engine(
                config.replace(policy={"catch_up_weight": 10.0}), data
            )
        }
        if models.counts_evidence(make())
        else {}
    )


def run(events: int) -> list[dict[str, Any]]:
    rows = []
    points = drift_points(events)

    def row(name: str, base: str, method: str, measured: Measured) -> dict[str, Any]:
        right, eps = measured
        return {
            "stream": name,
            "base": base,
            "method": method,
            "accuracy": round(sum(right) / len(right), 4),
            "after_1k": round(recovery(right, points, 1000), 4),
            "after_5k": round(recovery(right, points, 5000), 4),
            "events_per_second": round(eps),
        }

    for name in ("sea", "agrawal", "stagger", "hyperplane"):
        data = stream(name, events)
        # The stream is the fixture: frozen out of the collector's scans, as in
        # `streamheal bench` (streamheal/dev/bench.py says why), for every method alike.
        with frozen_heap():
            for base in ("logistic_regression", "hoeffding_tree"):
                for method, measure in methods(base, data).items():
                    rows.append(row(name, base, method, measure()))
            peers = {
                "arf": forest.ARFClassifier(seed=1),
                "hat": tree.HoeffdingAdaptiveTreeClassifier(seed=1),
            }
            for method, model in peers.items():
                rows.append(row(name, method, method, prequential(model, data, False)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.events)
    if args.json:
        print(json.dumps(rows))
        return
    print(
        f"{'stream':<11}{'base':<21}{'method':<21}{'accuracy':>9}{'1k after':>9}"
        f"{'5k after':>9}{'events/s':>10}"
    )
    for r in rows:
        print(
            f"{r['stream']:<11}{r['base']:<21}{r['method']:<21}{r['accuracy']:>9.4f}"
            f"{r['after_1k']:>9.4f}{r['after_5k']:>9.4f}{r['events_per_second']:>10}"
        )


if __name__ == "__main__":
    main()
