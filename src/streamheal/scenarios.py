"""Seeded, deterministic event streams with known drifts, for demos, tests and replay.

A scenario yields event dicts in the documented schema, in the order a producer would
send them, plus a *truth* record naming where each drift starts (``index`` = 0-based
position among feature events) and how wide it is (``width`` = 1 for abrupt; over
``width`` events the new concept takes over linearly). With ``label_delay = d > 0`` the
label of feature event ``i`` is sent as its own label event right after feature event
``i + d``; with ``d = 0`` the label rides in the feature event. A fraction ``unlabeled``
of events never gets a label.

Concept drifts switch River's generators by hand at the drift index (River's
``ConceptDriftStream`` overflows for very small widths).

>>> s = breast_cancer(events=10, seed=1, label_delay=2)
>>> [("features" in e, e.get("label") is not None) for e in s.events][:4]
[(True, False), (True, False), (True, False), (False, True)]
>>> s.truth
{'drifts': [{'index': 5, 'width': 1, 'kind': 'covariate', 'feature': 'mean radius'}]}
"""

from __future__ import annotations

import csv
import gzip
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from river.datasets import synth

START_TS = 1_764_201_600.0  # 2025-11-27T00:00:00Z: fixed, so files are byte-identical per seed
EVENT_INTERVAL_SECONDS = 0.1

Row = tuple[dict[str, Any], Any]
Drifts = int | Iterable[int] | None


@dataclass
class Scenario:
    """A named stream: ``stream()`` yields events lazily (a million need no memory)."""

    name: str
    stream: Callable[[], Iterator[dict[str, Any]]]
    truth: dict[str, Any]
    length: int | None = None  # feature events, when known before streaming

    @cached_property
    def events(self) -> list[dict[str, Any]]:
        return list(self.stream())


def with_labels(
    rows: Iterable[Row], label_delay: int, prefix: str, unlabeled: float = 0.0, seed: int = 0
) -> Iterator[dict[str, Any]]:
    """Turn (features, label) rows into feature events and (delayed) label events."""
    rng = np.random.default_rng(seed + 7919)
    waiting: deque[tuple[int, str, Any]] = deque()
    ts = START_TS
    for i, (features, label) in enumerate(rows):
        event_id = f"{prefix}-{i:07d}"
        ts = START_TS + i * EVENT_INTERVAL_SECONDS
        keep_label = unlabeled <= 0.0 or rng.random() >= unlabeled
        if label_delay == 0:
            yield {
                "id": event_id,
                "ts": ts,
                "features": features,
                "label": label if keep_label else None,
            }
            continue
        yield {"id": event_id, "ts": ts, "features": features, "label": None}
        if keep_label:
            waiting.append((i, event_id, label))
        if waiting and waiting[0][0] <= i - label_delay:
            _, late_id, late_label = waiting.popleft()
            yield {"id": late_id, "ts": ts, "label": late_label}
    for _, late_id, late_label in waiting:
        yield {"id": late_id, "ts": ts, "label": late_label}


def _drift_points(events: int, drift_at: Drifts) -> list[int]:
    if drift_at is None:
        return [events // 2]
    points = [drift_at] if isinstance(drift_at, int) else list(drift_at)
    return sorted(p for p in points if 0 <= p < events)


def _truth(points: list[int], width: int, kind: str, **extra: Any) -> dict[str, Any]:
    return {"drifts": [{"index": p, "width": width, "kind": kind, **extra} for p in points]}


def _concept(points: list[int], width: int, i: int, rng: np.random.Generator) -> int:
    """Which concept (0 = before the first drift) generates row ``i``."""
    concept = 0
    for k, point in enumerate(points):
        if i >= point + width - 1 or (i >= point and rng.random() < (i - point + 1) / width):
            concept = k + 1
    return concept


def _switching(
    generators: list[Iterator[Row]], points: list[int], width: int, events: int, seed: int
) -> Iterator[Row]:
    rng = np.random.default_rng(seed + 104729)
    for i in range(events):
        x, y = next(generators[_concept(points, width, i, rng)])
        # JSON object keys are strings: SEA and Hyperplane number their features.
        yield {k if isinstance(k, str) else f"x{k}": v for k, v in x.items()}, y


# ------------------------------------------------------------------ real data


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
    drift_at: Drifts = None,
    width: int = 1,
    unlabeled: float = 0.0,
) -> Scenario:
    """The classic covariate shift: from each drift on, ``mean radius`` gets ``+N(2, 1)``."""
    names, X, y = load_breast_cancer()
    points = _drift_points(events, drift_at)
    radius = names.index("mean radius")

    def rows() -> Iterator[Row]:
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(X), size=events)
        shift = rng.normal(2.0, 1.0, size=events)
        mix = np.random.default_rng(seed + 104729)
        for i, r in enumerate(picks):
            values = X[r].copy()
            values[radius] += shift[i] * _concept(points, width, i, mix)
            yield dict(zip(names, values.tolist(), strict=True)), int(y[r])

    def stream() -> Iterator[dict[str, Any]]:
        return with_labels(rows(), label_delay, "bc", unlabeled, seed)

    return Scenario(
        "breast-cancer", stream, _truth(points, width, "covariate", feature="mean radius")
    )


