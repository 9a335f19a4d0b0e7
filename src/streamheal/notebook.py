"""Replay from Python: a DataFrame (or any rows) in, DataFrames and figures out.

The same Engine as ``streamheal run`` and ``streamheal replay``, fed from rows instead
of Kafka records: each row is one feature event, its ``id``, ``ts`` and ``label`` taken
from the columns you name and every other column a feature (``NaN``/``None`` = missing,
a missing label = never labeled). The result holds ``report.json``'s content and shows
it as DataFrames and matplotlib figures.

>>> from streamheal.notebook import replay, scenario_frame
>>> frame = scenario_frame("breast-cancer", events=3000, drift_at=1500)
>>> frame.shape, list(frame.columns[:3])
((3000, 33), ['id', 'ts', 'label'])
>>> result = replay(frame, truth=[1500])
>>> result.summary[["config", "events", "true_positives", "false_alarms"]]
    config  events  true_positives  false_alarms
0  default    3000               1             0
>>> result.episodes.loc[0, ["kind", "feature", "counted_as"]].tolist()
['covariate', 'mean radius', 'true_positive']
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamheal.config import Config, ConfigError
from streamheal.evaluation import DEFAULT_MAX_DELAY, build_report
from streamheal.events import Source, encode
from streamheal.replay import Record, Run, grid_configs
from streamheal.replay import replay as replay_records

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

ConfigsLike = Config | Mapping[str, Config] | Sequence[tuple[str, Config]] | None
TruthLike = Mapping[str, Any] | Sequence[int] | None

_SOURCE = "dataframe"
_EMPTY_COLUMNS = {
    "detections": ["config", "index", "kind", "signal", "feature", "detector", "counted_as"],
    "episodes": ["config", "id", "kind", "signal", "feature", "opened_at", "counted_as"],
    "actions": ["config", "index", "action", "model_version", "cause"],
}


def replay(
    data: pd.DataFrame | Iterable[Mapping[str, Any]],
    config: ConfigsLike = None,
    *,
    id: str | None = "id",  # the column's name, as the event schema calls it
    ts: str | None = "ts",
    label: str | None = "label",
    truth: TruthLike = None,
    max_delay: int = DEFAULT_MAX_DELAY,
    progress: bool = False,
) -> ReplayResult:
    """Run the Engine over ``data``, once per config, and score it against ``truth``.

    Parameters
    ----------
    data
        A pandas DataFrame, or any iterable of dicts, one row per feature event, in
        stream order.
    config
        A :class:`~streamheal.config.Config`, ``{name: Config}``, a list of
        ``(name, Config)`` (what :func:`grid` returns), or None for the defaults.
    id, ts, label
        The columns holding the event id, its time (epoch seconds, or a datetime) and its
        label. ``id=None`` numbers the rows, ``ts=None`` spaces them a second apart,
        ``label=None`` means no labels at all.
    truth
        Known drifts: ``{"drifts": [{"index": I, "width": W, "kind": K}]}`` as
        ``streamheal simulate`` writes it, or a list of row positions (abrupt drifts).
    max_delay
        An episode opened within this many events after a true drift detects it.
    progress
        Show replay's progress line on stderr.

    Returns
    -------
    ReplayResult
        DataFrames (:attr:`~ReplayResult.predictions`, :attr:`~ReplayResult.detections`,
        ...) and figures (:meth:`~ReplayResult.plot_accuracy`, ...).

    Examples
    --------
    >>> rows = [{"id": f"r{i}", "ts": i, "x": i % 7, "label": i % 2} for i in range(300)]
    >>> result = replay(rows)
    >>> len(result.predictions), result.predictions.columns[:4].tolist()
    (300, ['config', 'index', 'id', 'ts'])
    """
    configs = _named_configs(config)
    records, labels = _records(data, id, ts, label)
    runs, baseline, meta = replay_records(
        records, configs, progress=progress, keep_predictions=True
    )
    described = {"kind": "dataframe", "columns": {"id": id, "ts": ts, "label": label}}
    report = build_report(runs, baseline, meta, described, _truth(truth), max_delay)
    return ReplayResult(report, runs, labels)


def grid(base: Config | None = None, **axes: Sequence[Any]) -> list[tuple[str, Config]]:
    """Every combination of the values given per ``section__key``, over ``base``.

    The same expansion as a ``[grid]`` table in a TOML file; the result goes to
    :func:`replay` as its ``config``.

    >>> [name for name, _ in grid(detectors__cusum_k=[0.25, 0.5], policy__challenger=["warm"])]
    ['grid[detectors.cusum_k=0.25,policy.challenger=warm]', \
'grid[detectors.cusum_k=0.5,policy.challenger=warm]']
    """
    table = {key.replace("__", ".", 1): list(values) for key, values in axes.items()}
    return grid_configs(base or Config(), table)


def scenario_frame(name: str, **options: Any) -> pd.DataFrame:
    """A built-in scenario (``streamheal simulate``'s) as a DataFrame, labels in the rows.

    >>> scenario_frame("sea", events=5).columns.tolist()
    ['id', 'ts', 'label', 'x0', 'x1', 'x2']
    """
    import pandas as pd

    from streamheal.scenarios import SCENARIOS

    if name not in SCENARIOS:
        raise ValueError(f"no scenario {name!r}; one of {', '.join(sorted(SCENARIOS))}")
    scenario = SCENARIOS[name](label_delay=0, **options)
    rows = [
        {"id": e["id"], "ts": e["ts"], "label": e["label"], **e["features"]}
        for e in scenario.stream()
    ]
    return pd.DataFrame(rows)


@dataclass
class ReplayResult:
    """What :func:`replay` found, as DataFrames (one row per item, a ``config`` column
    first) and matplotlib figures (one config each; the first by default).

    Parameters
    ----------
    report
        The ``report.json`` document (schema: ``streamheal/schema/report.schema.json``).
    runs
        Each config's run, its Engine included (``runs[0].engine.model`` is the model
        as it ended).
    labels
        The input's labels by event id, to mark each prediction right or wrong.

    Examples
    --------
    >>> rows = [{"id": f"r{i}", "ts": i, "x": float(i % 5), "label": i % 5 > 1} for i in range(400)]
    >>> result = replay(rows)
    >>> bool(result.summary.loc[0, "accuracy"] > 0.5)
    True
    >>> result.detections.empty, result.accuracy.columns.tolist()[:3]
    (True, ['config', 'index', 'realized'])
    """

    report: dict[str, Any]
    runs: list[Run]
    labels: dict[str, Any]

    @property
    def configs(self) -> list[str]:
        """The configs' names, in order."""
        return [c["name"] for c in self.report["configs"]]

    @property
    def summary(self) -> pd.DataFrame:
        """One row per config: events, accuracy, declarations, and (with truth) scores."""
        import pandas as pd

        rows = []
        for c in self.report["configs"]:
            row = {
                "config": c["name"],
                "events": c["events"],
                "labeled": c["labeled"],
                "accuracy": c["accuracy"],
                "detections": len(c["detections"]),
                "episodes": len(c["episodes"]),
                "actions": len(c["actions"]),
            }
            row.update(c["evaluation"] or {})
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def predictions(self) -> pd.DataFrame:
        """Every prediction: event index and id, what was predicted with what confidence,
        by which model version, and the label with whether it was right (when known)."""
        import pandas as pd

        rows = []
        for run in self.runs:
            for p in run.predictions or []:
                label = self.labels.get(p.id)
                rows.append(
                    {
                        "config": run.name,
                        "index": p.index,
                        "id": p.id,
                        "ts": p.ts,
                        "prediction": p.prediction,
                        "confidence": max(p.probabilities.values()) if p.probabilities else None,
                        "model_version": p.model_version,
                        "label": label,
                        "correct": None if label is None else p.prediction == label,
                    }
                )
        return pd.DataFrame(rows)

    @property
    def detections(self) -> pd.DataFrame:
        """Every drift declaration, with what it counted as (true positive, ...)."""
        return self._table("detections")

    @property
    def episodes(self) -> pd.DataFrame:
        """One row per drift episode: who opened it, who confirmed it, its delay."""
        return self._table("episodes")

    @property
    def actions(self) -> pd.DataFrame:
        """Every healing action (snapshot, fork, promote, reset, rollback, discard)."""
        return self._table("actions")

    @property
    def accuracy(self) -> pd.DataFrame:
        """Realized accuracy per stretch of the stream beside the label-free estimate and
        its band (NaN where a stretch had no labels)."""
        import pandas as pd

        frames = []
        for c in self.report["configs"]:
            realized = pd.DataFrame(c["accuracy_over_time"], columns=["index", "accuracy"])
            estimated = pd.DataFrame(
                c["estimated_accuracy_over_time"], columns=["index", "estimated", "low", "high"]
            )
            both = estimated.merge(realized, on="index", how="outer").sort_values("index")
            both = both.rename(columns={"accuracy": "realized"})
            both.insert(0, "config", c["name"])
            frames.append(both[["config", "index", "realized", "estimated", "low", "high"]])
        return pd.concat(frames, ignore_index=True)

    # ------------------------------------------------------------------ figures
    def plot_accuracy(self, config: str | None = None) -> Figure:
        """Realized against estimated accuracy over time, the baseline, true drifts."""
        from streamheal.report_html import accuracy_figure

        return accuracy_figure(self.report, self._config(config))

    def plot_p_values(self, config: str | None = None) -> Figure | None:
        """The windowed tests' p-values per feature as a heat map (None: no check ran)."""
        from streamheal.report_html import p_value_figure

        return p_value_figure(self.report, self._config(config))

    def plot_distributions(self, config: str | None = None) -> Figure | None:
        """Reference against current values of each drifted feature (None: none drifted)."""
        from streamheal.report_html import distribution_figure

        return distribution_figure(self._config(config))

    def plot_timeline(self, config: str | None = None) -> Figure:
        """Everything over time on one axis, as ``report.html`` draws it."""
        from streamheal.report_html import timeline_figure

        return timeline_figure(self.report, self._config(config))

    def save(self, directory: str | Path) -> Path:
        """Write ``report.json`` and ``report.html`` (as ``streamheal replay`` does)."""
        import json

        from streamheal.report_html import render_html

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(self.report, indent=1) + "\n")
        (out / "report.html").write_text(render_html(self.report))
        return out

    # ---------------------------------------------------------------- internals
    def _table(self, part: str) -> pd.DataFrame:
        import pandas as pd

        rows = [{"config": c["name"], **item} for c in self.report["configs"] for item in c[part]]
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=_EMPTY_COLUMNS[part])

    def _config(self, name: str | None) -> dict[str, Any]:
        configs = self.report["configs"]
        if name is None:
            return configs[0]
        for c in configs:
            if c["name"] == name:
                return c
        raise KeyError(f"no config {name!r}; the configs are {', '.join(self.configs)}")


