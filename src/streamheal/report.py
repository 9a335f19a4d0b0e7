"""The replay report: ``report.json`` (documented shape, JSON Schema in the package) and a
self-contained ``report.html`` (plots inlined as PNG).

Detection quality against a truth file: a *detection* is a check at which anything was
declared (several signals declared at the same event count once). The first detection
within ``max_delay`` events after a true drift is a true positive with that delay; other
detections inside that window are not counted against the config; any detection outside
every window is a false alarm; a true drift without a detection is missed.
"""

from __future__ import annotations

import base64
import html
import io
import statistics
from typing import Any

import numpy as np

from streamheal.replay import Run


def evaluate(
    detection_points: list[int], truth: dict[str, Any] | None, events: int, max_delay: int
) -> dict[str, Any] | None:
    """True positives, false alarms, misses, delays and F1 for a list of detection indices.

    >>> truth = {"drifts": [{"index": 100}, {"index": 5000}]}
    >>> evaluate([120, 2500, 5200], truth, events=10000, max_delay=1000)["f1"]
    0.8
    """
    if truth is None:
        return None
    drifts = sorted(d["index"] for d in truth.get("drifts", []))
    points = sorted(set(detection_points))
    delays = []
    matched: set[int] = set()
    for start in drifts:
        window = [p for p in points if start <= p <= start + max_delay]
        matched.update(window)
        if window:
            delays.append(window[0] - start)
    true_positives = len(delays)
    false_alarms = len([p for p in points if p not in matched])
    precision = true_positives / (true_positives + false_alarms) if points else 0.0
    recall = true_positives / len(drifts) if drifts else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "true_positives": true_positives,
        "false_alarms": false_alarms,
        "missed": len(drifts) - true_positives,
        "median_delay": statistics.median(delays) if delays else None,
        "mean_delay": statistics.fmean(delays) if delays else None,
        "false_alarms_per_10k": round(false_alarms / max(events, 1) * 10_000, 4),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def periodic_points(events: int, detections: int) -> tuple[int, list[int]]:
    """A dumb detector that fires every K events, K chosen to fire as often as the config."""
    every = max(1, events // max(detections, 1))
    return every, list(range(every, events + 1, every))


def build_report(
    runs: list[Run],
    baseline: Run,
    meta: dict[str, Any],
    input_description: dict[str, Any],
    truth: dict[str, Any] | None,
    max_delay: int,
) -> dict[str, Any]:
    configs = []
    periodic = []
    for run in runs:
        counters = run.engine.counters
        events = counters.feature_events
        points = sorted({d["index"] for d in run.detections})
        every, dumb = periodic_points(events, len(points))
        periodic.append(
            {
                "config": run.name,
                "every": every,
                "detections": len(dumb),
                "evaluation": evaluate(dumb, truth, events, max_delay),
            }
        )
        configs.append(
            {
                "name": run.name,
                "events": events,
                "records": counters.records,
                "labeled": counters.labeled,
                "dead_lettered": counters.dead_lettered_total,
                "dead_lettered_by_reason": dict(sorted(counters.dead_lettered.items())),
                "accuracy": _round(counters.accuracy),
                "accuracy_over_time": _timeline(run.timeline),
                "detections": run.detections,
                "resolved": run.resolved,
                "actions": run.actions,
                "evaluation": evaluate(points, truth, events, max_delay),
                "events_per_second": round(counters.records / max(run.seconds, 1e-9), 1),
            }
        )
    base_counters = baseline.engine.counters
    return {
        "input": {**input_description, "records": meta["records"]},
        "truth": truth,
        "max_delay": max_delay,
        "events_per_second": round(meta["records"] / max(meta["seconds"], 1e-9), 1),
        "configs": configs,
        "baselines": {
            "no_adaptation": {
                "accuracy": _round(base_counters.accuracy),
                "labeled": base_counters.labeled,
                "accuracy_over_time": _timeline(baseline.timeline),
            },
            "periodic": periodic,
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _timeline(points: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    """Accuracy between consecutive points (prequential, windowed by the report's cadence)."""
    out = []
    previous = (0, 0, 0)
    for events, labeled, right in points:
        if labeled > previous[1]:
            accuracy = (right - previous[2]) / (labeled - previous[1])
            out.append({"index": events, "accuracy": round(accuracy, 6)})
            previous = (events, labeled, right)
    return out


# ----------------------------------------------------------------------- html


def render_html(report: dict[str, Any], runs: list[Run]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    figures = [
        ("Prequential accuracy over time", _accuracy_plot(report)),
        ("Per-feature drift p-values over time", _heatmap(runs)),
        ("Prediction confidence before and after the first detection", _confidence_plot(runs)),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>streamheal replay report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "font-size:13px;text-align:right}th{background:#f4f4f4}img{max-width:100%}"
        "td.l,th.l{text-align:left}</style></head><body>",
        "<h1>streamheal replay report</h1>",
        f"<p>Input: {html.escape(str(report['input']))}<br>"
        f"Throughput: {report['events_per_second']:,} records/s; max delay "
        f"{report['max_delay']} events.</p>",
        _summary_table(report),
    ]
    for title, image in figures:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(
            f"<img alt='{html.escape(title)}' src='data:image/png;base64,{image}'>"
            if image
            else "<p>(nothing to plot)</p>"
        )
    for config in report["configs"]:
        parts.append(f"<h2>Detections: {html.escape(config['name'])}</h2>")
        parts.append(_detections_table(config["detections"][:500]))
        parts.append(f"<h2>Actions: {html.escape(config['name'])}</h2>")
        parts.append(_actions_table(config["actions"][:500]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary_table(report: dict[str, Any]) -> str:
    head = (
        "<tr><th class='l'>config</th><th>events</th><th>labeled</th><th>dead-lettered</th>"
        "<th>accuracy</th><th>detections</th><th>TP</th><th>false alarms</th><th>missed</th>"
        "<th>median delay</th><th>F1</th><th>events/s</th></tr>"
    )
    rows = []
    periodic = {p["config"]: p for p in report["baselines"]["periodic"]}
    for c in report["configs"]:
        e = c["evaluation"] or {}
        rows.append(
            _row(
                c["name"],
                c["events"],
                c["labeled"],
                c["dead_lettered"],
                c["accuracy"],
                len(c["detections"]),
                e.get("true_positives"),
                e.get("false_alarms"),
                e.get("missed"),
                e.get("median_delay"),
                e.get("f1"),
                c["events_per_second"],
            )
        )
        p = periodic[c["name"]]
        pe = p["evaluation"] or {}
        rows.append(
            _row(
                f"periodic every {p['every']} (baseline)",
                "",
                "",
                "",
                "",
                p["detections"],
                pe.get("true_positives"),
                pe.get("false_alarms"),
                pe.get("missed"),
                pe.get("median_delay"),
                pe.get("f1"),
                "",
            )
        )
    base = report["baselines"]["no_adaptation"]
    rows.append(
        _row(
            "no adaptation (baseline)",
            "",
            base["labeled"],
            "",
            base["accuracy"],
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        )
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _row(name: str, *cells: Any) -> str:
    def fmt(v: Any) -> str:
        if v is None or v == "":
            return ""
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
        return html.escape(str(v))

    return (
        f"<tr><td class='l'>{html.escape(name)}</td>"
        + "".join(f"<td>{fmt(v)}</td>" for v in cells)
        + "</tr>"
    )


def _detections_table(detections: list[dict[str, Any]]) -> str:
    if not detections:
        return "<p>No drift declared.</p>"
    keys = [
        "index",
        "offset",
        "started_index",
        "kind",
        "signal",
        "feature",
        "detector",
        "statistic",
        "p_value",
    ]
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(d.get(k, '')))}</td>" for k in keys) + "</tr>"
        for d in detections
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _actions_table(actions: list[dict[str, Any]]) -> str:
    if not actions:
        return "<p>No action taken.</p>"
    keys = ["index", "action", "model_version", "cause"]
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(a.get(k, '')))}</td>" for k in keys) + "</tr>"
        for a in actions
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _accuracy_plot(report: dict[str, Any]) -> str | None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(11, 3.5))
    truth = report["truth"] or {"drifts": []}
    for drift in truth.get("drifts", []):
        axis.axvline(drift["index"], color="black", linestyle="--", linewidth=1)
    series = [("no adaptation", report["baselines"]["no_adaptation"]["accuracy_over_time"])]
    series += [(c["name"], c["accuracy_over_time"]) for c in report["configs"]]
    for name, points in series:
        if points:
            axis.plot([p["index"] for p in points], [p["accuracy"] for p in points], label=name)
    for i, config in enumerate(report["configs"]):
        for index in sorted({d["index"] for d in config["detections"]}):
            axis.axvline(index, color=f"C{i + 1}", alpha=0.35, linewidth=1)
    axis.set_xlabel("feature event index")
    axis.set_ylabel("accuracy")
    axis.legend(loc="lower left", fontsize=8)
    axis.set_title("dashed: true drifts; thin lines: detections")
    return _png(figure)


def _heatmap(runs: list[Run]) -> str | None:
    import matplotlib.pyplot as plt

    suite = runs[0].engine.drift if runs else None
    log = list(suite.check_log) if suite is not None and suite.check_log else []
    log = [entry for entry in log if entry[2] in ("ks", "chi2")]
    if not log:
        return None
    indices = sorted({entry[0] for entry in log})
    features = sorted({entry[1] for entry in log})
    matrix = np.full((len(features), len(indices)), np.nan)
    col = {index: j for j, index in enumerate(indices)}
    row = {feature: i for i, feature in enumerate(features)}
    for index, feature, _, p in log:
        matrix[row[feature], col[index]] = -np.log10(max(p, 1e-300))
    figure, axis = plt.subplots(figsize=(11, max(2.5, 0.22 * len(features) + 1)))
    step = (indices[-1] - indices[0]) / max(len(indices) - 1, 1) or 1  # cells centred on checks
    image = axis.imshow(
        np.minimum(matrix, 20),
        aspect="auto",
        cmap="magma_r",
        interpolation="nearest",
        extent=(indices[0] - step / 2, indices[-1] + step / 2, len(features) - 0.5, -0.5),
    )
    axis.set_yticks(range(len(features)))
    axis.set_yticklabels(features, fontsize=7)
    axis.set_xlabel("feature event index (windowed checks)")
    figure.colorbar(image, ax=axis, label="-log10 p (KS / chi-square), capped at 20")
    axis.set_title(f"{runs[0].name}")
    return _png(figure)


def _confidence_plot(runs: list[Run]) -> str | None:
    import matplotlib.pyplot as plt
    from scipy.stats import gaussian_kde

    run = next((r for r in runs if r.confidence_before), None)
    if run is None or len(run.confidence_after) < 2:
        return None
    figure, axis = plt.subplots(figsize=(8, 3.5))
    grid = np.linspace(0.0, 1.0, 200)
    for label, values in (("before", run.confidence_before), ("after", run.confidence_after)):
        data = np.asarray(values)
        if np.ptp(data) > 0:
            axis.plot(grid, gaussian_kde(data)(grid), label=f"{label} (n={len(data)})")
        else:
            axis.axvline(data[0], label=f"{label} (all {data[0]:.2f})")
    axis.set_xlabel("top-class probability")
    axis.set_ylabel("density")
    axis.legend()
    axis.set_title(f"{run.name}: first detection at event {run.detections[0]['index']}")
    return _png(figure)
