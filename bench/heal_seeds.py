"""The default policy against River's DriftRetrainingClassifier over several seeds.

    .venv/bin/python bench/heal_seeds.py [--seeds 6] [--events 40000] [STREAM ...]

``bench/heal.py`` runs one seeded stream per generator; on one stream a few hundredths
of a point either way is the luck of where a detector fired. Here each River generator
gets a different seed per run (``generator_seed``; the scenarios keep theirs fixed by
default, so their files stay byte-identical), drifts at 25%, 50% and 75% as in heal.py,
and each row is the mean over the seeds of the whole-stream accuracy and of the first
1,000 and 5,000 events after each drift, with the mean difference to
``DriftRetrainingClassifier`` (DDM) with the same base and how many seeds were at or
above it.
"""

from __future__ import annotations

import argparse

from river import drift

from heal import drift_points, prequential, recovery, stream, through_engine
from streamheal import models
from streamheal.config import Config
from streamheal.heap import frozen_heap

STREAMS = ("sea", "agrawal", "stagger", "hyperplane")
BASES = ("logistic_regression", "hoeffding_tree")
Scores = tuple[float, float, float]  # whole stream, first 1k and first 5k after each drift


def scores(right: list[bool], points: list[int]) -> Scores:
    return sum(right) / len(right), recovery(right, points, 1000), recovery(right, points, 5000)


def run(name: str, events: int, seeds: int) -> dict[tuple[str, str], list[Scores]]:
    points = drift_points(events)
    results: dict[tuple[str, str], list[Scores]] = {}
    for seed in range(seeds):
        data = stream(name, events, seed=seed, generator_seed=seed)
        with frozen_heap():
            for base in BASES:
                config = Config().replace(model={"name": base})
                model = models.build_model(config.model, seed=1)
                peer = drift.DriftRetrainingClassifier(model, drift.binary.DDM())
                measured = {
                    "drift_retraining": prequential(peer, data, models.is_binary_bool(model)),
                    "streamheal": through_engine(config, data),
                }
                for method, (right, _) in measured.items():
                    results.setdefault((base, method), []).append(scores(right, points))
    return results


def mean(values: list[Scores], i: int) -> float:
    return sum(v[i] for v in values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", nargs="*", metavar="STREAM", help=", ".join(STREAMS))
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--events", type=int, default=40_000)
    args = parser.parse_args()
    unknown = [name for name in args.streams if name not in STREAMS]
    if unknown:
        parser.error(f"unknown stream {unknown[0]!r}: choose from {', '.join(STREAMS)}")
    print(f"{'stream':<11}{'base':<21}{'method':<18}{'whole':>8}{'1k':>8}{'5k':>8}  vs DDM")
    for name in args.streams or STREAMS:
        results = run(name, args.events, args.seeds)
        for base in BASES:
            peer = results[(base, "drift_retraining")]
            for method in ("drift_retraining", "streamheal"):
                own = results[(base, method)]
                diff = " ".join(f"{mean(own, i) - mean(peer, i):+.4f}" for i in range(3))
                at_or_above = sum(o[0] >= p[0] for o, p in zip(own, peer, strict=True))
                print(
                    f"{name:<11}{base:<21}{method:<18}"
                    + "".join(f"{mean(own, i):>8.4f}" for i in range(3))
                    + f"  {diff}  {at_or_above}/{len(own)}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
