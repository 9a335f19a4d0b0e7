"""One-shot drift check: a reference batch against a current batch, column by column.

The classic check for people who have two batches rather than a stream. Numeric columns
with more than 5 distinct reference values get a two-sample Kolmogorov-Smirnov test
(p-values exactly scipy's ``ks_2samp``), other columns a chi-square test on category
counts; every column also gets PSI on reference-quantile bins (or categories). A column
drifts when its p-value, adjusted for the number of columns (Bonferroni by default, or
Benjamini-Hochberg, or none), is below the threshold; the dataset drifts when at least
``share`` of the columns do.

>>> ref = [{"x": float(i), "c": "a"} for i in range(100)]
>>> cur = [{"x": float(i) + 50, "c": "a"} for i in range(100)]
>>> result = compare(ref, cur)
>>> result["columns"]["x"]["test"], result["columns"]["x"]["drifted"], result["dataset"]["drift"]
('ks', True, True)
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamheal.detectors import stats
from streamheal.scenarios import parse_cell

NUMERIC_MIN_UNIQUE = 6  # Evidently's rule: up to 5 distinct values is categorical


def read_table(path: str | Path, label: str | None = None) -> list[dict[str, Any]]:
    """Rows from a CSV (header row; numbers parsed) or a JSONL file in the event schema
    (features, plus the label as a column, joined from a later label event if need be)."""
    file = Path(path)
    if file.suffix.lower() == ".csv":
        with file.open(newline="") as handle:
            rows = [{k: parse_cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        if label is not None and rows and label not in rows[0]:
            raise ValueError(f"{file}: no column {label!r}")
        return rows
    rows: dict[str, dict[str, Any]] = {}  # by id, in order: a later label event joins its row
    target = label or "label"
    with file.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise ValueError(f"{file}:{number}: not JSON ({err})") from err
            if not isinstance(event, dict):
                continue
            event_id = str(event.get("id", number))
            if isinstance(event.get("features"), dict):
                rows[event_id] = dict(event["features"])
            if event.get("label") is not None and event_id in rows:
                rows[event_id][target] = event["label"]
    return list(rows.values())


def compare(
    reference: list[dict[str, Any]],
    current: list[dict[str, Any]],
    threshold: float = 0.05,
    correction: str = "bonferroni",
    share: float = 0.5,
) -> dict[str, Any]:
    """Per-column test, statistic, p-value (raw and adjusted), PSI, drifted; and a verdict."""
    names = list(dict.fromkeys(k for row in reference for k in row))
    columns: dict[str, dict[str, Any]] = {}
    for name in names:
        ref = [row.get(name) for row in reference]
        cur = [row.get(name) for row in current]
        columns[name] = _column(ref, cur)
    tested = [n for n in names if columns[n]["p_value"] is not None]
    adjusted = _adjust([columns[n]["p_value"] for n in tested], correction)
    for name, p in zip(tested, adjusted, strict=True):
        columns[name]["p_value_adjusted"] = p
        columns[name]["drifted"] = p < threshold
    drifted = sum(1 for c in columns.values() if c.get("drifted"))
    total = max(len(tested), 1)
    return {
        "reference_rows": len(reference),
        "current_rows": len(current),
        "threshold": threshold,
        "correction": correction,
        "columns": columns,
        "dataset": {
            "columns": len(tested),
            "drifted_columns": drifted,
            "share": drifted / total,
            "drift_share": share,
            "drift": drifted / total >= share,
        },
    }


def _column(ref: list[Any], cur: list[Any]) -> dict[str, Any]:
    ref_numbers = _numbers(ref)
    cur_numbers = _numbers(cur)
    numeric = ref_numbers is not None and cur_numbers is not None
    if numeric and len(np.unique(ref_numbers)) >= NUMERIC_MIN_UNIQUE and len(cur_numbers):
        sorted_ref = np.sort(ref_numbers)
        d, p = stats.ks_2samp(sorted_ref, cur_numbers)
        edges = stats.quantile_edges(sorted_ref, 10)
        value = stats.psi(
            stats.binned_counts(edges, sorted_ref), stats.binned_counts(edges, cur_numbers)
        )
        return {
            "type": "numeric",
            "test": "ks",
            "statistic": d,
            "p_value": p,
            "psi": value,
            "drifted": False,
            "reference": stats.summary(sorted_ref),
            "current": stats.summary(cur_numbers),
        }
    ref_labels = [str(v) for v in ref if v is not None]
    cur_labels = [str(v) for v in cur if v is not None]
    categories = sorted(set(ref_labels) | set(cur_labels))
    if not categories or not cur_labels:
        return {
            "type": "empty",
            "test": None,
            "statistic": None,
            "p_value": None,
            "psi": None,
            "drifted": False,
        }
    ref_counts = np.array([ref_labels.count(c) for c in categories])
    cur_counts = np.array([cur_labels.count(c) for c in categories])
    statistic, p = stats.chi2_homogeneity(ref_counts, cur_counts)
    return {
        "type": "categorical",
        "test": "chi2",
        "statistic": statistic,
        "p_value": p,
        "psi": stats.psi(ref_counts, cur_counts),
        "drifted": False,
        "reference": dict(
            zip(categories, (ref_counts / max(ref_counts.sum(), 1)).round(6).tolist(), strict=True)
        ),
        "current": dict(
            zip(categories, (cur_counts / max(cur_counts.sum(), 1)).round(6).tolist(), strict=True)
        ),
    }


def _numbers(values: list[Any]) -> np.ndarray | None:
    present = [v for v in values if v is not None]
    if any(isinstance(v, str | bool) for v in present):
        return None
    array = np.array(present, dtype=float)
    return array[np.isfinite(array)]


def _adjust(p_values: list[float], correction: str) -> list[float]:
    m = len(p_values)
    if correction == "none" or m == 0:
        return list(p_values)
    if correction == "bonferroni":
        return [min(1.0, p * m) for p in p_values]
    order = sorted(range(m), key=p_values.__getitem__)  # Benjamini-Hochberg step-up
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = min(1.0, running)
    return adjusted


def render_html(result: dict[str, Any], reference: list[dict], current: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["columns"])
    cols = 3
    rows = max(1, math.ceil(len(names) / cols))
    figure, axes = plt.subplots(rows, cols, figsize=(12, 2.6 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        column = result["columns"][name]
        ref = [r.get(name) for r in reference]
        cur = [r.get(name) for r in current]
        if column["type"] == "numeric":
            a, b = _numbers(ref), _numbers(cur)
            bins = np.histogram_bin_edges(np.concatenate([a, b]), bins=20)
            axis.hist(a, bins=bins, alpha=0.55, density=True, label="reference")
            axis.hist(b, bins=bins, alpha=0.55, density=True, label="current")
        elif column["type"] == "categorical":
            categories = list(column["reference"])
            x = np.arange(len(categories))
            axis.bar(x - 0.2, [column["reference"][c] for c in categories], 0.4, label="reference")
            axis.bar(x + 0.2, [column["current"][c] for c in categories], 0.4, label="current")
            axis.set_xticks(x, categories, fontsize=7, rotation=30)
        flag = "DRIFT" if column.get("drifted") else "ok"
        axis.set_title(
            f"{name}: {flag}", fontsize=9, color="red" if column.get("drifted") else "black"
        )
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    image = base64.b64encode(buffer.getvalue()).decode()
    dataset = result["dataset"]
    table = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{c['test']}</td><td>{_fmt(c['statistic'])}</td>"
        f"<td>{_fmt(c['p_value'])}</td><td>{_fmt(c.get('p_value_adjusted'))}</td>"
        f"<td>{_fmt(c['psi'])}</td><td>{'yes' if c.get('drifted') else 'no'}</td></tr>"
        for n, c in result["columns"].items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>streamheal compare</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}</style></head><body>"
        f"<h1>Reference vs current</h1><p>{result['reference_rows']} reference rows, "
        f"{result['current_rows']} current rows; {dataset['drifted_columns']} of "
        f"{dataset['columns']} columns drifted at p &lt; {result['threshold']} "
        f"({html.escape(result['correction'])} correction): dataset drift "
        f"<b>{'yes' if dataset['drift'] else 'no'}</b>.</p>"
        "<table><tr><th>column</th><th>test</th><th>statistic</th><th>p-value</th>"
        f"<th>adjusted</th><th>PSI</th><th>drifted</th></tr>{table}</table>"
        f"<img alt='histograms' src='data:image/png;base64,{image}'></body></html>"
    )


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4g}"
