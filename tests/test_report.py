"""Episode scoring (evaluation.py) and the HTML report drawn from report.json (report_html.py).

The scoring rules are checked on hand-made declarations; the end-to-end tests replay
seeded streams in process and check what each real declaration counted as.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from streamheal.config import Config
from streamheal.evaluation import build_report, score
from streamheal.events import Source, encode
from streamheal.replay import replay
from streamheal.scenarios import SCENARIOS

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "src/streamheal/schema/report.schema.json").read_text()
)
TRUTH = {"drifts": [{"index": 1000}]}


def declared(index: int, role: str = "opened", caused_by: str | None = None, **kw: Any) -> dict:
    return {"index": index, "role": role, "caused_by": caused_by, "signal": "feature", **kw}


def counted(detections: list[dict], truth: dict | None = TRUTH, max_delay: int = 500) -> list:
    labels, _ = score(detections, truth, events=10_000, max_delay=max_delay)
    return [label["counted_as"] for label in labels]


# ----------------------------------------------------------------- scoring rules


def test_confirmations_and_consequences_are_never_false_alarms_however_late() -> None:
    found = [
        declared(1200),
        declared(6000, role="confirmation"),
        declared(8000, role="refired"),
        declared(9000, caused_by="covariate:feature:x@1200", signal="prediction"),
    ]
    assert counted(found) == ["true_positive", "confirmation", "confirmation", "caused_by"]
    _, evaluation = score(found, TRUTH, events=10_000, max_delay=500)
    assert evaluation["false_alarms"] == 0 and evaluation["precision"] == 1.0
    assert (evaluation["declarations"], evaluation["episodes"]) == (4, 2)
    assert (evaluation["confirmations"], evaluation["caused_by"]) == (2, 1)


def test_the_first_opener_in_a_window_gives_the_delay_and_later_ones_are_true_too() -> None:
    found = [declared(900), declared(1300), declared(1400), declared(1600)]
    labels, evaluation = score(found, TRUTH, events=10_000, max_delay=500)
    assert [label["counted_as"] for label in labels] == [
        "false_alarm",  # before the drift
        "true_positive",
        "true_positive",
        "false_alarm",  # after its window
    ]
    assert evaluation["matches"] == [{"drift_index": 1000, "episode": None, "delay": 300}]
    assert (evaluation["true_positives"], evaluation["false_alarms"]) == (2, 2)
    assert (evaluation["detected"], evaluation["missed"], evaluation["recall"]) == (1, 0, 1.0)
    assert evaluation["precision"] == 0.5 and evaluation["f1"] == pytest.approx(0.6667)
    assert evaluation["median_delay"] == 300 and evaluation["mean_delay"] == 300.0


def test_each_true_drift_takes_its_own_first_opener() -> None:
    truth = {"drifts": [{"index": 1000}, {"index": 1200}, {"index": 5000}]}
    labels, evaluation = score([declared(1250), declared(1300)], truth, 10_000, 500)
    assert [m["delay"] for m in evaluation["matches"]] == [250, 100, None]
    assert (evaluation["detected"], evaluation["missed"]) == (2, 1)
    assert [label["drift_index"] for label in labels] == [1000, 1000]  # the earliest window


def test_a_fall_of_the_error_is_an_improvement_unless_it_detects_a_true_drift() -> None:
    fall = {"kind": "concept", "signal": "error_fall", "direction": "improved"}
    found = [declared(300, **fall), declared(1100, **fall)]
    assert counted(found) == ["improvement", "true_positive"]
    _, evaluation = score(found, TRUTH, events=10_000, max_delay=500)
    assert evaluation["improvements"] == 1 and evaluation["false_alarms"] == 0


def test_a_gradual_drift_is_detected_anywhere_in_its_width_plus_the_max_delay() -> None:
    gradual = {"drifts": [{"index": 1000, "width": 3000}]}
    assert counted([declared(3900)], gradual) == ["true_positive"]
    assert counted([declared(4600)], gradual) == ["false_alarm"]


def test_without_a_truth_file_openers_are_unscored_and_there_is_no_evaluation() -> None:
    labels, evaluation = score([declared(5), declared(9, role="confirmation")], None, 100, 10)
    assert [label["counted_as"] for label in labels] == ["unscored", "confirmation"]
    assert evaluation is None


def test_no_declaration_has_no_precision_and_no_drift_has_no_recall() -> None:
    _, quiet = score([], TRUTH, 10_000, 500)
    assert (quiet["precision"], quiet["recall"], quiet["f1"], quiet["missed"]) == (
        None,
        0.0,
        0.0,
        1,
    )
    _, stationary = score([declared(10)], {"drifts": []}, 10_000, 500)
    assert (stationary["precision"], stationary["recall"], stationary["f1"]) == (0.0, None, None)
    assert stationary["false_alarms_per_10k"] == 1.0


# -------------------------------------------------------------- seeded streams


def replayed(scenario: str, events: int, drift_at: int, configs=None) -> dict[str, Any]:
    stream = SCENARIOS[scenario](events=events, drift_at=drift_at, label_delay=10)
    records = [
        (encode(event), Source("test", 0, offset), None)
        for offset, event in enumerate(stream.stream())
    ]
    runs, baseline, meta = replay(records, configs or [("default", Config())], progress=False)
    report = build_report(runs, baseline, meta, {"kind": "file", "path": "x"}, stream.truth)
    return json.loads(json.dumps(report))  # exactly what report.json holds


@pytest.fixture(scope="module")
def concept_report() -> dict[str, Any]:
    """STAGGER, one abrupt concept change at 10,000: a concept episode, the label mix
    following it, and windowed tests confirming the label mix at a later check."""
    return replayed("stagger", 20_000, 10_000)


@pytest.fixture(scope="module")
def covariate_report() -> dict[str, Any]:
    """Breast cancer with 'mean radius' shifted at 4,000: a CUSUM, then KS and PSI."""
    return replayed("breast-cancer", 8_000, 4_000)


def test_report_json_matches_its_schema(concept_report, covariate_report) -> None:
    jsonschema.validate(concept_report, SCHEMA)
    jsonschema.validate(covariate_report, SCHEMA)


def test_a_concept_change_opens_the_episode_its_label_mix_is_caused_by_and_late_tests_confirm(
    concept_report,
) -> None:
    [config] = concept_report["configs"]
    by_role = {(d["kind"], d["detector"]): d for d in config["detections"]}
    opener = by_role[("concept", "adwin")]
    assert opener["counted_as"] == "true_positive" and 0 <= opener["delay"] <= 400
    mix = by_role[("prior", "cusum")]
    assert mix["counted_as"] == "caused_by" and mix["caused_by"] == opener["episode"]
    for detector in ("chi2", "psi"):  # the windowed tests, at a later check
        late = by_role[("prior", detector)]
        assert late["counted_as"] == "confirmation" and late["episode"] == mix["episode"]
        assert late["index"] > mix["index"] and late["role"] == "confirmation"
    evaluation = config["evaluation"]
    assert evaluation["false_alarms"] == 0 and evaluation["detected"] == 1
    scored = [d for d in config["detections"] if d["counted_as"] == "true_positive"]
    # Precision counts episodes: five declarations, of which only the openers are scored.
    assert evaluation["true_positives"] == len(scored) and evaluation["precision"] == 1.0
    assert evaluation["declarations"] == len(config["detections"]) > len(scored)
    # The label mix follows the concept change, and so may the new champion's confidence:
    # consequences of the episode, not drifts of their own.
    caused = [d for d in config["detections"] if d["counted_as"] == "caused_by"]
    assert all(d["caused_by"] == opener["episode"] for d in caused)
    assert evaluation["confirmations"] == 2 and evaluation["caused_by"] == len(caused) >= 1
    episodes = {e["id"]: e for e in config["episodes"]}
    assert episodes[mix["episode"]]["detectors"] == ["cusum", "chi2", "psi"]
    assert episodes[opener["episode"]]["closed_at"] > opener["index"]


def test_a_feature_shift_is_one_episode_opened_by_its_cusum_and_confirmed_by_ks_and_psi(
    covariate_report,
) -> None:
    [config] = covariate_report["configs"]
    radius = [d for d in config["detections"] if d.get("feature") == "mean radius"]
    assert [(d["detector"], d["counted_as"]) for d in radius] == [
        ("cusum", "true_positive"),
        ("ks", "confirmation"),
        ("psi", "confirmation"),
    ]
    assert len({d["episode"] for d in radius}) == 1
    for d in radius:  # what the distribution view draws: both windows summarized
        assert d["reference"]["n"] > 0 and d["current"]["n"] > 0
    evaluation = config["evaluation"]
    assert (evaluation["detected"], evaluation["missed"]) == (1, 0)
    assert evaluation["median_delay"] <= 300
    assert evaluation["false_alarms"] == 0, config["detections"]


def test_the_label_free_estimate_and_the_cusums_are_reported_over_time(covariate_report) -> None:
    [config] = covariate_report["configs"]
    estimate = config["estimated_accuracy_over_time"]
    assert estimate and all(p["low"] <= p["estimated"] <= p["high"] for p in estimate)
    assert all(0.5 <= p["estimated"] <= 1.0 for p in estimate)
    cusum = config["cusum_over_time"]
    radius = [v for v in cusum["series"]["mean radius"] if v is not None]
    # The shifted feature's CUSUM crosses its threshold; it leads the list.
    assert next(iter(cusum["series"])) == "mean radius" and max(radius) >= 1.0
    pvalues = config["windowed_p_values"]
    assert 0 < pvalues["alpha"] < 0.01 and "mean radius" in pvalues["features"]
    dataset = covariate_report["dataset"]
    assert dataset["feature_events"] == 8000 and len(dataset["features"]) == 30
    assert {f["type"] for f in dataset["features"]} == {"numeric"}


# ------------------------------------------------------------------- the page


def page_text(page: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)


def test_the_page_marks_every_declaration_and_never_prints_none(concept_report) -> None:
    pytest.importorskip("matplotlib")
    from streamheal.report_html import COUNTED_AS, render_html

    page = render_html(concept_report)
    text = page_text(page)
    assert "None" not in text and "nan" not in text.lower().replace("nannyml", "")
    assert "<script" not in page and "src='http" not in page
    for d in concept_report["configs"][0]["detections"]:
        assert COUNTED_AS[d["counted_as"]][2] in text
    assert "events/s" in text and "records/s" not in text


def test_a_grid_gets_one_panel_per_config_and_a_tradeoff_chart(covariate_report) -> None:
    pytest.importorskip("matplotlib")
    from streamheal.report_html import render_html

    grid = json.loads(json.dumps(covariate_report))
    second = json.loads(json.dumps(grid["configs"][0]))
    second["name"] = "copy"
    grid["configs"].append(second)
    grid["baselines"]["periodic"].append({**grid["baselines"]["periodic"][0], "config": "copy"})
    page = render_html(grid)
    assert page.count("<details") == 2 and page.count("<details open") == 1
    assert "Delay against false alarms" in page


def test_the_heat_map_has_one_fixed_colour_scale_in_every_report(
    concept_report, covariate_report
) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    from matplotlib.image import AxesImage

    from streamheal.report_html import P_CAP, timeline_figure

    scales = []
    for report in (concept_report, covariate_report):
        figure = timeline_figure(report, report["configs"][0])
        [image] = [
            i for axis in figure.axes for i in axis.get_children() if isinstance(i, AxesImage)
        ]
        scales.append((image.norm.vmin, image.norm.vmax))
        plt.close(figure)
    assert scales == [(0.0, P_CAP), (0.0, P_CAP)]


def test_a_short_stream_without_truth_renders_without_scores_or_empty_charts() -> None:
    pytest.importorskip("matplotlib")
    from streamheal.report_html import render_html

    report = replayed("stationary", 300, 0)  # shorter than the reference: nothing watched
    report["truth"] = None
    [config] = report["configs"]
    assert config["windowed_p_values"]["indices"] == [] and config["detections"] == []
    page = render_html(report)
    assert "None" not in page_text(page) and "No drift declared" in page
    assert page.count("data:image/png;base64,") == 1  # accuracy over time only


def test_a_categorical_drift_is_drawn_as_category_shares(covariate_report) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from streamheal.report_html import distribution_figure

    config = json.loads(json.dumps(covariate_report["configs"][0]))
    config["detections"] = [
        {
            **config["detections"][0],
            "feature": "colour",
            "detector": "chi2",
            "reference": {"red": 0.7, "blue": 0.3},
            "current": {"red": 0.2, "blue": 0.5, "__unseen__": 0.3},
        }
    ]
    figure = distribution_figure(config)
    [axis] = figure.axes
    labels = [t.get_text() for t in axis.get_yticklabels()]
    assert labels == ["red", "blue", "__unseen__"]
    assert [round(b.get_width(), 2) for b in axis.patches] == [0.7, 0.3, 0.0, 0.2, 0.5, 0.3]
    plt.close(figure)


def test_the_input_line_reads_as_a_sentence_not_a_dict(covariate_report) -> None:
    pytest.importorskip("matplotlib")
    from streamheal.report_html import render_html

    report = json.loads(json.dumps(covariate_report))
    report["input"] = {
        "kind": "topic",
        "topic": "streamheal.events",
        "from_offset": 500,
        "from_time": None,
        "to_time": None,
        "records": 8000,
    }
    text = page_text(render_html(report))
    assert "Input: topic <b>streamheal.events</b> from offset 500: 8,000 records" in text
    assert "{" not in text.split("<style>")[0] + text.split("</style>")[1]
