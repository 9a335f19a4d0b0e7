"""``make demo``: the breast-cancer scenario through a real worker on the local broker.

Streams the scenario (with delayed labels and a handful of bad records) into topics of
its own, runs a worker until every record is processed, reads the predictions and dead
letters back from their topics and prints a summary: accuracy before and after the
shift side by side, dead letters by reason, and where everything went.
"""

from __future__ import annotations

import io
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streamheal.alerts.console import ConsoleSink
from streamheal.alerts.notifier import Notifier
from streamheal.config import Config, load_config
from streamheal.kafka import records
from streamheal.kafka.admin import ensure_topics
from streamheal.kafka.worker import Worker
from streamheal.producer import EventProducer
from streamheal.scenarios import breast_cancer

# Each of the 4 partitions gets a quarter of the stream: enough for a 500-event reference,
# a 500-event warm-up and a shift in the middle of what follows.
EVENTS = 12000
DRIFT_AT = 8000
LABEL_DELAY = 50
BAD_RECORDS = [
    b"not json at all",
    b'{"id": 17, "ts": 1.0, "features": {"mean radius": 14.0}}',
    b'{"id": "x-1", "ts": 1.0, "features": {"mean radius": [14.0]}}',
    b'{"id": "x-2", "ts": 1.0, "label": 1}',
    b'{"id": "x-3", "ts": 1.0}',
]


def demo_config(base: Config) -> Config:
    tag = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    names = ["events", "predictions", "alerts", "metrics", "dlq", "state", "control"]
    return base.replace(
        topics={name: f"streamheal.demo-{tag}.{name}" for name in names},
        kafka={"group_id": f"streamheal-demo-{tag}"},
        worker={"progress_interval_seconds": 5.0},
        # A free port (a running worker may hold 9108); the demo runs its own notifier.
        metrics={"port": 0, "address": "127.0.0.1"},
        alerts={"embedded_notifier": False},
        # A registry of the demo's own: its snapshots do not mix with a real one.
        registry={"path": tempfile.mkdtemp(prefix="streamheal-demo-registry-")},
    )


def read_back(config: Config, topic: str, count: int, timeout: float = 120.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": "streamheal-demo-reader",
            # The worker writes in transactions: read only what it committed.
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(config.topics.partitions)])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        messages += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
    consumer.close()
    return messages


def read_alerts(config: Config) -> list[dict[str, Any]]:
    """Every committed record of the alerts topic, up to its end (not only the first)."""
    from streamheal.replay import topic_records

    return [orjson.loads(value) for value, _, _ in topic_records(config, config.topics.alerts)]


def metrics_summary(worker: Worker, scored: int, timeout: float = 15.0) -> str:
    """Where the worker's metrics are, and what a scrape says once it saw every event."""
    port = worker.metrics.port
    if port is None:
        return "not served (see the log)"
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + timeout
    while True:  # the Engines' numbers are copied once a second
        with urllib.request.urlopen(url, timeout=10) as response:
            samples = [
                s
                for family in text_string_to_metric_families(response.read().decode())
                for s in family.samples
            ]
        seen = sum(s.value for s in samples if s.name == "streamheal_events_scored_total")
        if seen >= scored or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    firing = sum(1 for s in samples if s.name == "streamheal_drift_firing" and s.value == 1)
    return f"{url}: {seen:.0f} events scored, {firing} detectors firing"


def notifications(config: Config) -> str:
    """What the notifier sends for the demo's alert records (console sink), with the
    group windows closed at the end instead of after alerts.group_window_seconds."""
    out = io.StringIO()
    notifier = Notifier(config, sink=ConsoleSink(out))
    notifier.start()
    try:
        deadline = time.monotonic() + 60
        while not notifier.caught_up() and time.monotonic() < deadline:
            notifier.run_once(timeout=0.2)
        notifier.run_once(timeout=0, flush_groups=True)
    finally:
        notifier.close()
    return out.getvalue()


