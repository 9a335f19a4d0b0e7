"""Shared fixtures: a real Kafka broker and per-test topics; and, at the end, the helpers
several test modules use (events from rows, a drifted Engine, alert records, a notifier
on a thread), so no test module imports another.

The broker comes from, in order: ``STREAMHEAL_TEST_BOOTSTRAP`` (``make test`` starts the
local KRaft broker and sets it), a testcontainers Kafka where a Docker engine answers,
or the project's own local broker started here. Every test gets topic names and a
consumer group of its own, so tests never see each other's records.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from hypothesis import settings

from streamheal import models
from streamheal.alerts.notifier import Notifier
from streamheal.alerts.sink import Sink
from streamheal.alerts.slack import SlackWebSink
from streamheal.config import TOPIC_KEYS, Config, LocalKafkaConfig
from streamheal.detectors.suite import Drift
from streamheal.engine import Engine
from streamheal.events import Event, Source, decode, encode
from streamheal.kafka import records
from streamheal.kafka.admin import ensure_topics
from streamheal.kafka.worker import Worker
from streamheal.policy import Action
from streamheal.producer import EventProducer
from streamheal.scenarios import breast_cancer
from tests.slack_web_api import CHANNEL, TOKEN, SlackWebApi

# A busy CI machine must not turn a slow example into a failure; correctness is what we test.
# Derandomized: a CI run explores the same examples every time (reproducible), while a
# developer can widen the search with --hypothesis-seed or a larger max_examples.
settings.register_profile("streamheal", deadline=None, max_examples=200, derandomize=True)
settings.load_profile("streamheal")

# Waits on the broker are deadlines that only catch a hang: on a busy machine things come
# later, never wrong, so no wait gives up sooner than this whatever a test asks for.
WAIT_FLOOR_SECONDS = 600.0


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("STREAMHEAL_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from streamheal.dev.local_broker import LocalKafka

    broker = LocalKafka(LocalKafkaConfig(port=19292, controller_port=19293))
    broker.up()
    try:
        yield broker.bootstrap
    finally:
        broker.down(purge=True)


@pytest.fixture
def config(kafka_bootstrap: str, tmp_path: Path) -> Config:
    """A config whose topics, group and registry are this test's own (topics created)."""
    tag = uuid.uuid4().hex[:8]
    names = ["events", "predictions", "alerts", "metrics", "dlq", "state", "control"]
    cfg = Config().replace(
        kafka={"bootstrap_servers": kafka_bootstrap, "group_id": f"test-{tag}"},
        topics={**{n: f"t{tag}.{n}" for n in names}, "partitions": 2},
        worker={"poll_timeout_seconds": 0.2, "progress_interval_seconds": 2.0},
        # Test workers never contend for a port, nor post to a real Slack from a
        # developer's environment.
        metrics={"port": 0},
        alerts={"embedded_notifier": False},
        registry={"path": str(tmp_path / "registry")},
    )
    ensure_topics(cfg)
    return cfg


def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Any]], bool],
    timeout: float = 60.0,
    partitions: int = 2,
) -> list[Any]:
    """Read a topic from the start (no group, no commits) until ``until(messages)`` holds."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    messages: list[Any] = []
    timeout = max(timeout, WAIT_FLOOR_SECONDS)
    deadline = time.monotonic() + timeout
    try:
        while not until(messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: condition not met in {timeout}s ({len(messages)})")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() is None:
                    messages.append(message)
    finally:
        consumer.close()
    return messages


def read_all(bootstrap: str, topic: str, partitions: int = 2, timeout: float = 60.0) -> list[Any]:
    """Every committed record on the topic right now (``read_committed``, up to the current
    high watermarks). Caught up means position >= high watermark: on a partition written
    with transactions the last offsets are commit markers that no consumer receives."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    messages: list[Any] = []
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        timeout = max(timeout, WAIT_FLOOR_SECONDS)
        deadline = time.monotonic() + timeout
        while True:
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() is None and message.offset() < ends[message.partition()]:
                    messages.append(message)
            positions = consumer.position([TopicPartition(topic, p) for p in range(partitions)])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not read to its end in {timeout}s")
    finally:
        consumer.close()


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll ``condition`` until it holds or the deadline (at least WAIT_FLOOR_SECONDS)
    passes."""
    timeout = max(timeout, WAIT_FLOOR_SECONDS)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.05)


def released_together(target: Callable[..., Any], argument_lists: list[tuple]) -> list[Any]:
    """``target(*arguments)`` in one spawned process per tuple, all released at once by a
    barrier (each has started and imported first, so their calls really interleave); what
    each returned, in order. ``target`` is a module-level function (spawn pickles it by
    name); an exception in a process fails the caller with its repr."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(argument_lists)), context.Queue()
    processes = [
        context.Process(target=_after_barrier, args=(target, arguments, barrier, results, i))
        for i, arguments in enumerate(argument_lists)
    ]
    for process in processes:
        process.start()
    # A deadline only catches a hang: the processes poll nothing and sleep nowhere.
    returned = dict(results.get(timeout=WAIT_FLOOR_SECONDS) for _ in processes)
    for process in processes:
        process.join()
    failed = [value for ok, value in returned.values() if not ok]
    assert failed == [], failed
    return [returned[i][1] for i in range(len(processes))]


def _after_barrier(
    target: Callable[..., Any], arguments: tuple, barrier: Any, results: Any, index: int
) -> None:
    barrier.wait()
    try:
        results.put((index, (True, target(*arguments))))
    except Exception as err:
        results.put((index, (False, repr(err))))


