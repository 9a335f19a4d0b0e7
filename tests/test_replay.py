"""Replay and its report (files here; topics in test_replay_kafka; compare in test_compare)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from streamheal.events import encode
from tests.conftest import without_timing

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "src/streamheal/schema/report.schema.json").read_text()
)


def streamheal(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "streamheal.cli", *args], capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def simulate(tmp: Path, scenario: str, *extra: str) -> Path:
    out = tmp / f"{scenario}.jsonl"
    streamheal("simulate", scenario, "--out", str(out), *extra)
    return out


def replay(tmp: Path, name: str, data: Path, *extra: str) -> dict:
    out = tmp / name
    streamheal(
        "replay",
        "--file",
        str(data),
        "--truth",
        str(data.with_suffix(".truth.json")),
        "--out",
        str(out),
        *extra,
    )
    return json.loads((out / "report.json").read_text())


# Documented in README ("Evaluate detectors on your topic"): with the default detectors,
# each abrupt drift below is caught within these many events (its episode's opener).
EXPECTED = {
    "sea": ("logistic_regression", 400),
    "stagger": ("logistic_regression", 400),
    "agrawal": ("hoeffding_tree", 600),
    "breast-cancer": ("logistic_regression", 300),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_replay_with_truth_finds_the_drift_within_the_documented_delay(
    tmp_path: Path, scenario: str
) -> None:
    model, bound = EXPECTED[scenario]
    data = simulate(
        tmp_path, scenario, "--events", "20000", "--drift-at", "10000", "--label-delay", "10"
    )
    config = tmp_path / "model.toml"
    config.write_text(f'[model]\nname = "{model}"\n')
    report = replay(tmp_path, "out", data, "-c", str(config))
    jsonschema.validate(report, SCHEMA)
    [section] = report["configs"]
    evaluation = section["evaluation"]
    assert evaluation["detected"] == 1 and evaluation["missed"] == 0
    assert 0 <= evaluation["median_delay"] <= bound
    assert section["events"] == 20000 and section["labeled"] == 20000
    assert report["baselines"]["no_adaptation"]["labeled"] == 20000
    if scenario != "breast-cancer":  # concept drifts: the default policy forks and promotes
        assert {"fork", "promote"} <= {a["action"] for a in section["actions"]}
    periodic = report["baselines"]["periodic"][0]  # fires as often as the config alarmed
    alarms = [
        d for d in section["detections"] if d["counted_as"] in ("true_positive", "false_alarm")
    ]
    assert periodic["detections"] == max(1, len(alarms))


def test_two_replays_of_the_same_input_give_identical_reports(tmp_path: Path) -> None:
    data = simulate(tmp_path, "stagger", "--events", "6000", "--label-delay", "5")
    first = replay(tmp_path, "a", data)
    second = replay(tmp_path, "b", data)
    assert without_timing(first) == without_timing(second)


def test_two_configs_give_two_independent_sections(tmp_path: Path) -> None:
    data = simulate(tmp_path, "breast-cancer", "--events", "6000", "--drift-at", "3000")
    strict = tmp_path / "strict.toml"
    strict.write_text("[detectors]\nfalse_alarms_per_10k = 0.05\n")
    loose = tmp_path / "loose.toml"
    loose.write_text("[detectors]\ncusum_k = 0.5\n")
    both = replay(tmp_path, "both", data, "-c", str(strict), "-c", str(loose))
    alone = replay(tmp_path, "alone", data, "-c", str(loose))
    assert [c["name"] for c in both["configs"]] == ["strict", "loose"]
    assert without_timing(both["configs"][1]) == without_timing(alone["configs"][0])


def test_a_grid_in_one_file_expands_into_every_combination(tmp_path: Path) -> None:
    data = simulate(tmp_path, "sea", "--events", "4000")
    grid = tmp_path / "grid.toml"
    grid.write_text(
        '[grid]\n"detectors.cusum_k" = [0.25, 0.5]\n'
        '"detectors.concept_detector" = ["adwin", "ddm"]\n'
    )
    report = replay(tmp_path, "grid", data, "-c", str(grid))
    names = [c["name"] for c in report["configs"]]
    assert len(names) == 4 and "grid[detectors.concept_detector=ddm,detectors.cusum_k=0.5]" in names


def test_replay_reports_dead_letters_and_unlabeled_events(tmp_path: Path) -> None:
    data = simulate(
        tmp_path, "sea", "--events", "3000", "--unlabeled", "0.2", "--label-delay", "20"
    )
    with data.open("ab") as handle:
        handle.write(b"not json\n" + encode({"id": "x", "ts": 1.0, "label": 1}) + b"\n")
    report = replay(tmp_path, "out", data)
    [section] = report["configs"]
    assert section["dead_lettered_by_reason"] == {"not_json": 1, "unknown_label_id": 1}
    assert 2200 < section["labeled"] < 2600


@pytest.fixture(scope="module")
def shifted_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The command's output for breast cancer with 'mean radius' shifted at 4,000."""
    tmp = tmp_path_factory.mktemp("shifted")
    data = simulate(tmp, "breast-cancer", "--events", "8000", "--drift-at", "4000")
    replay(tmp, "out", data)
    return tmp / "out"


def test_report_html_is_one_self_contained_page_with_the_plots(shifted_report: Path) -> None:
    page = (shifted_report / "report.html").read_text()
    # Over time (accuracy, detections, CUSUMs, p-values) and the drifted feature's windows.
    assert page.count("data:image/png;base64,") == 2
    assert "src='http" not in page and "<script" not in page
    assert "mean radius" in page and "true positive" in page and "confirmation" in page


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (make test installs it)"
)
def test_report_html_renders_in_headless_chromium(shifted_report: Path, tmp_path: Path) -> None:
    from PIL import Image  # matplotlib's own dependency

    shot = tmp_path / "report.png"
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            (shifted_report / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=600,  # only catches a hang: a busy machine renders later, never wrong
    )
    assert shot.exists() and shot.stat().st_size > 20_000, result.stderr[-2000:]
    assert "Uncaught" not in result.stderr and "CONSOLE" not in result.stderr
    keep = os.environ.get("STREAMHEAL_REPORT_SCREENSHOT")  # to look at it: a path to copy to
    if keep:
        shutil.copyfile(shot, keep)
    # Drawn, not blank: the true-positive and confirmation badges are on screen.
    colours = {rgb for _, rgb in Image.open(shot).convert("RGB").getcolors(1 << 24)}
    assert {(0x1A, 0x98, 0x50), (0x45, 0x75, 0xB4)} <= colours


def test_replay_refuses_a_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    missing = streamheal(
        "replay", "--file", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"), check=False
    )
    assert missing.returncode == 2 and "no such file: " in missing.stderr
    both = streamheal("replay", "--file", "a", "--topic", "b", "--out", "o", check=False)
    assert both.returncode == 2 and "usage:" in both.stderr
