"""The notifier on the real broker, sending to a local server that speaks the Slack Web API:
grouping across partitions and features, threads, rate limits, silences from the control
topic, and a restart that does not post twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from streamheal.alerts.notifier import Notifier
from streamheal.alerts.sink import Receipt
from streamheal.alerts.slack import SlackWebSink
from streamheal.config import Config
from streamheal.metrics import sample_value
from tests.conftest import action, drift, notifier_config, running_notifier, wait_for, web_sink
from tests.slack_web_api import slack_web_api

pytestmark = pytest.mark.kafka

NAMES = ("events", "predictions", "alerts", "metrics", "dlq", "state", "control")


def config_toml(config: Config, folder: Path, extra: str = "") -> Path:
    """A TOML file with ``config``'s broker, group and topics (and ``extra``), for the CLI."""
    path = folder / "streamheal.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{config.kafka.bootstrap_servers}"\n'
        f'group_id = "{config.kafka.group_id}"\n[topics]\n'
        + "".join(f'{n} = "{getattr(config.topics, n)}"\n' for n in NAMES)
        + extra
    )
    return path


def produce_alerts(config: Config, records: list[dict[str, Any]]) -> None:
    """As the worker writes them: keyed by drift key (or action), JSON values."""
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers, "acks": "all"})
    for record in records:
        key = record.get("key") or f"{record['type']}:{record.get('action')}"
        producer.produce(config.topics.alerts, orjson.dumps(record), key.encode())
    assert producer.flush(30) == 0


def field_texts(message: dict[str, Any]) -> list[str]:
    return [
        f["text"] for b in message["blocks"] if b["type"] == "section" for f in b.get("fields", [])
    ]


def test_a_drift_in_four_partitions_is_one_message_and_resolved_lands_in_its_thread(
    config: Config,
) -> None:
    config = notifier_config(config, partitions=4)
    cause = "covariate:feature:mean radius:cusum"
    records = [drift(partition=p) for p in range(4)] + [
        action("snapshot", cause, p) for p in range(4)
    ]
    produce_alerts(config, records)
    with slack_web_api() as api, running_notifier(config, web_sink(api)) as notifier:
        wait_for(lambda: api.top_level(), what="the alert message")
        produce_alerts(config, [drift(partition=p, status="resolved") for p in range(4)])
        wait_for(lambda: len(api.posted()) == 2, what="the resolved reply")
        (message, reply) = api.posted()
        wait_for(lambda: notifier.book.outbox == [], what="nothing left to send")
    header = message["blocks"][0]["text"]["text"]
    assert "covariate drift on mean radius" in header and "streamheal" in header
    fields = "\n".join(field_texts(message))
    assert "4/4 (0, 1, 2, 3)" in fields
    assert "cusum 50 > 20" in fields
    assert "mean 14.1 ± 3.5 (n=500) → mean 16.2 ± 3.4 (n=500)" in fields
    assert "0.92 / 0.93" in fields and "snapshot ×4 (v1)" in fields
    context = message["blocks"][3]["elements"][0]["text"]
    assert "<http://grafana.example/d/streamheal|Grafana>" in context and "Runbook" in context
    buttons = [e["text"]["text"] for e in message["blocks"][4]["elements"]]
    assert buttons == ["Silence 1h", "Roll back", "Promote challenger"]
    assert reply["thread_ts"] == message["ts"] and "Resolved" in reply["text"]
    assert message["metadata"]["event_payload"]["key"] != reply["metadata"]["event_payload"]["key"]


def test_twelve_features_drifting_together_are_one_message_even_through_a_429(
    config: Config,
) -> None:
    config = notifier_config(config)
    features = [f"feature {i:02d}" for i in range(12)]
    records = [
        drift(feature=name, partition=p, statistic=25.0 + i)
        for i, name in enumerate(features)
        for p in (0, 1)
    ]
    produce_alerts(config, records)
    with slack_web_api() as api:
        api.rate_limited = 1  # the first call gets 429 with Retry-After: 1
        with running_notifier(config, web_sink(api)) as notifier:
            wait_for(lambda: api.posted(), what="the grouped message")
            wait_for(lambda: notifier.book.outbox == [], what="nothing left to send")
            failures = sample_value(
                notifier.metrics.registry, "streamheal_notification_failures_total", sink="slack"
            )
        (message,) = api.posted()
        calls = list(api.calls)
    assert calls[:2] == [("chat.postMessage", 429), ("chat.postMessage", 200)]
    assert failures is None  # slack_sdk's retry handler waited and retried: no failure
    assert "covariate drift on 12 features" in message["blocks"][0]["text"]["text"]
    listing = message["blocks"][1]["text"]["text"]
    positions = [listing.index(f"*{name}*") for name in features]
    assert positions == sorted(positions, reverse=True)  # strongest (last) first
    assert "2/2 partitions" in listing


