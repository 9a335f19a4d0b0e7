"""``report.html``: one self-contained page drawn from ``report.json`` (matplotlib PNGs
inlined, no script, nothing fetched).

Everything here reads the report dict only, so a saved ``report.json`` can be drawn again,
and the figure functions return matplotlib figures for a notebook. Needs the ``[report]``
extra (matplotlib).

One colour (and marker) per ``counted_as`` is used in every figure and table, the p-value
heat map has one fixed colour scale in every report (-log10 p from 0 to ``P_CAP``) with
the config's per-test level marked, and true drifts are drawn on every time axis.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# colour, marker, legend text: the same in figures and in the tables' badges.
COUNTED_AS: dict[str, tuple[str, str, str]] = {
    "true_positive": ("#1a9850", "o", "true positive"),
    "confirmation": ("#4575b4", "s", "confirmation"),
    "caused_by": ("#8073ac", "D", "caused by"),
    "improvement": ("#35978f", "^", "improvement"),
    "false_alarm": ("#d73027", "X", "false alarm"),
    "unscored": ("#525252", "o", "opened (no truth)"),
}
P_CAP = 20.0  # -log10 p: 1e-20 and below are drawn alike, in every report
MAX_EPISODE_ROWS = 20
MAX_DISTRIBUTIONS = 12
MAX_TABLE_ROWS = 500
DASH = "–"
WIDTH = 11.0  # inches at DPI: the page's figure width
DPI = 90
RIGHT = 0.79  # the axes end here; legends and colour bars live in the margin to the right

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1120px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;white-space:normal;vertical-align:bottom}td.l,th.l{text-align:left}
td.w{white-space:normal;text-align:left;min-width:9em;max-width:22em;overflow-wrap:anywhere}
img{max-width:100%;display:block;margin:.4em 0}
.b{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:11.5px}
details{border:1px solid #ddd;border-radius:6px;padding:.3em .8em;margin:.8em 0}
summary{cursor:pointer;font-weight:600;font-size:1.1em;padding:.3em 0}
.note{color:#555;font-size:13px}.wide{overflow-x:auto}
.cols{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap}
"""


def render_html(report: dict[str, Any]) -> str:
    """The whole page."""
    import matplotlib

    matplotlib.use("Agg")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>streamheal replay report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>streamheal replay report</h1>",
        f"<p>{_input_line(report)}</p>",
        _dataset_section(report.get("dataset")),
        "<h2>Configs</h2>",
        _legend_badges(),
        _summary_table(report),
    ]
    tradeoff = tradeoff_figure(report)
    if tradeoff is not None:
        parts.append("<h3>Delay against false alarms, one point per config</h3>")
        parts.append(_img(tradeoff, "delay against false alarms per config"))
    for number, config in enumerate(report["configs"], 1):
        parts.append(_config_panel(report, config, number, open_=number == 1))
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------- figures


def timeline_figure(report: dict[str, Any], config: dict[str, Any]) -> Figure:
    """One config over time, on one shared axis: accuracy (realized and estimated), every
    detection by episode, the CUSUMs against their thresholds, the windowed p-values."""
    import matplotlib.pyplot as plt

    rows: list[tuple[str, float]] = [("accuracy", 2.4)]
    episodes = _episode_rows(config)
    if episodes:
        rows.append(("detections", 0.6 + 0.2 * len(episodes)))
    cusum = config.get("cusum_over_time") or {}
    if cusum.get("series"):
        rows.append(("cusum", 2.2))
    pvalues = config.get("windowed_p_values") or {}
    if pvalues.get("indices"):
        rows.append(("pvalues", 0.6 + 0.2 * len(pvalues["features"])))
    figure, axes = plt.subplots(
        len(rows),
        1,
        sharex=True,
        squeeze=False,
        figsize=(WIDTH, sum(h for _, h in rows) + 0.6),
        gridspec_kw={"height_ratios": [h for _, h in rows], "hspace": 0.12},
    )
    figure.subplots_adjust(left=0.16, right=RIGHT, top=0.97, bottom=0.5 / sum(h for _, h in rows))
    draw = {
        "accuracy": lambda ax: _accuracy_axis(ax, report, config),
        "detections": lambda ax: _detections_axis(ax, config, episodes),
        "cusum": lambda ax: _cusum_axis(ax, config),
        "pvalues": lambda ax: _pvalue_axis(ax, pvalues),
    }
    for (name, _), axis in zip(rows, axes[:, 0], strict=True):
        draw[name](axis)
        _mark_truth(axis, report)
    axes[-1, 0].set_xlabel("feature event index")
    axes[-1, 0].set_xlim(0, max(config["events"], 1))
    return figure


