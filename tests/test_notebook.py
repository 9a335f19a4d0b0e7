"""The "From Python" workflow end to end, as a notebook would run it: a DataFrame in,
DataFrames and matplotlib figures out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import streamheal
from streamheal.notebook import ReplayResult, grid, replay, scenario_frame

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402 - after the headless backend is chosen


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    data = scenario_frame("breast-cancer", events=3000, drift_at=1500)
    # As a notebook user's data tends to be: datetimes, some labels never arrived.
    data["ts"] = pd.to_datetime(data["ts"], unit="s")
    data.loc[data.index % 10 == 3, "label"] = np.nan
    return data.rename(columns={"id": "event_id", "ts": "when", "label": "malignant"})


@pytest.fixture(scope="module")
def result(frame: pd.DataFrame) -> ReplayResult:
    fast = streamheal.Config().replace(detectors={"false_alarms_per_10k": 2.0})
    configs = [("default", streamheal.Config()), ("fast", fast)]
    return replay(frame, configs, id="event_id", ts="when", label="malignant", truth=[1500])


def test_the_documented_example_gives_dataframes(result: ReplayResult) -> None:
    assert result.configs == ["default", "fast"]
    summary = result.summary
    assert isinstance(summary, pd.DataFrame) and summary["events"].tolist() == [3000, 3000]
    assert summary["labeled"].tolist() == [2700, 2700]  # NaN labels: never labeled
    assert (summary["true_positives"] == 1).all() and (summary["missed"] == 0).all()
    predictions = result.predictions
    assert len(predictions) == 6000 and set(predictions["config"]) == {"default", "fast"}
    assert predictions["label"].isna().sum() == 600
    known = predictions.dropna(subset=["label"])
    assert known["correct"].mean() == pytest.approx(summary.loc[0, "accuracy"], abs=0.02)
    for table in (result.detections, result.episodes, result.actions, result.accuracy):
        assert isinstance(table, pd.DataFrame) and not table.empty
        assert table.columns[0] == "config"
    episode = result.episodes.iloc[0]
    assert (episode["kind"], episode["feature"]) == ("covariate", "mean radius")
    assert set(result.actions["action"]) >= {"snapshot"}


def test_the_figures_are_matplotlib_figures(result: ReplayResult, tmp_path) -> None:
    import matplotlib.pyplot as plt

    figures = [
        result.plot_accuracy(),
        result.plot_p_values("fast"),
        result.plot_distributions(),
        result.plot_timeline(),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    figures[0].savefig(tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").stat().st_size > 10_000
    plt.close("all")
    with pytest.raises(KeyError, match="no config 'slow'; the configs are default, fast"):
        result.plot_accuracy("slow")


def test_the_result_saves_the_same_report_as_the_command(result: ReplayResult, tmp_path) -> None:
    out = result.save(tmp_path / "nb")
    report = json.loads((out / "report.json").read_text())
    assert report["configs"][0]["evaluation"] == result.report["configs"][0]["evaluation"]
    assert (out / "report.html").read_text().startswith("<!doctype html>")


def test_rows_as_dicts_and_a_grid_work_as_a_dataframe_does() -> None:
    rows = [{"id": i, "ts": i, "x": float(i % 9), "y": i % 9 > 4} for i in range(600)]
    configs = grid(detectors__cusum_k=[0.5, 1.0])
    result = replay(rows, configs, label="y")
    assert result.configs == ["grid[detectors.cusum_k=0.5]", "grid[detectors.cusum_k=1.0]"]
    assert (
        result.predictions["id"].iloc[0] == "0" and result.summary["labeled"].tolist() == [600] * 2
    )
    assert result.detections.empty and result.detections.columns[0] == "config"


def test_mistakes_are_named() -> None:
    with pytest.raises(ValueError, match="row 0: no column 'id'; columns are x, label"):
        replay([{"x": 1.0, "label": 0}])
    with pytest.raises(streamheal.ConfigError, match=r"detectors\.cusum_kk: unknown key"):
        grid(detectors__cusum_kk=[1])
    with pytest.raises(streamheal.ConfigError, match="expected a Config"):
        replay([{"id": 1, "ts": 0, "label": 0}], {"a": "not a config"})
    with pytest.raises(ValueError, match="truth: expected row positions"):
        replay([{"id": 1, "ts": 0, "label": 0}], truth=[-1])


def test_the_public_surface_lists_the_notebook_names() -> None:
    assert {"ReplayResult", "grid", "scenario_frame", "Engine", "Config"} <= set(streamheal.__all__)
    assert streamheal.grid is grid and streamheal.ReplayResult is ReplayResult