# -------------------------------------------------------------------- inputs


def _named_configs(config: ConfigsLike) -> list[tuple[str, Config]]:
    if config is None:
        return [("default", Config())]
    if isinstance(config, Config):
        return [("default", config)]
    named = list(config.items()) if isinstance(config, Mapping) else list(config)
    if not named or not all(
        isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], Config) for pair in named
    ):
        raise ConfigError(
            "config: expected a Config, {name: Config} or a list of (name, Config) pairs"
        )
    return named


def _records(
    data: Any, id_column: str | None, ts_column: str | None, label_column: str | None
) -> tuple[Iterator[Record], dict[str, Any]]:
    """The rows as encoded events (validated by the Engine's own decoder), and the labels."""
    rows = _rows(data)
    labels: dict[str, Any] = {}
    named = [c for c in (id_column, ts_column, label_column) if c is not None]

    def records() -> Iterator[Record]:
        for i, row in enumerate(rows):
            missing = [c for c in named if c not in row]
            if missing:
                raise ValueError(
                    f"row {i}: no column {missing[0]!r}; columns are {', '.join(map(str, row))}"
                )
            event_id = str(row[id_column]) if id_column else f"row-{i}"
            label = _scalar(row[label_column]) if label_column else None
            if isinstance(label, float) and label.is_integer():
                label = int(label)  # a label column with NaNs is float: 1.0 means class 1
            if label is not None:
                labels[event_id] = label
            event = {
                "id": event_id,
                "ts": _timestamp(row[ts_column]) if ts_column else float(i),
                "features": {str(k): _scalar(v) for k, v in row.items() if k not in named},
                "label": label,
            }
            yield encode(event), Source(_SOURCE, 0, i), None

    return records(), labels


