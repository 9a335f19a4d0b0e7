"""Scoring a replay against known drifts, and the ``report.json`` it writes (no plotting).

Detections are scored as **episodes** (see :mod:`streamheal.detectors.episodes`): one
change seen by a CUSUM, then by KS and PSI, then in the predictions is one episode, not
four detections. Every declaration says what it counted as (``counted_as``):

``true_positive``
    An episode opener within a true drift's window, ``[index, index + width - 1 +
    max_delay]``. The first one is the drift's detection and gives its delay; later
    openers in the same window (the label mix after a concept change, say) are real
    changes too and are not held against the config.
``confirmation``
    A later declaration of an open episode (another detector attaching, or the same one
    re-firing): it adds evidence, never a new alarm, however late it lands.
``caused_by``
    An episode explained by an open covariate or concept episode (a prediction or label
    mix drift that follows a feature shift): a consequence, not a separate change.
``improvement``
    A significant *fall* of the error rate (signal ``error_fall``) outside every window:
    the model got better (it learned, or the world became easier). It triggers no
    healing and pages nobody, so it is neither a true positive nor a false alarm; it is
    counted apart. Inside a drift's window it is that drift's detection like any opener.
``false_alarm``
    Any other episode opener.
``unscored``
    An opener when there is no truth file.

Precision is true-positive episodes over scored episodes (true positives and false
alarms); recall is detected drifts over true drifts; delays are per detected drift.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from streamheal.replay import DatasetProfile, Run

CountedAs = Literal[
    "true_positive", "confirmation", "caused_by", "improvement", "false_alarm", "unscored"
]

# Openers come from sequential detectors (CUSUMs, ADWIN, Page-Hinkley: a few hundred
# events after a change) or from a windowed check (up to one `window_check_every` plus
# confirmation later). Confirmations no longer need to land inside it: they attach to
# their episode whenever they come.
DEFAULT_MAX_DELAY = 2000
SAMPLING_BAND = 3.0  # the estimate's band: +-3 standard errors, as NannyML draws it
MAX_CUSUM_SERIES = 12
# What a periodic baseline must match in number: the alarms a config raised.
_SCORED = ("true_positive", "false_alarm", "unscored")


def counted_as(detection: dict[str, Any]) -> CountedAs | None:
    """What a declaration counts as before the truth is looked at (None: an opener)."""
    if detection.get("role") in ("confirmation", "refired"):
        return "confirmation"
    if detection.get("caused_by"):
        return "caused_by"
    return None


def score(
    detections: list[dict[str, Any]],
    truth: dict[str, Any] | None,
    events: int,
    max_delay: int,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Label every detection and score the episodes against ``truth``.

    Returns one ``{"counted_as": ..., ["drift_index", "delay"]}`` per detection, in order,
    and the evaluation (None without a truth file).

    >>> truth = {"drifts": [{"index": 1000}]}
    >>> found = [
    ...     {"index": 1200, "role": "opened", "caused_by": None, "signal": "feature"},
    ...     {"index": 2500, "role": "confirmation", "caused_by": None, "signal": "feature"},
    ...     {"index": 3000, "role": "opened", "caused_by": "covariate:feature:x@1200",
    ...      "signal": "prediction"},
    ...     {"index": 9000, "role": "opened", "caused_by": None, "signal": "feature"},
    ... ]
    >>> labels, evaluation = score(found, truth, events=10_000, max_delay=2000)
    >>> [label["counted_as"] for label in labels]
    ['true_positive', 'confirmation', 'caused_by', 'false_alarm']
    >>> evaluation["precision"], evaluation["recall"], evaluation["median_delay"]
    (0.5, 1.0, 200)
    """
    labels: list[dict[str, Any]] = [{"counted_as": counted_as(d)} for d in detections]
    openers = [i for i, label in enumerate(labels) if label["counted_as"] is None]
    if truth is None:
        for i in openers:
            labels[i]["counted_as"] = "unscored"
        return labels, None
    drifts = sorted(truth.get("drifts", []), key=lambda d: d["index"])
    windows = [
        (d["index"], d["index"] + max(int(d.get("width", 1)), 1) - 1 + max_delay) for d in drifts
    ]
    delays: list[int] = []
    matches: list[dict[str, Any]] = []
    first_of: set[int] = set()
    for start, end in windows:
        inside = [i for i in openers if start <= detections[i]["index"] <= end]
        first = next((i for i in inside if i not in first_of), None)
        if first is None:
            matches.append({"drift_index": start, "episode": None, "delay": None})
            continue
        first_of.add(first)
        delay = detections[first]["index"] - start
        delays.append(delay)
        matches.append(
            {"drift_index": start, "episode": detections[first].get("episode"), "delay": delay}
        )
    for i in openers:
        index = detections[i]["index"]
        start = next((s for s, e in windows if s <= index <= e), None)
        if start is not None:
            labels[i].update(counted_as="true_positive", drift_index=start, delay=index - start)
        elif detections[i].get("signal") == "error_fall":
            labels[i]["counted_as"] = "improvement"
        else:
            labels[i]["counted_as"] = "false_alarm"
    tally = {name: 0 for name in ("true_positive", "confirmation", "caused_by", "improvement")}
    tally["false_alarm"] = 0
    for label in labels:
        tally[label["counted_as"]] += 1
    true_positives, false_alarms = tally["true_positive"], tally["false_alarm"]
    scored = true_positives + false_alarms
    precision = true_positives / scored if scored else None
    recall = len(delays) / len(drifts) if drifts else None
    if recall is None:
        f1 = None
    elif precision is None or precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return labels, {
        "declarations": len(detections),
        "episodes": sum(1 for d in detections if d.get("role") in ("opened", None)),
        "scored_episodes": scored,
        "true_positives": true_positives,
        "false_alarms": false_alarms,
        "confirmations": tally["confirmation"],
        "caused_by": tally["caused_by"],
        "improvements": tally["improvement"],
        "drifts": len(drifts),
        "detected": len(delays),
        "missed": len(drifts) - len(delays),
        "matches": matches,
        "median_delay": statistics.median(delays) if delays else None,
        "mean_delay": round(statistics.fmean(delays), 1) if delays else None,
        "false_alarms_per_10k": round(false_alarms / max(events, 1) * 10_000, 4),
        "precision": _round(precision, 4),
        "recall": _round(recall, 4),
        "f1": _round(f1, 4),
    }


