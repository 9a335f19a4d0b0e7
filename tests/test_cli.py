"""The command line guides: help with defaults and examples, and each mistake gets a
clear message and its documented exit code (2 usage, 1 runtime, 69 unreachable broker).

Run in-process through ``main(argv)``: start-up is not what these tests are about.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import orjson
import pytest

from streamheal import replay as replay_module
from streamheal.cli import EXIT_UNAVAILABLE, build_parser, main
from streamheal.config import Config
from streamheal.replay import file_records, replay


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """stderr of a command that must stop with usage and exit 2."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    return err


def write_csv(path: Path, rows: int) -> Path:
    lines = ["size,colour,target"]
    lines += [f"{i % 7 + 0.5},{'red' if i % 3 else 'blue'},{i % 2}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def events_of(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def parsers(parser: argparse.ArgumentParser, name: str = "streamheal"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


def test_every_command_has_examples_and_every_option_help_and_its_default():
    for name, parser in parsers(build_parser()):
        if name != "streamheal":
            text = parser.format_help()
            assert "examples:" in text and f"\n  {name}" in text, name
        formatter = parser._get_formatter()
        for action in parser._actions:
            assert action.help, f"{name} {action.dest}: no help"
            default = action.default
            if not action.option_strings or default is None or default is False:
                continue
            if default in ([], argparse.SUPPRESS):
                continue
            shown = formatter._get_help_string(action)
            assert "default" in shown, f"{name} {action.option_strings[0]}: default not shown"


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    out = capsys.readouterr().out
    assert "(default: 2000)" in out  # --max-delay
    assert "examples:" in out and "streamheal replay --file" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "sea", "--out", "x.jsonl", "--unlabeled", "1.5"], "0 <= F < 1, got 1.5"),
        (["simulate", "sea", "--out", "x.jsonl", "--rate", "0"], "a number > 0, got 0"),
        (["simulate", "sea", "--out", "x.jsonl", "--events", "abc"], "integer >= 1, got 'abc'"),
        (["simulate", "sea", "--out", "x.jsonl", "--drift-at", "-3"], "expected integers >= 0"),
        (["notify", "--interactive-port", "70000"], "TCP port 0-65535, got 70000"),
        (["bench", "--rounds", "0"], "expected an integer >= 1, got 0"),
        (["replay", "--topic", "t", "--from-time", "yesterday", "--out", "o"], "ISO-8601"),
        (["registry", "show", "0"], "expected an integer >= 1, got 0"),
    ],
)
def test_an_argument_out_of_range_is_a_usage_error(capsys, argv, message):
    assert message in usage_error(capsys, argv)


def test_a_drift_past_the_stream_is_a_usage_error(capsys, tmp_path):
    out = tmp_path / "sea.jsonl"
    err = usage_error(
        capsys, ["simulate", "sea", "--events", "100", "--drift-at", "500", "--out", str(out)]
    )
    assert "--drift-at: 500 lies past the stream (100 feature events" in err
    assert not out.exists()