def _rows(data: Any) -> Iterable[Mapping[str, Any]]:
    to_dict = getattr(data, "to_dict", None)
    if callable(to_dict) and hasattr(data, "columns"):  # a DataFrame
        return data.to_dict("records")
    if isinstance(data, Mapping | str | bytes):
        raise TypeError("data: expected a DataFrame or an iterable of dicts (one per row)")
    return data


def _scalar(value: Any) -> Any:
    """A cell as an event value: numpy scalars unboxed, NaN / NA / NaT as missing."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str | bytes):
        value = item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def _timestamp(value: Any) -> float:
    value = _scalar(value)
    if isinstance(value, datetime.datetime):  # pandas Timestamps too
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"ts: expected epoch seconds or a datetime, got {value!r}")


def _truth(truth: TruthLike) -> dict[str, Any] | None:
    if truth is None:
        return None
    if isinstance(truth, Mapping):
        drifts = truth.get("drifts")
        if not isinstance(drifts, list) or not all(
            isinstance(d, Mapping) and isinstance(d.get("index"), int) for d in drifts
        ):
            raise ValueError('truth: expected {"drifts": [{"index": I, ...}]} or a list of indices')
        return {"drifts": [dict(d) for d in drifts]}
    indices = list(truth)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices):
        raise ValueError(f"truth: expected row positions (integers >= 0), got {indices!r}")
    return {"drifts": [{"index": i, "width": 1, "kind": "unknown"} for i in indices]}