def periodic_points(events: int, alarms: int) -> tuple[int, list[int]]:
    """A dumb detector that fires every K events, K chosen to fire as often as the config.

    >>> periodic_points(10_000, 3)
    (3333, [3333, 6666, 9999])
    """
    every = max(1, events // max(alarms, 1))
    return every, list(range(every, events + 1, every))


# ------------------------------------------------------------------ report.json


def build_report(
    runs: list[Run],
    baseline: Run,
    meta: dict[str, Any],
    input_description: dict[str, Any],
    truth: dict[str, Any] | None,
    max_delay: int = DEFAULT_MAX_DELAY,
) -> dict[str, Any]:
    """The ``report.json`` document (shape: ``schema/report.schema.json``)."""
    configs = []
    periodic = []
    for run in runs:
        counters = run.engine.counters
        events = counters.feature_events
        labels, evaluation = score(run.detections, truth, events, max_delay)
        detections = [{**d, **label} for d, label in zip(run.detections, labels, strict=True)]
        alarms = sum(1 for label in labels if label["counted_as"] in _SCORED)
        every, points = periodic_points(events, alarms)
        dumb = [
            {"index": p, "role": "opened", "caused_by": None, "signal": "periodic"} for p in points
        ]
        periodic.append(
            {
                "config": run.name,
                "every": every,
                "detections": len(points),
                "evaluation": score(dumb, truth, events, max_delay)[1],
            }
        )
        suite = run.engine.drift
        configs.append(
            {
                "name": run.name,
                "events": events,
                "records": counters.records,
                "labeled": counters.labeled,
                "dead_lettered": counters.dead_lettered_total,
                "dead_lettered_by_reason": dict(sorted(counters.dead_lettered.items())),
                "accuracy": _round(counters.accuracy, 6),
                "accuracy_over_time": realized_accuracy(run.timeline),
                "estimated_accuracy_over_time": estimated_accuracy(run.timeline),
                "cusum_over_time": cusum_series(run.cusum_trace),
                "windowed_p_values": windowed_p_values(
                    suite.check_log if suite is not None else None,
                    suite.alpha if suite is not None else 0.0,
                ),
                "detections": detections,
                "episodes": episodes(detections, run.closed),
                "resolved": run.resolved,
                "actions": run.actions,
                "evaluation": evaluation,
                "events_per_second": round(events / max(run.seconds, 1e-9), 1),
            }
        )
    base_counters = baseline.engine.counters
    events = base_counters.feature_events
    return {
        "input": {**input_description, "records": meta["records"]},
        "dataset": dataset_summary(meta.get("dataset")),
        "truth": truth,
        "max_delay": max_delay,
        "seconds": round(meta["seconds"], 3),
        # Wall clock for the whole replay (decoding, every config and the baseline): the
        # table's per-config figure is that config's engine alone, in the same unit.
        "events_per_second": round(events / max(meta["seconds"], 1e-9), 1),
        "configs": configs,
        "baselines": {
            "no_adaptation": {
                "accuracy": _round(base_counters.accuracy, 6),
                "labeled": base_counters.labeled,
                "accuracy_over_time": realized_accuracy(baseline.timeline),
            },
            "periodic": periodic,
        },
    }


def episodes(detections: list[dict[str, Any]], closed: dict[str, int]) -> list[dict[str, Any]]:
    """One row per episode: who opened it, who confirmed it, what it counted as."""
    rows: dict[str, dict[str, Any]] = {}
    for d in detections:
        key = (
            d.get("episode") or f"{d['kind']}:{d['signal']}:{d.get('feature') or '-'}@{d['index']}"
        )
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                "id": key,
                "kind": d["kind"],
                "signal": d["signal"],
                "feature": d.get("feature"),
                "opened_at": d["index"],
                "closed_at": closed.get(key),
                "opened_by": d["detector"],
                "detectors": [],
                "declarations": 0,
                "caused_by": d.get("caused_by"),
                "counted_as": d["counted_as"],
                "delay": d.get("delay"),
            }
        row["declarations"] += 1
        if d["detector"] not in row["detectors"]:
            row["detectors"].append(d["detector"])
    return list(rows.values())


