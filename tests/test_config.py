import subprocess
import sys
from pathlib import Path

import pytest

from streamheal.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_the_shipped_config_file_loads() -> None:
    config = load_config(Path(__file__).parents[1] / "config" / "streamheal.toml", env={})
    assert config.topics.events == "streamheal.events"


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[engine]\nbatch_size = 100\n")
    config = load_config(
        path,
        env={
            "STREAMHEAL_ENGINE__BATCH_SIZE": "250",
            "STREAMHEAL_KAFKA__BOOTSTRAP_SERVERS": "b:9092",
        },
    )
    assert config.engine.batch_size == 250
    assert config.kafka.bootstrap_servers == "b:9092"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[engine]\nbatch_size = 0\n", "engine.batch_size: expected an integer >= 1, got 0"),
        ("[engine]\nmode = 'fast'\n", "engine.mode: expected one of 'per_event', 'mini_batch'"),
        ("[engine]\nbatchsize = 5\n", "engine.batchsize: unknown key; expected one of"),
        ("[model]\nname = 'svm'\n", "model.name: expected one of 'logistic_regression'"),
        ("[kafka]\nbootstrap_servers = 9092\n", "kafka.bootstrap_servers: expected a string"),
        ("[nope]\n", "nope: unknown key"),
        ("engine = 3\n", "engine: expected a table"),
        ("[engine\n", "not valid TOML"),
    ],
)
def test_a_bad_config_names_the_key_and_the_expected_form(tmp_path, text, message) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_config(write(tmp_path, text), env={})
    assert message in str(err.value)


def streamheal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamheal.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_the_worker_refuses_to_start_on_a_bad_config(tmp_path: Path) -> None:
    result = streamheal("run", "-c", str(write(tmp_path, "[engine]\nbatch_size = -1\n")))
    assert result.returncode == 78
    assert "engine.batch_size: expected an integer >= 1" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["simulate", "breast-cancer"],
        ["simulate", "nope", "--out", "x"],
        ["bench", "--events", "0"],
        ["kafka", "sideways"],
    ],
)
def test_a_bad_command_line_prints_usage_and_exits_2(args: list[str]) -> None:
    result = streamheal(*args)
    assert result.returncode == 2
    assert "usage: streamheal" in result.stderr


def test_simulate_is_deterministic_and_writes_a_truth_file(tmp_path: Path) -> None:
    for name in ("a", "b"):
        result = streamheal(
            "simulate",
            "breast-cancer",
            "--out",
            str(tmp_path / f"{name}.jsonl"),
            "--events",
            "300",
            "--label-delay",
            "5",
            "--seed",
            "9",
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    truth = (tmp_path / "a.truth.json").read_text()
    assert '"index": 150' in truth and '"kind": "covariate"' in truth


def test_bench_prints_the_figures_as_json() -> None:
    import json

    result = streamheal("bench", "--events", "1000", "--rounds", "1", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in (
        "engine_eps",
        "bare_eps",
        "minibatch_eps",
        "engine_over_bare",
        "minibatch_over_bare",
    ):
        assert figures[key] > 0