class CrashAfterPost:
    """Posts, then dies before the notifier can record the delivery (a crash)."""

    name = "slack"

    def __init__(self, inner: SlackWebSink) -> None:
        self.inner = inner

    def post(self, message: Any, thread: Receipt | None = None) -> Receipt:
        self.inner.post(message, thread)
        raise SystemExit("crashed right after Slack accepted")

    def find(self, key: str, since: float, thread: Receipt | None = None) -> Receipt | None:
        return self.inner.find(key, since, thread)

    def update(self, channel: str, ts: str, message: Any) -> None:
        self.inner.update(channel, ts, message)


def test_a_notifier_restarted_after_a_crash_does_not_post_twice(config: Config) -> None:
    config = notifier_config(config)
    produce_alerts(config, [drift(partition=p) for p in (0, 1)])
    with slack_web_api() as api:
        crashing = Notifier(config, sink=CrashAfterPost(web_sink(api)))
        crashing.start()
        with pytest.raises(SystemExit):
            wait_for(lambda: crashing.run_once(timeout=0.2) < 0, timeout=60)
        crashing.close()
        assert len(api.posted()) == 1
        # The successor rebuilds from the alerts topic: the notification was announced but
        # never confirmed, so it asks Slack by the message's idempotency key first.
        with running_notifier(config, web_sink(api)) as notifier:
            wait_for(lambda: notifier.book is not None and notifier.book.outbox == [], what="sent")
            produce_alerts(config, [drift(partition=p, status="resolved") for p in (0, 1)])
            wait_for(lambda: len(api.posted()) == 2, what="the resolved reply")
        (message, reply) = api.posted()
        asked = [method for method, _ in api.calls if method.startswith("conversations.")]
    assert asked == ["conversations.history"]  # found there: not posted again
    assert reply["thread_ts"] == message["ts"]  # the thread survived the restart
    assert [m for m in api.posted() if not m["thread_ts"]] == [message]


def test_a_silence_on_the_control_topic_holds_notifications_back(
    config: Config, tmp_path: Path
) -> None:
    config = notifier_config(config)
    config_file = config_toml(config, tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "streamheal.cli", "silence", "-c", str(config_file), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    added = cli("add", 'kind=covariate,feature=~"noisy.*"', "--for", "2h", "--comment", "known")
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split()[1]
    listed = cli("list")
    assert silence_id in listed.stdout and 'feature=~"noisy.*"' in listed.stdout
    produce_alerts(config, [drift(feature="noisy sensor"), drift(feature="mean radius")])
    with slack_web_api() as api, running_notifier(config, web_sink(api)) as notifier:
        wait_for(lambda: api.posted(), what="the unsilenced alert")
        wait_for(lambda: notifier.book.outbox == [], what="nothing left to send")
        silenced = [a for a in notifier.book.alerts.values() if a.silenced_by == silence_id]
        (message,) = api.posted()
    assert [a.identity.feature for a in silenced] == ["noisy sensor"]
    assert "mean radius" in message["text"] and "noisy" not in message["text"]
    expired = cli("expire", silence_id)
    assert expired.returncode == 0, expired.stderr
    assert silence_id not in cli("list").stdout


def test_streamheal_notify_sends_serves_its_metrics_and_stops_cleanly_on_sigterm(
    config: Config, tmp_path: Path
) -> None:
    config = notifier_config(config)
    config_file = config_toml(
        config,
        tmp_path,
        '[alerts]\ngroup_window_seconds = 1\nnotifier_port = 0\nnotifier_address = "127.0.0.1"\n',
    )
    # One alert record: exactly one message, however the machine's load spaces the reads
    # (two partitions' records could fall into two 1 s groups; grouping is tested apart).
    produce_alerts(config, [drift(partition=0)])
    with slack_web_api() as api:
        env = {**os.environ, **api.env(), "SLACK_SIGNING_SECRET": "s3cret"}
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamheal.cli",
                "notify",
                "-c",
                str(config_file),
                "--interactive-port",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            first = process.stdout.readline()
            assert first.startswith("notify: metrics on http://127.0.0.1:"), first
            wait_for(lambda: api.posted(), what="the message from streamheal notify")
            url = first.split()[-1]
            wait_for(
                lambda: (
                    b'streamheal_notifications_total{kind="firing",sink="slack"} 1.0'
                    in urllib.request.urlopen(url, timeout=10).read()
                ),
                what="the delivery counted in its metrics",
            )
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    assert "Slack interactivity endpoint on port" in out
    assert len(api.posted()) == 1 and "xoxb" not in err  # the token never reaches the log
