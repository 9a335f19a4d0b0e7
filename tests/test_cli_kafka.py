"""The command line against the real broker: replay --topic connects with the Kafka
settings of its -c file, and names a topic the cluster does not have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamheal.cli import main
from streamheal.config import Config

pytestmark = pytest.mark.kafka


def config_file(tmp_path: Path, config: Config) -> Path:
    path = tmp_path / "replay.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{config.kafka.bootstrap_servers}"\n'
        f'[topics]\nevents = "{config.topics.events}"\npartitions = 2\ncreate = false\n'
        f'[registry]\npath = "{tmp_path / "registry"}"\n'
    )
    return path


def test_replay_topic_reads_the_cluster_of_its_config_file(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # The environment points elsewhere: only the -c file knows the test's broker.
    monkeypatch.setenv("STREAMHEAL_KAFKA__CONNECT_TIMEOUT_SECONDS", "60")
    path = config_file(tmp_path, config)
    assert main(["simulate", "breast-cancer", "--kafka", "--events", "300", "-c", str(path)]) == 0
    out = tmp_path / "out"
    assert (
        main(["replay", "--topic", config.topics.events, "-c", str(path), "--out", str(out)]) == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["configs"][0]["events"] == 300
    assert report["input"]["topic"] == config.topics.events


def test_replay_names_a_topic_the_cluster_does_not_have(
    config: Config, tmp_path: Path, capsys
) -> None:
    path = config_file(tmp_path, config)
    argv = ["replay", "--topic", "no.such.topic", "-c", str(path), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    assert "topic 'no.such.topic' does not exist on the cluster at" in capsys.readouterr().err