def stationary(
    events: int = 20000,
    seed: int = 42,
    label_delay: int = 0,
    drift_at: Drifts = None,
    width: int = 1,
    unlabeled: float = 0.0,
) -> Scenario:
    """The breast-cancer rows drawn at random, no drift: for measuring false alarms."""
    scenario = breast_cancer(events, seed, label_delay, [], width, unlabeled)
    return Scenario("stationary", scenario.stream, {"drifts": []})


def prior_shift(
    events: int = 4000,
    seed: int = 42,
    label_delay: int = 0,
    drift_at: Drifts = None,
    width: int = 1,
    unlabeled: float = 0.0,
    before: float = 0.4,
    after: float = 0.8,
) -> Scenario:
    """Class balance change on the breast-cancer rows: the share of class 0 (malignant)
    goes from ``before`` to ``after``; each class's rows keep their distribution."""
    names, X, y = load_breast_cancer()
    points = _drift_points(events, drift_at)

    def rows() -> Iterator[Row]:
        rng = np.random.default_rng(seed)
        mix = np.random.default_rng(seed + 104729)
        by_class = [np.flatnonzero(y == c) for c in (0, 1)]
        for i in range(events):
            share = after if _concept(points, width, i, mix) % 2 else before
            label = int(rng.random() >= share)  # class 0 with probability `share`
            r = by_class[label][rng.integers(len(by_class[label]))]
            yield dict(zip(names, X[r].tolist(), strict=True)), int(y[r])

    def stream() -> Iterator[dict[str, Any]]:
        return with_labels(rows(), label_delay, "ps", unlabeled, seed)

    return Scenario("prior-shift", stream, _truth(points, width, "prior"))


# ------------------------------------------------------------ River generators


def _river_scenario(
    name: str, make: Callable[[int, int], Iterable[Row]], prefix: str, default_width: int = 1
) -> Callable[..., Scenario]:
    def scenario(
        events: int = 20000,
        seed: int = 42,
        label_delay: int = 0,
        drift_at: Drifts = None,
        width: int | None = None,
        unlabeled: float = 0.0,
        generator_seed: int = 0,
    ) -> Scenario:
        points = _drift_points(events, drift_at)
        w = default_width if width is None else width

        def stream() -> Iterator[dict[str, Any]]:
            generators = [iter(make(k, generator_seed)) for k in range(len(points) + 1)]
            rows = _switching(generators, points, w, events, seed)
            return with_labels(rows, label_delay, prefix, unlabeled, seed)

        return Scenario(name, stream, _truth(points, w, "concept"))

    scenario.__doc__ = (
        f"River's {name} generator, switched to a new concept at each drift. ``seed`` "
        "draws the gradual mix and the labels; the generators' own seeds are fixed (so "
        "files stay byte-identical) unless ``generator_seed`` moves them."
    )
    return scenario


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "breast-cancer": breast_cancer,
    "prior-shift": prior_shift,
    "stationary": stationary,
    # Concept k's generator is seeded base + k + 100 * generator_seed.
    "sea": _river_scenario(
        "sea", lambda k, g: synth.SEA(variant=k % 4, seed=1000 + k + 100 * g), "sea"
    ),
    "agrawal": _river_scenario(
        "agrawal",
        lambda k, g: synth.Agrawal(classification_function=(2 * k) % 10, seed=2000 + k + 100 * g),
        "agr",
    ),
    "stagger": _river_scenario(
        "stagger",
        lambda k, g: synth.STAGGER(classification_function=k % 3, seed=3000 + k + 100 * g),
        "stg",
    ),
    # A gradual drift by default: a new hyperplane takes over linearly over 2,000 events.
    "hyperplane": _river_scenario(
        "hyperplane",
        lambda k, g: synth.Hyperplane(seed=4000 + k + 100 * g, n_features=10),
        "hyp",
        2000,
    ),
}


CSV_DRIFT_KINDS = ("covariate", "concept", "none")