def accuracy_figure(report: dict[str, Any], config: dict[str, Any]) -> Figure:
    """Realized accuracy against the label-free estimate (with its band) and the
    no-adaptation baseline, over time: the top panel of :func:`timeline_figure`."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(WIDTH, 3.0))
    figure.subplots_adjust(left=0.08, right=RIGHT, top=0.95, bottom=0.16)
    _accuracy_axis(axis, report, config)
    _mark_truth(axis, report)
    axis.set_xlabel("feature event index")
    axis.set_xlim(0, max(config["events"], 1))
    return figure


def p_value_figure(report: dict[str, Any], config: dict[str, Any]) -> Figure | None:
    """The windowed KS / chi-square p-values per feature as a heat map (None before the
    first windowed check): the bottom panel of :func:`timeline_figure`."""
    import matplotlib.pyplot as plt

    pvalues = config.get("windowed_p_values") or {}
    if not pvalues.get("indices"):
        return None
    figure, axis = plt.subplots(figsize=(WIDTH, 1.2 + 0.22 * len(pvalues["features"])))
    figure.subplots_adjust(left=0.16, right=RIGHT, top=0.95, bottom=0.2)
    _pvalue_axis(axis, pvalues)
    _mark_truth(axis, report)
    axis.set_xlabel("feature event index")
    return figure


def distribution_figure(config: dict[str, Any]) -> Figure | None:
    """Reference against current window for every feature with a covariate drift (the
    summaries its first declaration carried): quantile boxes, or category shares."""
    import matplotlib.pyplot as plt

    found: dict[str, dict[str, Any]] = {}
    for d in config["detections"]:
        if d["kind"] == "covariate" and d.get("feature") and d.get("reference"):
            found.setdefault(d["feature"], d)
    if not found:
        return None
    chosen = list(found.items())[:MAX_DISTRIBUTIONS]
    columns = min(3, len(chosen))
    lines = math.ceil(len(chosen) / columns)
    figure, axes = plt.subplots(
        lines, columns, squeeze=False, figsize=(min(WIDTH, 4.2 * columns), 1.7 * lines + 0.3)
    )
    width = figure.get_figwidth()  # tick labels need an inch whatever the figure's width
    figure.subplots_adjust(
        left=1.0 / width, right=0.98, top=0.9, bottom=0.12, hspace=0.9, wspace=0.45
    )
    for axis, (feature, detection) in zip(axes.flat, chosen, strict=False):
        reference, current = detection["reference"], detection.get("current") or {}
        if "q50" in reference:
            _boxes(axis, reference, current)
        else:
            _shares(axis, reference, current)
        axis.set_title(f"{feature} · {detection['detector']} at {detection['index']:,}", fontsize=9)
    for axis in list(axes.flat)[len(chosen) :]:
        axis.set_visible(False)
    return figure


def tradeoff_figure(report: dict[str, Any]) -> Figure | None:
    """Mean delay against false alarms per 10k events, one numbered point per config."""
    import matplotlib.pyplot as plt

    points = [
        (number, c["evaluation"])
        for number, c in enumerate(report["configs"], 1)
        if c.get("evaluation")
    ]
    if len(points) < 2:
        return None
    figure, axis = plt.subplots(figsize=(6.5, 3.2))
    figure.subplots_adjust(left=0.13, right=0.97, top=0.95, bottom=0.17)
    top = report["max_delay"]
    spots: dict[tuple[float, float], list[int]] = {}
    for number, evaluation in points:
        delay = evaluation["mean_delay"]
        spot = (evaluation["false_alarms_per_10k"], top if delay is None else delay)
        spots.setdefault(spot, []).append(number)
        if delay is None:  # nothing detected: drawn on the top edge, hollow
            axis.scatter(*spot, facecolors="none", edgecolors="#d73027")
        else:
            axis.scatter(*spot, color="#4575b4")
    for spot, numbers in spots.items():  # configs on the same spot share one label
        text = ", ".join(f"#{n}" for n in numbers)
        axis.annotate(text, spot, textcoords="offset points", xytext=(5, 4), fontsize=8)
    axis.set_xlabel("false alarms per 10,000 events")
    axis.set_ylabel("mean delay (events)")
    axis.set_ylim(bottom=0, top=top * 1.08)
    axis.set_xlim(0, max(x for x, _ in spots) * 1.3 + 0.5)  # room for the labels
    axis.grid(alpha=0.3)
    return figure


# ------------------------------------------------------------------- axis parts


def _accuracy_axis(axis: Axes, report: dict[str, Any], config: dict[str, Any]) -> None:
    estimated = config.get("estimated_accuracy_over_time") or []
    if estimated:
        x = [p["index"] for p in estimated]
        axis.fill_between(
            x,
            [p["low"] for p in estimated],
            [p["high"] for p in estimated],
            step="pre",
            color="#fdae61",
            alpha=0.35,
            linewidth=0,
            label="estimate ±3 s.e.",
        )
        axis.step(
            x, [p["estimated"] for p in estimated], color="#e66101", linewidth=1.2,
            label="estimated (no labels)",
        )  # fmt: skip
    realized = config["accuracy_over_time"]
    if realized:
        axis.step(
            [p["index"] for p in realized],
            [p["accuracy"] for p in realized],
            color="#2166ac",
            linewidth=1.4,
            label="realized (labels)",
        )
    base = report["baselines"]["no_adaptation"]["accuracy_over_time"]
    if base:
        axis.step(
            [p["index"] for p in base],
            [p["accuracy"] for p in base],
            color="#999999",
            linewidth=0.9,
            label="no adaptation",
        )
    for action in config["actions"]:
        if action["action"] in ("reset", "promote", "rollback", "install"):
            axis.axvline(action["index"], color="#2166ac", linestyle=":", linewidth=0.9)
    axis.set_ylabel("accuracy")
    low = min([p["accuracy"] for p in realized] + [p["low"] for p in estimated] + [1.0])
    axis.set_ylim(max(0.0, low - 0.05), 1.01)
    axis.plot([], [], color="black", linestyle="--", linewidth=1, label="true drift")
    axis.plot([], [], color="#2166ac", linestyle=":", linewidth=0.9, label="model replaced")
    _legend(axis)


def _episode_rows(config: dict[str, Any]) -> list[str]:
    """Episode rows of the detection strip: (kind, signal, feature), most declarations first."""
    counts: dict[str, int] = {}
    for d in config["detections"]:
        counts[_row_name(d)] = counts.get(_row_name(d), 0) + 1
    return sorted(counts, key=lambda name: (-counts[name], name))[:MAX_EPISODE_ROWS]


def _row_name(d: dict[str, Any]) -> str:
    return f"{d['kind']} · {d.get('feature') or d['signal']}"


def _detections_axis(axis: Axes, config: dict[str, Any], rows: list[str]) -> None:
    position = {name: i for i, name in enumerate(rows)}
    used: set[str] = set()
    for d in config["detections"]:
        row = position.get(_row_name(d))
        if row is None:
            continue
        kind = d["counted_as"]
        colour, marker, label = COUNTED_AS[kind]
        axis.scatter(
            [d["index"]],
            [row],
            color=colour,
            marker=marker,
            s=38,
            edgecolors="white",
            linewidths=0.5,
            zorder=3,
            label=None if kind in used else label,
        )
        used.add(kind)
    axis.set_yticks(range(len(rows)))
    axis.set_yticklabels(rows, fontsize=8)
    axis.set_ylim(len(rows) - 0.5, -0.5)
    axis.grid(axis="y", alpha=0.25)
    _legend(axis)


def _cusum_axis(axis: Axes, config: dict[str, Any]) -> None:
    cusum = config["cusum_over_time"]
    x = cusum["indices"]
    for number, (name, values) in enumerate(cusum["series"].items()):
        points = [(i, v) for i, v in zip(x, values, strict=True) if v is not None]
        axis.plot(
            [i for i, _ in points],
            [v for _, v in points],
            linewidth=1,
            color=f"C{number % 10}",
            linestyle="-" if number < 10 else "--",
            label=name,
        )
    axis.axhline(1.0, color="#d73027", linewidth=1.2, linestyle="--", label="threshold")
    for d in config["detections"]:  # a declaration at its statistic, on the same scale
        if d["detector"] == "cusum" and d.get("threshold"):
            colour, marker, _ = COUNTED_AS[d["counted_as"]]
            ratio = min(d["statistic"] / d["threshold"], 2.1)
            axis.scatter([d["index"]], [ratio], color=colour, marker=marker, s=30, zorder=3)
    axis.set_ylabel("CUSUM / threshold")
    axis.set_ylim(0, 2.15)
    _legend(axis, fontsize=7)


def _pvalue_axis(axis: Axes, pvalues: dict[str, Any]) -> None:
    import numpy as np
    from matplotlib.colors import Normalize

    indices = pvalues["indices"]
    features = sorted(pvalues["features"])
    matrix = np.full((len(features), len(indices)), np.nan)
    for i, feature in enumerate(features):
        for j, p in enumerate(pvalues["features"][feature]):
            if p is not None:
                matrix[i, j] = min(-math.log10(max(p, 1e-300)), P_CAP)
    # A cell runs from its check to the next: the latest verdict at every point in time
    # (drawn centred, a change would seem to show before it happened).
    step = (indices[-1] - indices[0]) / max(len(indices) - 1, 1) or indices[0] or 1
    image = axis.imshow(
        matrix,
        aspect="auto",
        cmap="magma_r",
        norm=Normalize(0.0, P_CAP),  # fixed: the same colour means the same p everywhere
        interpolation="nearest",
        extent=(indices[0], indices[-1] + step, len(features) - 0.5, -0.5),
    )
    level = -math.log10(pvalues["alpha"]) if pvalues["alpha"] > 0 else None
    if level is not None:  # the cells that raise, ringed so they read at any colour
        rows, cols = np.nonzero(matrix > level)
        axis.scatter(
            [indices[c] + step / 2 for c in cols],
            rows,
            marker="o",
            s=14,
            facecolors="none",
            edgecolors="#00d0ff",
            linewidths=0.9,
        )
    axis.set_yticks(range(len(features)))
    axis.set_yticklabels(features, fontsize=7)
    axis.set_ylabel("KS / χ² per feature", fontsize=9)
    bar_axis = axis.inset_axes((1.02, 0.0, 0.018, 1.0))
    bar = axis.figure.colorbar(image, cax=bar_axis)
    bar.set_label("−log10 p", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if level is not None:
        bar.ax.axhline(min(level, P_CAP), color="#00d0ff", linewidth=2)
        bar.ax.text(
            3.2,
            min(level, P_CAP) / P_CAP,
            f"α = {_p(pvalues['alpha'])}\n(ringed: raise)",
            transform=bar.ax.transAxes,
            fontsize=7,
            va="center",
        )


def _mark_truth(axis: Axes, report: dict[str, Any]) -> None:
    for drift in (report.get("truth") or {}).get("drifts", []):
        axis.axvline(drift["index"], color="black", linestyle="--", linewidth=1, zorder=4)
        end = drift["index"] + max(int(drift.get("width", 1)), 1) - 1 + report["max_delay"]
        axis.axvspan(drift["index"], end, color="#000000", alpha=0.05, linewidth=0)


def _legend(axis: Axes, fontsize: int = 8) -> None:
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=fontsize, frameon=False)


def _boxes(axis: Axes, reference: dict[str, Any], current: dict[str, Any]) -> None:
    from matplotlib.patches import Rectangle

    for y, (summary, colour) in enumerate(((current, "#d73027"), (reference, "#4575b4"))):
        if "q50" not in summary:
            continue
        axis.plot([summary["q05"], summary["q95"]], [y, y], color=colour, linewidth=1)
        axis.add_patch(
            Rectangle(
                (summary["q25"], y - 0.28),
                summary["q75"] - summary["q25"],
                0.56,
                facecolor=colour,
                alpha=0.35,
                edgecolor=colour,
            )
        )
        axis.plot([summary["q50"]] * 2, [y - 0.28, y + 0.28], color=colour, linewidth=2)
        axis.plot([summary["mean"]], [y], marker="d", color="black", markersize=4)
    axis.set_yticks([0, 1])
    axis.set_yticklabels(
        [f"current\nn={_int(current.get('n'))}", f"reference\nn={_int(reference.get('n'))}"],
        fontsize=7,
    )
    axis.set_ylim(-0.6, 1.6)
    axis.tick_params(axis="x", labelsize=7)
    axis.set_xlabel("5–25–50–75–95% quantiles, ◆ mean", fontsize=7)
    axis.autoscale_view(scaley=False)


def _shares(axis: Axes, reference: dict[str, Any], current: dict[str, Any]) -> None:
    import numpy as np

    names = sorted(set(reference) | set(current), key=lambda c: -reference.get(c, 0.0))[:8]
    y = np.arange(len(names))
    axis.barh(y - 0.2, [reference.get(c, 0.0) for c in names], 0.4, color="#4575b4")
    axis.barh(y + 0.2, [current.get(c, 0.0) for c in names], 0.4, color="#d73027")
    axis.set_yticks(y)
    axis.set_yticklabels(names, fontsize=7)
    axis.invert_yaxis()
    axis.tick_params(axis="x", labelsize=7)
    axis.set_xlabel("share: ■ reference (blue), current (red)", fontsize=7)


# ------------------------------------------------------------------------- html


def _config_panel(report: dict[str, Any], config: dict[str, Any], number: int, open_: bool) -> str:
    evaluation = config.get("evaluation")
    headline = f"#{number} {config['name']}"
    if evaluation:
        headline += (
            f" — {evaluation['true_positives']} TP, {evaluation['false_alarms']} false alarms,"
            f" {evaluation['missed']} missed, F1 {_ratio(evaluation['f1'])}"
        )
    parts = [
        f"<details{' open' if open_ else ''}><summary>{html.escape(headline)}</summary>",
        "<p class='note'>Top to bottom, on one time axis: accuracy realized from labels and "
        "estimated without them (band: ±3 standard errors); every declaration on its "
        "episode's row, coloured by what it counted as; each CUSUM's statistic over its "
        "threshold (sampled between batches; markers: declarations); windowed p-values on a "
        "fixed scale. Dashed: true drifts; shaded: the window a detection must open in.</p>",
        _img(timeline_figure(report, config), f"{config['name']} over time"),
    ]
    distributions = distribution_figure(config)
    if distributions is not None:
        parts.append("<h3>Drifted features: reference against the current window</h3>")
        parts.append(_img(distributions, f"{config['name']} drifted features"))
    parts.append("<h3>Episodes</h3>")
    parts.append(_episodes_table(config["episodes"]))
    parts.append("<h3>Declarations</h3>")
    parts.append(_detections_table(config))
    parts.append("<h3>Actions</h3>")
    parts.append(_actions_table(config["actions"]))
    parts.append("</details>")
    return "\n".join(parts)


def _input_line(report: dict[str, Any]) -> str:
    source = report["input"]
    if source.get("kind") == "topic":
        where = f"topic <b>{html.escape(str(source.get('topic')))}</b>"
        bounds = [
            f"{label} {html.escape(str(source[key]))}"
            for key, label in (("from_offset", "from offset"), ("from_time", "from"))
            if source.get(key) is not None
        ]
        if source.get("to_time") is not None:
            bounds.append(f"to {html.escape(str(source['to_time']))}")
        where += (" " + ", ".join(bounds)) if bounds else ""
    elif source.get("kind") == "file":
        where = f"file <b>{html.escape(str(source.get('path')))}</b>"
    else:
        where = html.escape(str(source.get("kind", "input")))
    events = report["configs"][0]["events"] if report["configs"] else 0
    truth = (report.get("truth") or {}).get("drifts")
    drifts = (
        f"{_count(len(truth), 'true drift')} at " + ", ".join(f"{d['index']:,}" for d in truth)
        if truth
        else "no truth file (nothing scored)"
    )
    return (
        f"Input: {where}: {_int(source['records'])} records, {_int(events)} feature events; "
        f"{drifts}; max delay {_int(report['max_delay'])} events.<br>"
        f"Replayed in {report.get('seconds', 0):,.1f} s wall clock: "
        f"{_int(round(report['events_per_second']))} events/s for "
        f"{_count(len(report['configs']), 'config')} and the no-adaptation baseline together "
        "(the table's events/s: each config's engine alone)."
    )


def _dataset_section(dataset: dict[str, Any] | None) -> str:
    if not dataset:
        return ""
    features = dataset["features"]
    types: dict[str, int] = {}
    for f in features:
        types[f["type"]] = types.get(f["type"], 0) + 1
    kinds = ", ".join(f"{n} {t}" for t, n in sorted(types.items())) or "none"
    labels = ", ".join(f"{html.escape(k)}: {_share(v)}" for k, v in dataset["label_shares"].items())
    head = (
        "<h2>Dataset</h2><p>"
        f"{_int(dataset['records'])} records: {_int(dataset['feature_events'])} feature events, "
        f"{_int(dataset['label_events'])} separate label events, {_int(dataset['labels'])} "
        f"labels in all, {_int(dataset['rejected'])} rejected. {len(features)} features "
        f"({kinds})"
        + (" (more not profiled)" if dataset.get("features_truncated") else "")
        + f". Label shares: {labels or DASH}.</p>"
    )
    rows = [
        [html.escape(f["name"]), f["type"], _int(f["present"]), _share(f["missing_share"])]
        for f in features
    ]
    # Side by side, a third each: a wide input stays one screen high.
    third = max(math.ceil(len(rows) / 3), 8)
    tables = [
        _table(["feature", "type", "values", "missing"], rows[i : i + third], left=(0, 1))
        for i in range(0, len(rows), third)
    ]
    return head + f"<div class='cols'>{''.join(tables)}</div>"


def _summary_table(report: dict[str, Any]) -> str:
    """One row per config; the baselines as a column (periodic F1) and a line above."""
    head = ["#", "config", "accuracy", "declar&shy;ations", "episodes", "TP"]
    head += ["false alarms", "missed", "precision", "recall", "F1", "periodic F1"]
    head += ["mean delay", "median delay", "FA / 10k", "events/s"]
    periodic = {p["config"]: p for p in report["baselines"]["periodic"]}
    rows = []
    for number, c in enumerate(report["configs"], 1):
        e = c["evaluation"] or {}
        dumb = periodic[c["name"]]
        rows.append(
            [
                f"#{number}",
                html.escape(c["name"]),
                _ratio(c["accuracy"]),
                _int(len(c["detections"])),
                _int(len(c["episodes"])),
                _int(e.get("true_positives")),
                _int(e.get("false_alarms")),
                _int(e.get("missed")),
                _ratio(e.get("precision")),
                _ratio(e.get("recall")),
                _ratio(e.get("f1")),
                _ratio((dumb["evaluation"] or {}).get("f1")),
                _int(e.get("mean_delay")),
                _int(e.get("median_delay")),
                _fixed(e.get("false_alarms_per_10k")),
                _int(round(c["events_per_second"])),
            ]
        )
    base = report["baselines"]["no_adaptation"]
    note = (
        "<p class='note'>Baselines: <b>no adaptation</b> (the first config's model, no "
        f"detectors, no policy) reaches accuracy {_ratio(base['accuracy'])}; "
        "<b>periodic F1</b> is a detector that fires every K events, K chosen to fire as "
        "often as the config opens episodes: a config that cannot beat it detects nothing."
        "</p>"
    )
    return note + _table(head, rows, left=(0,), wrap=1)


def _episodes_table(episodes: list[dict[str, Any]]) -> str:
    if not episodes:
        return "<p>No drift declared.</p>"
    numbers = {e["id"]: f"E{i}" for i, e in enumerate(episodes, 1)}
    rows = [
        [
            f"E{number}",
            _badge(e["counted_as"]),
            e["kind"],
            html.escape(e.get("feature") or e["signal"]),
            _int(e["opened_at"]),
            _int(e["closed_at"]),
            _int(e.get("delay")),
            html.escape(", ".join(e["detectors"])),
            _int(e["declarations"]),
            numbers.get(e["caused_by"] or "", html.escape(e["caused_by"] or DASH)),
        ]
        for number, e in enumerate(episodes, 1)
    ]
    head = ["episode", "counted as", "kind", "feature / signal", "opened at", "closed at"]
    head += ["delay", "detectors", "declarations", "caused by"]
    return _table(head, rows, left=(0, 1, 2, 7, 9), wrap=3)


def _detections_table(config: dict[str, Any]) -> str:
    detections = config["detections"]
    if not detections:
        return "<p>No drift declared.</p>"
    numbers = {e["id"]: f"E{i}" for i, e in enumerate(config["episodes"], 1)}
    rows = [
        [
            _int(d["index"]),
            _int(d.get("partition")),
            _int(d.get("offset")),
            numbers.get(d.get("episode") or "", DASH),
            d.get("role") or DASH,
            _badge(d["counted_as"]),
            html.escape(_row_name(d)),
            html.escape(d["detector"]),
            _num(d.get("statistic")),
            _num(d.get("threshold")),
            _p(d.get("p_value")),
            _int(d.get("delay")),
        ]
        for d in detections[:MAX_TABLE_ROWS]
    ]
    head = ["index", "partition", "offset", "episode", "role", "counted as", "drift"]
    head += ["detector", "statistic", "threshold", "p-value", "delay"]
    more = len(detections) - MAX_TABLE_ROWS
    note = f"<p class='note'>{_int(more)} more in report.json.</p>" if more > 0 else ""
    return _table(head, rows, left=(3, 4, 5, 7), wrap=6) + note


def _actions_table(actions: list[dict[str, Any]]) -> str:
    if not actions:
        return "<p>No action taken.</p>"
    rows = [
        [
            _int(a["index"]),
            html.escape(a["action"]),
            _int(a.get("model_version")),
            html.escape(a.get("cause") or DASH),
        ]
        for a in actions[:MAX_TABLE_ROWS]
    ]
    return _table(["index", "action", "model version", "cause"], rows, left=(1, 3))


def _legend_badges() -> str:
    return (
        "<p class='note'>Every declaration counts as one of: "
        + " ".join(_badge(kind) for kind in COUNTED_AS if kind != "unscored")
        + ". Precision = true-positive episodes / (true positives + false alarms); "
        "recall = detected drifts / true drifts.</p>"
    )


def _badge(kind: str) -> str:
    colour, _, label = COUNTED_AS[kind]
    return f"<span class='b' style='background:{colour}'>{html.escape(label)}</span>"


def _table(
    head: list[str], rows: list[list[str]], left: tuple[int, ...] = (), wrap: int | None = None
) -> str:
    """Cells come escaped and formatted. Numbers align right, the ``left`` columns left;
    the ``wrap`` column (a long name) may wrap; the table scrolls rather than overflow."""

    def cells(values: list[str], tag: str) -> str:
        def cls(i: int) -> str:
            if i == wrap and tag == "td":
                return " class=w"
            return " class=l" if i in left or i == wrap else ""

        return "".join(f"<{tag}{cls(i)}>{v}</{tag}>" for i, v in enumerate(values))

    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<div class='wide'><table><tr>{cells(head, 'th')}</tr>{body}</table></div>"


def _img(figure: Figure, alt: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


# ------------------------------------------------------------------ number formats
# One format per kind of number, everywhere: counts with thousands separators, ratios with
# three decimals, statistics with four significant digits, p-values in scientific form
# below 0.001, and a dash for "not applicable" (never None).


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _int(value: float | None) -> str:
    return DASH if value is None else f"{round(value):,}"


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.3f}"


def _share(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.1f}%"


def _fixed(value: float | None) -> str:
    return DASH if value is None else f"{value:,.2f}"


def _num(value: float | None) -> str:
    if value is None:
        return DASH
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


def _p(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"
