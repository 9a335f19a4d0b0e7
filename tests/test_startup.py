"""Failing fast and clearly at start: an unreachable broker, a missing topic, log noise."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streamheal.cli import EXIT_CONFIG, EXIT_UNAVAILABLE
from streamheal.config import Config, ConfigError
from streamheal.kafka.admin import ensure_topics
from streamheal.kafka.connect import (
    LIBRDKAFKA_LOG,
    BrokerUnavailable,
    MissingTopics,
    RateLimit,
    with_logging,
)
from streamheal.kafka.worker import Worker
from tests.conftest import running_worker, wait_for

UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1; the connection is refused at once


def write_config(tmp_path: Path, sections: dict[str, dict[str, object]]) -> Path:
    """A TOML file of ``sections``, with the registry inside ``tmp_path``."""
    sections = {"registry": {"path": str(tmp_path / "registry")}, **sections}
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = tmp_path / "streamheal.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def streamheal(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamheal.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,  # only catches a hang
        cwd=tmp_path,
        env={**os.environ, **env},
    )


def test_run_gives_up_on_an_unreachable_broker_in_one_line_with_exit_69(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"kafka": {"connect_timeout_seconds": 3}})
    result = streamheal(
        tmp_path, "run", "-c", str(path), STREAMHEAL_KAFKA__BOOTSTRAP_SERVERS=UNREACHABLE
    )
    assert result.returncode == EXIT_UNAVAILABLE == 69, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"streamheal: cannot reach Kafka at {UNREACHABLE} within 3s (")
    assert "Connection refused" in lines[-1]
    assert [line for line in lines if UNREACHABLE in line] == [lines[-1]]
    assert "%3|" not in result.stderr and "Traceback" not in result.stderr


def test_the_worker_raises_broker_unavailable_naming_the_servers(tmp_path: Path) -> None:
    config = Config().replace(
        kafka={"bootstrap_servers": UNREACHABLE, "connect_timeout_seconds": 1},
        registry={"path": str(tmp_path / "registry")},
    )
    with pytest.raises(BrokerUnavailable) as err:
        Worker(config).run()
    assert str(err.value).startswith(f"cannot reach Kafka at {UNREACHABLE} within 1s (")


def test_simulate_to_kafka_gives_up_on_an_unreachable_broker_with_exit_69(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, {"kafka": {"connect_timeout_seconds": 2}})
    result = streamheal(
        tmp_path,
        "simulate",
        "sea",
        "--kafka",
        "--events",
        "10",
        "-c",
        str(path),
        STREAMHEAL_KAFKA__BOOTSTRAP_SERVERS=UNREACHABLE,
    )
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert f"streamheal: cannot reach Kafka at {UNREACHABLE} within 2s" in result.stderr


def test_librdkafka_lines_go_through_python_logging_rate_limited(
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh budget: other tests in this process may have spent the shared one.
    monkeypatch.setattr(LIBRDKAFKA_LOG, "filters", [RateLimit(burst=3)])
    admin = AdminClient(with_logging({"bootstrap.servers": UNREACHABLE}))
    with caplog.at_level(logging.DEBUG, logger=LIBRDKAFKA_LOG.name):
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=2)  # librdkafka retries the connection many times
        admin.poll(0)
    refused = [
        record.getMessage()
        for record in caplog.records
        if record.name == LIBRDKAFKA_LOG.name and "Connection refused" in record.getMessage()
    ]
    logged = [line for line in refused if line.startswith("FAIL")]  # librdkafka's log lines
    reported = [line for line in refused if line.startswith("kafka client:")]  # error events
    assert logged and reported, refused
    assert len(logged) <= 3 and len(reported) <= 3, refused
    assert "%3|" not in capfd.readouterr().err


def test_the_rate_limit_lets_a_burst_through_then_says_how_many_it_held_back() -> None:
    now = [0.0]
    limit = RateLimit(burst=2, interval_seconds=10, clock=lambda: now[0])

    def line(broker: int) -> logging.LogRecord:
        return logging.LogRecord(
            "streamheal.librdkafka", logging.ERROR, "", 0, "broker %d: refused", (broker,), None
        )

    assert [limit.filter(line(n)) for n in range(5)] == [True, True, False, False, False]
    other = logging.LogRecord("x", logging.ERROR, "", 0, "something else", (), None)
    assert limit.filter(other)  # another kind of line has its own budget
    now[0] = 10.0
    record = line(9)
    assert limit.filter(record)
    assert record.getMessage() == "broker 9: refused (3 similar lines held back in the last 10s)"
    assert [limit.filter(line(n)) for n in range(3)] == [True, False, False]


def test_the_rate_limit_remembers_a_bounded_number_of_kinds() -> None:
    limit = RateLimit(burst=1, interval_seconds=60, max_kinds=10, clock=lambda: 0.0)
    for n in range(1000):
        letters = "".join(chr(97 + int(d)) for d in str(n))  # digits would make them similar
        limit.filter(logging.LogRecord("x", logging.INFO, "", 0, letters, (), None))
        assert len(limit._kinds) <= 10


@pytest.mark.kafka
def test_run_with_create_false_and_a_missing_events_topic_stops_with_exit_78(
    tmp_path: Path, config: Config
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}.events"
    topics = {**config.topics.names(), "events": missing, "create": False}
    path = write_config(
        tmp_path,
        {
            "kafka": {
                "bootstrap_servers": config.kafka.bootstrap_servers,
                "group_id": config.kafka.group_id,
                "connect_timeout_seconds": 60,
            },
            "topics": topics,
        },
    )
    result = streamheal(tmp_path, "run", "-c", str(path))
    assert result.returncode == EXIT_CONFIG, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"streamheal: config error: topics.events = '{missing}': not on the")
    assert config.kafka.bootstrap_servers in last and "topics.create = false" in last
    assert "Traceback" not in result.stderr


@pytest.mark.kafka
def test_the_worker_names_every_missing_topic_with_create_false(config: Config) -> None:
    tag = uuid.uuid4().hex[:8]
    cfg = config.replace(topics={"dlq": f"gone-{tag}.dlq", "state": f"gone-{tag}.state"})
    with pytest.raises(MissingTopics) as err:
        Worker(cfg.replace(topics={"create": False})).run()
    assert isinstance(err.value, ConfigError)
    assert f"topics.dlq = 'gone-{tag}.dlq', topics.state = 'gone-{tag}.state'" in str(err.value)


@pytest.mark.kafka
def test_a_worker_with_create_false_starts_when_every_topic_exists(config: Config) -> None:
    with running_worker(config.replace(topics={"create": False})) as worker:
        wait_for(lambda: len(worker.engines) == 2, timeout=120, what="the partitions")


@pytest.mark.kafka
def test_a_replication_factor_above_the_broker_count_is_a_config_error(config: Config) -> None:
    tag = uuid.uuid4().hex[:8]
    cfg = config.replace(
        topics={
            **{key: f"rf-{tag}.{key}" for key in config.topics.names()},
            "replication_factor": 3,
        }
    )
    with pytest.raises(ConfigError) as err:
        ensure_topics(cfg)
    assert str(err.value).startswith("topics.replication_factor: the cluster refused")


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (Linux: /proc's SigCgt mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_a_sigterm_while_the_worker_starts_or_waits_for_kafka_ends_it_with_exit_0(
    tmp_path: Path,
) -> None:
    """An operator who stops a worker that is still starting (or still waiting for an
    unreachable broker) gets a clean exit, not 143 from the default action nor 69 after
    the whole connect timeout."""
    path = write_config(tmp_path, {"kafka": {"connect_timeout_seconds": 600}})
    process = subprocess.Popen(
        [sys.executable, "-m", "streamheal.cli", "run", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "STREAMHEAL_KAFKA__BOOTSTRAP_SERVERS": UNREACHABLE},
    )
    try:
        wait_for(lambda: _catches_sigterm(process.pid), 120, "a SIGTERM handler in place")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=300)  # only catches a hang
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "Traceback" not in output
