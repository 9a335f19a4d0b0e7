"""Seeded, deterministic event streams with known drifts, for demos, tests and replay.

A scenario yields event dicts in the documented schema, in the order a producer
would send them, plus a *truth* record naming where each drift starts (``index`` =
0-based position among feature events). With ``label_delay = d > 0`` the label of
feature event ``i`` is sent as its own label event right after feature event
``i + d``; with ``d = 0`` the label rides in the feature event itself.

>>> s = breast_cancer(events=10, seed=1, label_delay=2)
>>> [("features" in e, e.get("label") is not None) for e in s.events][:4]
[(True, False), (True, False), (True, False), (False, True)]
>>> s.truth
{'drifts': [{'index': 5, 'width': 1, 'kind': 'covariate', 'feature': 'mean radius'}]}
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

START_TS = 1_764_201_600.0  # 2025-11-27T00:00:00Z: fixed, so files are byte-identical per seed
EVENT_INTERVAL_SECONDS = 0.1


@dataclass
class Scenario:
    name: str
    events: list[dict[str, Any]]
    truth: dict[str, Any]


def with_labels(
    rows: Iterator[tuple[dict[str, Any], Any]],
    label_delay: int,
    prefix: str,
    unlabeled: float = 0.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Turn (features, label) rows into feature events and (delayed) label events."""
    rng = np.random.default_rng(seed + 7919)
    events: list[dict[str, Any]] = []
    waiting: list[tuple[str, Any]] = []
    for i, (features, label) in enumerate(rows):
        event_id = f"{prefix}-{i:07d}"
        ts = START_TS + i * EVENT_INTERVAL_SECONDS
        keep_label = unlabeled <= 0.0 or rng.random() >= unlabeled
        if label_delay == 0:
            events.append(
                {
                    "id": event_id,
                    "ts": ts,
                    "features": features,
                    "label": label if keep_label else None,
                }
            )
            continue
        events.append({"id": event_id, "ts": ts, "features": features, "label": None})
        if keep_label:
            waiting.append((event_id, label))
        if len(waiting) > label_delay:
            late_id, late_label = waiting.pop(0)
            events.append({"id": late_id, "ts": ts, "label": late_label})
    ts = START_TS + len(events) * EVENT_INTERVAL_SECONDS
    events.extend({"id": late_id, "ts": ts, "label": late_label} for late_id, late_label in waiting)
    return events


def load_breast_cancer() -> tuple[list[str], np.ndarray, np.ndarray]:
    """scikit-learn's breast-cancer data (569 rows, 30 features), bundled as a CSV."""
    path = resources.files("streamheal").joinpath("data/breast_cancer.csv.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt", newline="") as text:
        reader = csv.reader(text)
        header = next(reader)
        rows = [[float(v) for v in row] for row in reader]
    table = np.array(rows)
    return header[:-1], table[:, :-1], table[:, -1].astype(int)


def breast_cancer(
    events: int = 2000,
    seed: int = 42,
    label_delay: int = 0,
    drift_at: int | None = None,
    unlabeled: float = 0.0,
) -> Scenario:
    """The classic covariate shift: from ``drift_at`` on, ``mean radius`` gets ``+N(2, 1)``."""
    names, X, y = load_breast_cancer()
    drift_at = events // 2 if drift_at is None else drift_at
    rng = np.random.default_rng(seed)
    rows_index = rng.integers(0, len(X), size=events)
    shift = rng.normal(2.0, 1.0, size=events)
    radius = names.index("mean radius")

    def rows() -> Iterator[tuple[dict[str, Any], Any]]:
        for i, r in enumerate(rows_index):
            values = X[r].copy()
            if i >= drift_at:
                values[radius] += shift[i]
            yield dict(zip(names, values.tolist(), strict=True)), int(y[r])

    truth = (
        {"drifts": [{"index": drift_at, "width": 1, "kind": "covariate", "feature": "mean radius"}]}
        if drift_at < events
        else {"drifts": []}
    )
    return Scenario("breast-cancer", with_labels(rows(), label_delay, "bc", unlabeled, seed), truth)


def prior_shift(
    events: int = 4000,
    seed: int = 42,
    label_delay: int = 0,
    drift_at: int | None = None,
    unlabeled: float = 0.0,
    before: float = 0.4,
    after: float = 0.8,
) -> Scenario:
    """Class balance change on the breast-cancer rows: the share of class 0 (malignant) goes
    from ``before`` to ``after`` at ``drift_at``; each class's rows keep their distribution."""
    _, X, y = load_breast_cancer()
    names = load_breast_cancer()[0]
    drift_at = events // 2 if drift_at is None else drift_at
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in (0, 1)]
    share = np.where(np.arange(events) < drift_at, before, after)
    classes = (rng.random(events) >= share).astype(int)  # class 0 with probability `share`
    picks = [by_class[c][rng.integers(len(by_class[c]))] for c in classes]
    rows = ((dict(zip(names, X[r].tolist(), strict=True)), int(y[r])) for r in picks)
    truth = (
        {"drifts": [{"index": drift_at, "width": 1, "kind": "prior"}]}
        if drift_at < events
        else {"drifts": []}
    )
    return Scenario("prior-shift", with_labels(rows, label_delay, "ps", unlabeled, seed), truth)


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "breast-cancer": breast_cancer,
    "prior-shift": prior_shift,
}