def realized_accuracy(timeline: list[tuple]) -> list[dict[str, Any]]:
    """Accuracy on the labels that arrived between consecutive points (prequential)."""
    out = []
    previous = (0, 0, 0)
    for events, labeled, right, *_ in timeline:
        if labeled > previous[1]:
            accuracy = (right - previous[2]) / (labeled - previous[1])
            out.append({"index": events, "accuracy": round(accuracy, 6)})
            previous = (events, labeled, right)
    return out


def estimated_accuracy(timeline: list[tuple]) -> list[dict[str, Any]]:
    """The label-free estimate per stretch between points: the mean top-class probability
    (right as often as it is confident, if calibrated; NannyML's CBPE idea), with a band of
    +-3 standard errors of the accuracy such a model would realize on that many events
    (``sqrt(sum p (1 - p)) / n``)."""
    out = []
    previous = (0, 0.0, 0.0)
    for events, _, _, top_sum, var_sum in timeline:
        n = events - previous[0]
        if n > 0:
            estimate = (top_sum - previous[1]) / n
            error = SAMPLING_BAND * math.sqrt(max(var_sum - previous[2], 0.0)) / n
            out.append(
                {
                    "index": events,
                    "estimated": round(estimate, 6),
                    "low": round(max(estimate - error, 0.0), 6),
                    "high": round(min(estimate + error, 1.0), 6),
                }
            )
            previous = (events, top_sum, var_sum)
    return out


def cusum_series(trace: list[tuple[int, dict[str, float]]]) -> dict[str, Any]:
    """The CUSUMs that came closest to declaring (at most ``MAX_CUSUM_SERIES``), as
    statistic / threshold: 1.0 is the declaring level for every one of them."""
    highest: dict[str, float] = {}
    for _, reading in trace:
        for name, ratio in reading.items():
            highest[name] = max(highest.get(name, 0.0), ratio)
    kept = sorted(highest, key=lambda name: (-highest[name], name))[:MAX_CUSUM_SERIES]
    return {
        "indices": [index for index, _ in trace],
        "series": {name: [reading.get(name) for _, reading in trace] for name in kept},
    }


def windowed_p_values(log: Iterable[tuple] | None, alpha: float) -> dict[str, Any]:
    """Per-feature KS / chi-square p-values at each windowed check, and the per-test level
    a p-value must fall below to raise."""
    entries = [e for e in (log or []) if e[2] in ("ks", "chi2")]
    indices = sorted({e[0] for e in entries})
    features = sorted({e[1] for e in entries})
    at = {index: j for j, index in enumerate(indices)}
    matrix: dict[str, list[float | None]] = {f: [None] * len(indices) for f in features}
    for index, feature, _, p in entries:
        matrix[feature][at[index]] = float(f"{p:.4g}")
    return {"alpha": float(f"{alpha:.4g}"), "indices": indices, "features": matrix}


def dataset_summary(profile: DatasetProfile | None) -> dict[str, Any] | None:
    """Rows, each feature's type and missing share, the label mix."""
    if profile is None:
        return None
    rows = max(profile.feature_events, 1)
    features = []
    for name, (numeric, categorical, missing) in sorted(profile.features.items()):
        kind = "numeric" if not categorical else "categorical" if not numeric else "mixed"
        features.append(
            {
                "name": name,
                "type": kind,
                "present": numeric + categorical,
                "missing_share": round(missing / rows, 6),
            }
        )
    labels = sum(profile.labels.values())
    return {
        "records": profile.records,
        "feature_events": profile.feature_events,
        "label_events": profile.label_events,
        "rejected": profile.rejected,
        "labels": labels,
        "features": features,
        "features_truncated": profile.truncated,
        "label_shares": {
            k: round(v / labels, 6) for k, v in sorted(profile.labels.items(), key=lambda kv: kv[0])
        },
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