def main() -> int:
    config = demo_config(load_config())
    ensure_topics(config)
    scenario = breast_cancer(events=EVENTS, drift_at=DRIFT_AT, label_delay=LABEL_DELAY, seed=42)
    truth = {e["id"]: e["label"] for e in scenario.events if "features" not in e}
    order = {e["id"]: i for i, e in enumerate(e for e in scenario.events if "features" in e)}

    started = time.monotonic()
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in scenario.events:
            producer.send_event(event)
        for raw in BAD_RECORDS:
            producer.send_raw(b"demo-bad", raw)

    worker = Worker(config)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    predictions = read_back(config, config.topics.predictions, EVENTS)
    dead = read_back(config, config.topics.dlq, len(BAD_RECORDS))
    total = len(scenario.events) + len(BAD_RECORDS)
    deadline = time.monotonic() + 60
    while worker.stats.consumed < total and time.monotonic() < deadline:
        time.sleep(0.1)
    scraped = metrics_summary(worker, EVENTS)
    worker.stop()
    thread.join(timeout=60)
    # Read once the worker has stopped: every alert it committed is on the topic by now.
    alert_records = read_alerts(config)
    sent = notifications(config)

    correct = {"before": 0, "after": 0}
    seen = {"before": 0, "after": 0}
    for message in predictions:
        value = orjson.loads(message.value())
        side = "before" if order[value["id"]] < DRIFT_AT else "after"
        seen[side] += 1
        correct[side] += value["prediction"] == truth[value["id"]]
    reasons = Counter(records.header_map(m.headers())[records.DLQ_REASON] for m in dead)
    # Drift records name the partition and offset where they were confirmed; predictions map
    # (partition, offset) back to the event, hence to its position in the whole stream.
    position = {}
    for message in predictions:
        value = orjson.loads(message.value())
        position[(value["partition"], value["offset"])] = order[value["id"]]
    firing = [r for r in alert_records if r["type"] == "drift" and r["status"] == "firing"]
    actions = Counter(r["action"] for r in alert_records if r["type"] == "action")
    elapsed = time.monotonic() - started

    drift = scenario.truth["drifts"][0]
    print()
    print(f"streamheal demo: breast-cancer, {EVENTS} feature events, labels {LABEL_DELAY} late,")
    print(f"  covariate shift on {drift['feature']!r} (+N(2,1)) from event {drift['index']}")
    print(f"  records consumed     {worker.stats.consumed} (of {total} produced)")
    print(f"  predictions          {len(predictions):>5}  -> {config.topics.predictions}")
    print(f"  dead letters         {len(dead):>5}  -> {config.topics.dlq}")
    for reason, n in sorted(reasons.items()):
        print(f"      {reason:<22} {n}")
    print("                       before shift   after shift")
    print(
        f"  accuracy             {correct['before'] / max(seen['before'], 1):>12.3f}"
        f"  {correct['after'] / max(seen['after'], 1):>12.3f}"
    )
    print(f"  events scored        {seen['before']:>12}  {seen['after']:>12}")
    print(f"  drift alerts         {len(firing):>5}  -> {config.topics.alerts}")
    for key in sorted({d["key"] for d in firing}):
        hits = [d for d in firing if d["key"] == key]
        # Each partition's Engine sees its own quarter: count its events since the shift.
        delays = sorted(
            sum(
                1
                for (p, o), i in position.items()
                if p == d["partition"] and i >= DRIFT_AT and o <= d["offset"]
            )
            for d in hits
        )
        print(
            f"      {key:<38} in {len(hits)} partitions, {delays[0]}-{delays[-1]} "
            "events into the shift"
        )
    healed = ", ".join(f"{n} {a}" for a, n in sorted(actions.items())) or "none"
    print(f"  actions              {healed} (snapshots -> {config.registry.path})")
    print(f"  metrics              {scraped}")
    print('                       (`streamheal run` serves them on :9108, see README "Metrics")')
    count = sent.count("── notification")
    print(
        f"  notifications        {count:>5}  from {len(alert_records)} alert records "
        "(console sink; Slack with SLACK_BOT_TOKEN + SLACK_CHANNEL)"
    )
    for line in sent.splitlines():
        print(f"      {line}")
    print(f"  wall time            {elapsed:.1f}s")
    complete = len(predictions) == EVENTS and worker.stats.consumed == total
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
