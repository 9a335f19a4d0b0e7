"""Self-healing against peers: prequential accuracy and speed on drifting streams, one run.

    .venv/bin/python bench/heal.py [--events 100000] [--json]

Streams (seeded; drifts at 25%, 50% and 75% of the stream): SEA, Agrawal and STAGGER
with abrupt concept drifts (River's generators switched by hand), Hyperplane with gradual
drifts (a new hyperplane takes over over 10% of the stream). Labels arrive with their
features. Methods, each with the same base model:

- ``none``: the base model alone, no adaptation;
- ``drift_retraining``: River's ``DriftRetrainingClassifier`` (DDM; background model on
  warning, swapped on drift);
- ``streamheal``: the Engine with the default detectors and policy;
- ``arf``: River's ``ARFClassifier`` (its own base learners, for reference).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from river import drift, forest

from streamheal import models
from streamheal.config import Config
from streamheal.engine import Engine
from streamheal.events import Event, Source
from streamheal.scenarios import SCENARIOS


def stream(name: str, events: int) -> list[Event]:
    points = [events // 4, events // 2, 3 * events // 4]
    width = events // 10 if name == "hyperplane" else 1
    scenario = SCENARIOS[name](events=events, drift_at=points, width=width, seed=7)
    source = Source(name, 0, 0)
    return [
        Event(e["id"], e["ts"], e["features"], e["label"], (), source, b"")
        for e in scenario.stream()
    ]


def prequential(model: Any, events: list[Event], binary: bool) -> tuple[float, float]:
    right = 0
    start = time.process_time()
    for event in events:
        label = bool(event.label) if binary else event.label
        right += model.predict_one(event.features) == label
        model.learn_one(event.features, label)
    return right / len(events), len(events) / (time.process_time() - start)


def through_engine(config: Config, events: list[Event]) -> tuple[float, float]:
    engine = Engine(config)
    start = time.process_time()
    for i in range(0, len(events), 500):
        engine.process(events[i : i + 500])
    return engine.counters.accuracy, len(events) / (time.process_time() - start)


def methods(base: str, data: list[Event]) -> dict[str, Callable[[], tuple[float, float]]]:
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
    }


def run(events: int) -> list[dict[str, Any]]:
    rows = []
    for name in ("sea", "agrawal", "stagger", "hyperplane"):
        data = stream(name, events)
        for base in ("logistic_regression", "hoeffding_tree"):
            for method, measure in methods(base, data).items():
                accuracy, eps = measure()
                rows.append(
                    {
                        "stream": name,
                        "base": base,
                        "method": method,
                        "accuracy": round(accuracy, 4),
                        "events_per_second": round(eps),
                    }
                )
        accuracy, eps = prequential(forest.ARFClassifier(seed=1), data, False)
        rows.append(
            {
                "stream": name,
                "base": "arf",
                "method": "arf",
                "accuracy": round(accuracy, 4),
                "events_per_second": round(eps),
            }
        )
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
    print(f"{'stream':<11}{'base':<21}{'method':<18}{'accuracy':>9}{'events/s':>10}")
    for r in rows:
        print(
            f"{r['stream']:<11}{r['base']:<21}{r['method']:<18}{r['accuracy']:>9.4f}"
            f"{r['events_per_second']:>10}"
        )


if __name__ == "__main__":
    main()