def csv_scenario(
    path: str | Path,
    label: str,
    events: int | None = None,
    label_delay: int = 0,
    drift_at: Drifts = None,
    unlabeled: float = 0.0,
    seed: int = 42,
    width: int = 1,
    drift: str = "covariate",
    feature: str | None = None,
) -> Scenario:
    """Stream any CSV file with a header and a label column (bring your own data).

    Cells that parse as numbers are numeric features, other non-empty cells categorical,
    empty cells missing. Every row is streamed unless ``events`` caps them.

    At each index of ``drift_at`` (0-based among rows; none by default) a drift of kind
    ``drift`` is injected, over ``width`` rows as the other scenarios do:

    - ``"covariate"``: the numeric column ``feature`` (default: the first numeric one) is
      shifted by ``+N(2, 1)`` of its standard deviations per drift, labels unchanged;
    - ``"concept"``: the labels are rotated (each class becomes the next one in sorted
      order; a binary label flips), features unchanged;
    - ``"none"``: nothing is changed; the indices only go to the truth file, as kind
      ``"unknown"`` (for change points already known to be in the data).

    >>> import tempfile, pathlib
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "tiny.csv"
    >>> _ = file.write_text("x,colour,y\\n" + "".join(f"{i},red,{i % 2}\\n" for i in range(6)))
    >>> s = csv_scenario(file, "y", drift_at=3, drift="concept")
    >>> [e["label"] for e in s.events], s.truth["drifts"][0]["kind"]
    ([0, 1, 0, 0, 1, 0], 'concept')
    """
    source = Path(path)
    shape = _csv_shape(source, label)
    if drift not in CSV_DRIFT_KINDS:
        raise ValueError(f"drift kind {drift!r}: expected one of {', '.join(CSV_DRIFT_KINDS)}")
    rows_total = shape.rows if events is None else min(events, shape.rows)
    points = _drift_points(rows_total, [] if drift_at is None else drift_at)
    column = _shifted_column(shape, feature) if drift == "covariate" and points else None
    classes = sorted(shape.labels, key=lambda v: (isinstance(v, str), v))

    def rows() -> Iterator[Row]:
        rng = np.random.default_rng(seed)
        mix = np.random.default_rng(seed + 104729)
        with source.open(newline="") as handle:
            for i, record in enumerate(csv.DictReader(handle)):
                if i >= rows_total:
                    return
                target = _label_value(record.pop(label))
                features = {k: parse_cell(v) for k, v in record.items()}
                concept = _concept(points, width, i, mix) if points else 0
                if concept and drift == "concept" and target in classes:
                    target = classes[(classes.index(target) + concept) % len(classes)]
                shift = rng.normal(2.0, 1.0)  # drawn for every row: the stream stays seeded
                if concept and column is not None and isinstance(features[column], float):
                    features[column] += shift * concept * shape.spread[column]
                yield features, target

    def stream() -> Iterator[dict[str, Any]]:
        return with_labels(rows(), label_delay, "csv", unlabeled, seed)

    kind = "unknown" if drift == "none" else drift
    extra = {"feature": column} if column is not None else {}
    truth = _truth(points, width, kind, **extra)
    return Scenario(f"csv:{source.name}", stream, truth, rows_total)


@dataclass
class _CsvShape:
    header: list[str]
    rows: int
    labels: set[Any]
    spread: dict[str, float]  # standard deviation of every all-numeric column


def _csv_shape(source: Path, label: str) -> _CsvShape:
    """One pass over the file: its rows, classes, and each numeric column's spread."""
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        if label not in header:
            raise ValueError(f"{source}: no column {label!r}; columns are {', '.join(header)}")
        sums: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in header if name != label}
        labels: set[Any] = set()
        rows = 0
        for record in reader:
            rows += 1
            if len(labels) <= 1000:  # bounded: a regression target is not rotated anyway
                labels.add(_label_value(record[label]))
            for name in list(sums):
                value = parse_cell(record.get(name))
                if isinstance(value, str):
                    del sums[name]  # text in it: not a numeric column
                elif value is not None:
                    total = sums[name]
                    total[0] += 1
                    total[1] += value
                    total[2] += value * value
    spread = {
        name: math.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0)) or 1.0
        for name, (n, s1, s2) in sums.items()
        if n
    }
    labels.discard(None)
    return _CsvShape(header, rows, labels, spread)


def _shifted_column(shape: _CsvShape, feature: str | None) -> str:
    if feature is None:
        if not shape.spread:
            raise ValueError("a covariate drift needs a numeric column; this file has none")
        return next(name for name in shape.header if name in shape.spread)
    if feature not in shape.spread:
        numeric = ", ".join(name for name in shape.header if name in shape.spread) or "none"
        raise ValueError(f"column {feature!r} is not numeric here; numeric columns: {numeric}")
    return feature


def _label_value(text: str | None) -> Any:
    target = parse_cell(text)
    if isinstance(target, float) and target.is_integer():
        return int(target)
    return target


def parse_cell(text: str | None) -> float | str | None:
    """A CSV cell as a feature value: a finite number, a string, or None when empty."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else None