def test_simulate_csv_streams_the_whole_file_by_default(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv", 2600)
    out = tmp_path / "csv.jsonl"
    assert (
        main(["simulate", "csv", "--csv", str(data), "--label", "target", "--out", str(out)]) == 0
    )
    events = events_of(out)
    assert len(events) == 2600
    assert json.loads(out.with_suffix(".truth.json").read_text()) == {"drifts": []}
    assert (
        main(
            [
                "simulate",
                "csv",
                "--csv",
                str(data),
                "--label",
                "target",
                "--events",
                "10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(events_of(out)) == 10


def test_simulate_csv_injects_a_concept_drift_by_flipping_labels(tmp_path):
    data = write_csv(tmp_path / "data.csv", 400)
    out = tmp_path / "concept.jsonl"
    argv = [
        "simulate",
        "csv",
        "--csv",
        str(data),
        "--label",
        "target",
        "--drift-at",
        "200",
        "--drift-kind",
        "concept",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    labels = [e["label"] for e in events_of(out)]
    assert labels[:200] == [i % 2 for i in range(200)]
    assert labels[200:] == [1 - i % 2 for i in range(200, 400)]
    truth = json.loads(out.with_suffix(".truth.json").read_text())
    assert truth == {"drifts": [{"index": 200, "width": 1, "kind": "concept"}]}


def test_simulate_csv_injects_a_covariate_drift_on_a_numeric_column(tmp_path):
    data = write_csv(tmp_path / "data.csv", 400)
    out = tmp_path / "covariate.jsonl"
    argv = [
        "simulate",
        "csv",
        "--csv",
        str(data),
        "--label",
        "target",
        "--drift-at",
        "200",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    events = events_of(out)
    before = [e["features"]["size"] for e in events[:200]]
    after = [e["features"]["size"] for e in events[200:]]
    assert max(before) == 6.5 and sum(after) / 200 > sum(before) / 200 + 2
    assert [e["label"] for e in events] == [i % 2 for i in range(400)]
    truth = json.loads(out.with_suffix(".truth.json").read_text())
    assert truth["drifts"] == [{"index": 200, "width": 1, "kind": "covariate", "feature": "size"}]


def test_simulate_csv_refuses_a_drift_past_the_file_and_a_text_column(capsys, tmp_path):
    data = write_csv(tmp_path / "data.csv", 50)
    base = [
        "simulate",
        "csv",
        "--csv",
        str(data),
        "--label",
        "target",
        "--out",
        str(tmp_path / "o.jsonl"),
    ]
    assert "60 lies past the stream (50 feature events" in usage_error(
        capsys, [*base, "--drift-at", "60"]
    )
    assert main([*base, "--drift-at", "10", "--drift-feature", "colour"]) == 1
    assert "column 'colour' is not numeric here; numeric columns: size" in (capsys.readouterr().err)


def test_replay_names_a_missing_truth_file(capsys, tmp_path):
    events = tmp_path / "e.jsonl"
    main(["simulate", "breast-cancer", "--events", "50", "--out", str(events)])
    err = usage_error(
        capsys,
        ["replay", "--file", str(events), "--truth", "missing.json", "--out", str(tmp_path / "o")],
    )
    assert "argument --truth: no such file: missing.json" in err
    assert "Errno" not in err


def test_replay_refuses_a_truth_file_of_another_shape(capsys, tmp_path):
    events = tmp_path / "e.jsonl"
    main(["simulate", "breast-cancer", "--events", "50", "--out", str(events)])
    truth = tmp_path / "t.json"
    truth.write_text('[{"index": 3}]')
    argv = ["replay", "--file", str(events), "--truth", str(truth), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    assert 'expected {"drifts": [{"index": I' in capsys.readouterr().err


def test_replay_time_bounds_go_with_a_topic(capsys, tmp_path):
    events = tmp_path / "e.jsonl"
    events.write_text("")
    err = usage_error(
        capsys, ["replay", "--file", str(events), "--to-time", "2026-11-27T10:00Z", "--out", "o"]
    )
    assert "go with --topic" in err


def test_replay_topic_uses_the_kafka_settings_of_the_config_file(capsys, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\nconnect_timeout_seconds = 1\n')
    argv = ["replay", "--topic", "events", "-c", str(config), "--out", str(tmp_path / "o")]
    assert main(argv) == EXIT_UNAVAILABLE
    assert "streamheal replay: cannot reach Kafka at 127.0.0.1:1 within 1s" in (
        capsys.readouterr().err
    )


def test_a_missing_config_file_is_named(capsys, tmp_path):
    argv = [
        "replay",
        "--file",
        str(write_csv(tmp_path / "x.csv", 1)),
        "-c",
        "nope.toml",
        "--out",
        "o",
    ]
    assert main(argv) == 78
    assert "config file 'nope.toml' does not exist" in capsys.readouterr().err


def test_registry_list_says_when_it_is_empty_and_show_names_the_model(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("STREAMHEAL_REGISTRY__PATH", str(tmp_path / "registry"))
    assert main(["registry", "list"]) == 0
    assert "model 'streamheal' has no versions yet" in capsys.readouterr().out
    assert main(["registry", "show", "99"]) == 1
    assert capsys.readouterr().err.strip() == (
        "streamheal registry: model 'streamheal' has no version 99"
    )


def test_replay_progress_shows_share_and_eta_in_plain_lines(capsys, tmp_path, monkeypatch):
    events = tmp_path / "e.jsonl"
    main(["simulate", "breast-cancer", "--events", "1500", "--out", str(events)])
    capsys.readouterr()
    monkeypatch.setattr(replay_module, "PROGRESS_LINE_SECONDS", 0.0)
    replay(file_records(events), [("default", Config())], total=1500)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("replay: 500 of 1,500 records (33%), ETA ")
    assert lines[-1].startswith("replay: 1,500 records") and " done in " in lines[-1]
    assert "\r" not in "".join(lines)


def test_run_bounds_its_worker_count_and_their_metrics_ports(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "between 1 and 64" in usage_error(capsys, ["run", "--workers", "100000"])
    # Worker i serves metrics on metrics.port + i: none may fall past the last TCP port.
    monkeypatch.setenv("STREAMHEAL_METRICS__PORT", "65535")
    assert main(["run", "--workers", "2"]) == 78
    assert "metrics.port (65535): 2 workers serve metrics on 65535..65536" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "STREAMHEAL_DETECTORS__REFERENCE_PROFILE",
            "/nonexistent/profile.json",
            "detectors.reference_profile: '/nonexistent/profile.json': No such file",
        ),
        ("STREAMHEAL_ALERTS__SILENCES", '[{match = "kind=~("}]', "alerts.silences[0]: bad regex"),
    ],
)
def test_files_and_patterns_the_config_names_are_checked_at_start(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    # Not a traceback when the first partition starts, nor a notifier that never matches.
    monkeypatch.setenv(variable, value)
    assert main(["run"]) == 78
    assert message in capsys.readouterr().err


def test_simulate_says_why_it_cannot_write_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["simulate", "sea", "--events", "10", "--out", str(blocker / "x.jsonl")]) == 1
    assert "streamheal simulate: cannot write" in capsys.readouterr().err