@contextmanager
def running_on_thread(service: Any, name: str) -> Iterator[Any]:
    """``service.run()`` on a thread; ``service.stop()`` on exit, and whatever ``run``
    raised is raised here."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            service.run()
        except BaseException as err:
            failure.append(err)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(timeout=WAIT_FLOOR_SECONDS)
        if failure:
            raise failure[0]


def running_worker(cfg: Config) -> AbstractContextManager[Worker]:
    """A worker on a thread; stopped (batch finished, committed, group left) on exit."""
    return running_on_thread(Worker(cfg), "streamheal-worker")


# ------------------------------------------------ helpers shared by several test modules


def events_from(rows: Iterator[tuple[dict, object]], label_delay: int = 0) -> list[Event]:
    """(features, label) rows -> events; with a delay, labels come as label events."""
    events, waiting = [], []
    for i, (x, y) in enumerate(rows):
        src = Source("t", 0, i)
        if label_delay == 0:
            events.append(Event(f"e{i}", float(i), x, y, (), src, b""))
            continue
        events.append(Event(f"e{i}", float(i), x, None, (), src, b""))
        waiting.append((f"e{i}", y))
        if len(waiting) > label_delay:
            late, label = waiting.pop(0)
            events.append(Event(late, float(i), None, label, (), src, b""))
    return events


def produce(config: Config, events: list[dict]) -> None:
    """Event-schema dicts onto the events topic."""
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in events:
            producer.send_event(event)


def values(messages: list) -> list[dict]:
    """The JSON values of consumed messages."""
    return [orjson.loads(m.value()) for m in messages]


def scenario_events(scenario) -> list[Event]:
    return decoded_events(scenario.events)


def decoded_events(raw: Iterable[dict[str, Any]]) -> list[Event]:
    """Event-schema dicts as the Engine receives them (offset = position)."""
    return [
        Event(e["id"], e["ts"], e.get("features"), e.get("label"), (), Source("t", 0, i), b"")
        for i, e in enumerate(raw)
    ]


@functools.cache  # the same bytes every time: build the model once per process
def model_bytes() -> bytes:
    model = models.build_model(Config().model, seed=1)
    model.learn_one({"x": 1.0}, True)
    return models.dumps(model)


# Small windows, so a 2,400-event stream has its reference, its warm-up and a shift; PSI
# off (noisy on 100-row windows): the shift of `mean radius` is what fires.
SMALL_DETECTORS = {
    "reference_size": 100,
    "window_size": 100,
    "check_every": 50,
    "window_check_every": 100,
    "model_check_every": 500,
    "model_sample_size": 50,
    "psi_threshold": 5.0,
}


def drifted_engine(config: Config) -> tuple[Engine, list[Any]]:
    """One partition's Engine after a covariate shift on `mean radius`, and its outputs."""
    scenario = breast_cancer(events=1200, drift_at=600, label_delay=10, seed=3)
    engine = Engine(config)
    outputs: list[Any] = []
    events = scenario.events
    for start in range(0, len(events), 100):
        batch = [
            decode(encode(e), Source("t", 0, start + i), 65536, None, config.events)
            for i, e in enumerate(events[start : start + 100])
        ]
        outputs += engine.process(batch)
    # A bad record and an outlier: dead letters and clipped values have numbers to show.
    odd = [
        decode(b"not json", Source("t", 0, 9000), 65536, None, config.events),
        decode(
            encode({"id": "odd", "ts": 1e9, "features": {"mean radius": 1e12}}),
            Source("t", 0, 9001),
            65536,
            None,
            config.events,
        ),
    ]
    outputs += engine.process(odd)
    return engine, outputs


TIMING = ("events_per_second", "seconds")


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def drift(
    feature: str | None = "mean radius",
    partition: int = 0,
    status: str = "firing",
    kind: str = "covariate",
    signal: str = "feature",
    detector: str = "cusum",
    statistic: float = 50.0,
    threshold: float = 20.0,
    p_value: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    record = Drift(
        status,
        kind,
        signal,
        feature,
        detector,
        statistic,
        p_value,
        threshold,
        100,
        200,
        1234,
        partition,
        1,
        reference={"n": 500, "mean": 14.1, "std": 3.5},
        current={"n": 500, "mean": 16.2, "std": 3.4},
        extra={"estimated_accuracy": 0.93, "realized_accuracy": 0.92, **extra},
    )
    return records.drift_record(record)


def action(name: str, cause: str, partition: int, version: int = 1) -> dict[str, Any]:
    record = Action(name, 500, version, cause)
    record.partition = partition
    return records.action_record(record)


def notifier_config(config: Config, partitions: int = 2) -> Config:
    """Short windows for tests; with ``partitions`` != 2, topics of its own with that many."""
    topics: dict[str, Any] = {}
    if partitions != 2:
        topics = {n: f"{getattr(config.topics, n)}{partitions}" for n in TOPIC_KEYS}
        topics["partitions"] = partitions
    config = config.replace(
        topics=topics,
        alerts={
            "group_window_seconds": 2.0,
            "resolve_hold_seconds": 0.5,
            "retry_max_seconds": 1.0,
            "grafana_url": "http://grafana.example/d/streamheal",
            "runbook_url": "http://runbooks.example/drift",
        },
    )
    if partitions != 2:
        ensure_topics(config)
    return config


def running_notifier(config: Config, sink: Sink) -> AbstractContextManager[Notifier]:
    return running_on_thread(Notifier(config, sink=sink), "notifier")


def web_sink(api: SlackWebApi) -> SlackWebSink:
    return SlackWebSink(TOKEN, CHANNEL, api.base_url)
