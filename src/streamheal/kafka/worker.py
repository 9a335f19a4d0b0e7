"""The worker: a consumer-group member that drives one Engine per assigned partition.

Per batch: ``consume`` up to ``engine.batch_size`` records, decode them, let each
partition's Engine process its records, produce predictions and dead letters, wait
until the broker has acknowledged every one of them, and only then commit the
consumed offsets (at-least-once). Rebalance callbacks run inside ``consume``, i.e.
between batches, when everything before them is already committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamheal import models
from streamheal.commands import Refusal
from streamheal.config import Config
from streamheal.detectors.suite import Drift
from streamheal.engine import Engine, Prediction
from streamheal.events import Rejection, Source, decode
from streamheal.guards import Notice
from streamheal.kafka import records
from streamheal.kafka.admin import ensure_topics
from streamheal.kafka.connect import require_topics, wait_for_cluster, with_logging
from streamheal.kafka.control import ControlListener
from streamheal.kafka.snapshots import SnapshotWriter
from streamheal.policy import Action
from streamheal.registry import CHAMPION, RegistryError, open_registry

log = logging.getLogger("streamheal.worker")


class WorkerError(RuntimeError):
    """The worker cannot go on without risking loss (its uncommitted batch will be re-read)."""


@dataclass
class WorkerStats:
    consumed: int = 0
    predictions: int = 0
    dead_lettered: int = 0
    drifts: int = 0
    actions: int = 0
    batches: int = 0


class Worker:
    """Run with :meth:`run`; stop from any thread (or a signal handler) with :meth:`stop`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.engines: dict[int, Engine] = {}
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._delivery_errors: list[str] = []
        self.registry = open_registry(config.registry)
        self._snapshots = SnapshotWriter(self.registry)
        kafka = config.kafka
        self._consumer = Consumer(
            with_logging(
                {
                    "bootstrap.servers": kafka.bootstrap_servers,
                    "group.id": kafka.group_id,
                    "client.id": kafka.client_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "cooperative-sticky",
                    **kafka.common,
                    **kafka.consumer,
                }
            )
        )
        self._producer = Producer(
            with_logging(
                {
                    "bootstrap.servers": kafka.bootstrap_servers,
                    "client.id": kafka.client_id,
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    **kafka.common,
                    **kafka.producer,
                }
            )
        )

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Finish the current batch, commit it, leave the group."""
        self._stop.set()

    def run(self) -> WorkerStats:
        config = self.config
        # Fail fast: BrokerUnavailable after kafka.connect_timeout_seconds (exit 69), or
        # MissingTopics with topics.create = false (exit 78), never an idle worker.
        try:
            metadata = wait_for_cluster(config)
            if config.topics.create:
                ensure_topics(config)
            else:
                require_topics(config, metadata)
        except BaseException:
            # The Kafka clients are left to the garbage collector: close() would replay
            # their queued connection errors into the log under the one-line reason.
            self._snapshots.close()
            raise
        self._control = ControlListener(config)
        log.info(
            "streamheal worker starting: brokers=%s group=%s topic=%s model=%s mode=%s batch=%d",
            config.kafka.bootstrap_servers,
            config.kafka.group_id,
            config.topics.events,
            config.model.name,
            config.engine.mode,
            config.engine.batch_size,
        )
        self._consumer.subscribe(
            [config.topics.events],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        progress = _Progress(config.worker.progress_interval_seconds)
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(
                    num_messages=config.engine.batch_size,
                    timeout=config.worker.poll_timeout_seconds,
                )
                if messages:
                    self._process_batch(messages)
                self._apply_commands()
                if progress.due():
                    progress.report(self.stats.consumed, self._lag())
        finally:
            self._control.close()
            self._snapshots.close()
            self._producer.flush(30)
            self._consumer.close()  # leaves the group; commits nothing (auto-commit is off)
            log.info(
                "streamheal worker stopped: consumed=%d predictions=%d dead_lettered=%d",
                self.stats.consumed,
                self.stats.predictions,
                self.stats.dead_lettered,
            )
        return self.stats

    # ------------------------------------------------------------------ the loop
    def _process_batch(self, messages: list[Message]) -> None:
        limits = self.config.events
        max_bytes = limits.max_bytes
        by_partition: dict[int, list] = defaultdict(list)
        next_offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise WorkerError(f"fatal consumer error: {error}")
                log.warning("consumer error (skipped, librdkafka retries): %s", error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            source = Source(topic, partition, offset)
            by_partition[partition].append(
                decode(message.value(), source, max_bytes, message.key(), limits)
            )
            next_offsets[(topic, partition)] = offset + 1
        for partition, batch in by_partition.items():
            engine = self.engines.get(partition)
            if engine is None:  # assignment callbacks run first; this is only a safety net
                engine = self.engines[partition] = Engine(self.config)
            self._publish(engine.process(batch))
            self.stats.consumed += len(batch)
        self._producer.flush()
        if self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise WorkerError(f"{len(errors)} outputs not acknowledged, first: {errors[0]}")
        self._commit(next_offsets)
        self.stats.batches += 1

    def _publish(self, outputs: list) -> None:
        topics = self.config.topics
        for output in outputs:
            if type(output) is Prediction:
                self._produce(topics.predictions, output.id.encode(), records.prediction(output))
                self.stats.predictions += 1
            elif type(output) is Rejection:
                self._produce(
                    topics.dlq, output.key, output.raw, headers=records.dead_letter_headers(output)
                )
                self.stats.dead_lettered += 1
            elif type(output) is Action:
                self._publish_action(output)
            elif type(output) is Notice:
                self._produce(
                    topics.alerts,
                    f"notice:{output.notice}".encode(),
                    orjson.dumps(output.to_record(), option=orjson.OPT_NON_STR_KEYS),
                )
                log.warning("partition %s: %s", output.partition, output.message)
            elif type(output) is Drift:
                self._produce(topics.alerts, output.key.encode(), records.drift(output))
                self.stats.drifts += 1
                log.warning(
                    "drift %s: %s (statistic %s, p %s) partition %s at event %d",
                    output.status,
                    output.key,
                    output.statistic,
                    output.p_value,
                    output.partition,
                    output.confirmed_index,
                )

    def _publish_action(self, action: Action) -> None:
        record = action.to_record()
        if action.model is not None:  # a snapshot: to the registry, off the hot loop
            queued = self._snapshots.submit(action, self.config)
            record["registry"] = "queued" if queued else "dropped (writer queue full)"
        self._produce(
            self.config.topics.alerts,
            f"action:{action.action}".encode(),
            orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS),
        )
        self.stats.actions += 1
        log.warning("action on partition %s: %s", action.partition, action.message)

    def _apply_commands(self) -> None:
        """Promote / rollback commands from the control topic, between batches. A record that
        is not a valid command, or names a model the registry cannot serve, is refused
        (logged once and written as an alert record); nothing it holds can raise out of here."""
        for offset, command in self._control.poll():
            if type(command) is Refusal:
                self._refuse_command(offset, command.why, command.preview)
                continue
            try:
                model_bytes = self.registry.load_bytes(command.version)
                model = models.loads(model_bytes)
            except RegistryError as err:
                self._refuse_command(offset, str(err), command.describe())
                continue
            except Exception as err:  # a verified file that still does not unpickle
                self._refuse_command(offset, f"model does not load: {err!r}", command.describe())
                continue
            for engine in self.engines.values():
                # Each partition gets its own copy: models learn in place.
                action = engine.install(
                    models.loads(model_bytes), command.version, command.describe()
                )
                self._publish_action(action)
            del model
            self._producer.flush()
            log.warning("applied control command at offset %d: %s", offset, command.describe())

    def _refuse_command(self, offset: int, why: str, preview: str) -> None:
        log.error("control record at offset %d refused: %s [%s]", offset, why[:300], preview)
        record = {
            "type": "control_refused",
            "offset": offset,
            "reason": why[:1000],
            "record": preview,
        }
        self._produce(self.config.topics.alerts, b"control_refused", orjson.dumps(record))
        self._producer.flush()

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers=None) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=headers, on_delivery=self._on_delivery
                )
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)

    def _on_delivery(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:
            self._delivery_errors.append(f"{message.topic()}: {err}")

    def _commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as err:
            # Lost the partitions in a rebalance: the new owner re-reads this batch (at-least-once).
            log.warning("offset commit failed, batch will be re-read by the new owner: %s", err)

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        champion, model_bytes = self._champion()
        for tp in partitions:
            engine = self.engines[tp.partition] = Engine(self.config)
            if model_bytes is not None:
                engine.model, engine.model_version = models.loads(model_bytes), champion
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _champion(self) -> tuple[int | None, bytes | None]:
        """The registry champion to serve, or (None, None): a registry that cannot give a
        sound one must not stop the worker, so a fresh model serves instead (loudly)."""
        try:
            champion = self.registry.alias(CHAMPION)
            if champion is None:
                return None, None
            model_bytes = self.registry.load_bytes(champion)
            models.loads(model_bytes)  # it must unpickle before any partition relies on it
            return champion, model_bytes
        except Exception as err:  # RegistryError, or a verified file that does not unpickle
            log.error("registry champion refused, serving a fresh model: %s", err)
            return None, None

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Everything processed so far is flushed and committed at the end of each batch.
        for tp in partitions:
            self.engines.pop(tp.partition, None)
        log.info("revoked partitions %s", sorted(tp.partition for tp in partitions))

    def _lag(self) -> int:
        lag = 0
        try:
            for tp in self._consumer.position(self._consumer.assignment()):
                _, high = self._consumer.get_watermark_offsets(tp, timeout=1.0)
                lag += max(0, high - tp.offset) if tp.offset >= 0 else high
        except KafkaException:
            return -1
        return lag


class _Progress:
    """A periodic one-line progress report (events/s since the last line, lag)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last_time = time.monotonic()
        self._last_count = 0

    def due(self) -> bool:
        return time.monotonic() - self._last_time >= self.interval

    def report(self, consumed: int, lag: int) -> None:
        now = time.monotonic()
        rate = (consumed - self._last_count) / (now - self._last_time)
        log.info("progress: consumed=%d rate=%.0f events/s lag=%d", consumed, rate, lag)
        self._last_time, self._last_count = now, consumed
