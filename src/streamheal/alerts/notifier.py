"""The notifier: alerts topic in, grouped notifications out, apart from the workers' loop.

``streamheal notify`` (or a thread of ``streamheal run`` when Slack is configured) reads
the alerts topic in a consumer group of its own (``alerts.notifier_group_id``), so a slow
or failing Slack, or a crashed notifier, never slows or stops scoring: the workers only
write records. Per loop turn it:

1. reads new records and hands them to the :class:`~streamheal.alerts.book.AlertBook`
   (grouping across partitions and workers, tuning, silences);
2. writes every alert state change, and every notification it is about to send, as
   records on the alerts topic — in one Kafka transaction, so a crash leaves all or none;
3. sends the due notifications in order through the sink (Slack or console); on failure
   it keeps them and tries again after a backoff (up to ``alerts.retry_max_seconds``);
4. after the sink accepted, writes a ``delivered`` record and commits the consumed
   offsets in one transaction: offsets move only past records whose notifications were
   accepted (at-least-once towards Slack).

After a restart it rebuilds the book from its own records on the alerts topic (the record
of truth), skips input records it had already applied, and re-sends the notifications
announced but never confirmed — first asking Slack, by the message's idempotency key,
whether the message is already there (a crash between Slack's answer and the ``delivered``
record then does not post twice).

The transactional id is fixed per notifier group, so a second notifier started for the
same group fences the first: one notifier groups everything (run exactly one).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from streamheal.alerts.blocks import Links, render
from streamheal.alerts.book import ALERT, AlertBook, Notification
from streamheal.alerts.silences import Silences
from streamheal.alerts.sink import DeliveryFailed, Sink
from streamheal.alerts.slack import sink_from_env, slack_configured
from streamheal.config import Config
from streamheal.errors import StreamhealError
from streamheal.kafka.connect import partitions_of, topic_reader, with_logging
from streamheal.metrics import NotifierMetrics
from streamheal.signing import CONTROL_KEY_ENV, Signer

log = logging.getLogger("streamheal.notifier")

_OWN_PREFIXES = (b'{"type":"alert"', b'{"type":"notification"')
RECOVERY_TIMEOUT_SECONDS = 60.0
FIRST_RETRY_SECONDS = 0.5


class NotifierError(StreamhealError, RuntimeError):
    """The notifier cannot go on; a fresh one rebuilds from the alerts topic, unless
    ``fatal`` (fenced: another notifier of the same group took over)."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def notifier_group(config: Config) -> str:
    return config.alerts.notifier_group_id or f"{config.kafka.group_id}-notifier"


class Notifier:
    """Run with :meth:`run` (until :meth:`stop`), or turn by turn with :meth:`start`,
    :meth:`run_once` and :meth:`close`.

    Parameters
    ----------
    config
        Kafka, topics, ``alerts.*`` and ``registry.model_name`` (the model in identities).
    sink
        Where notifications go (default: from the environment, see
        :func:`~streamheal.alerts.slack.sink_from_env`).
    metrics
        Its Prometheus metrics (default: a fresh registry, or ``registry`` if given).
    silences
        The silences in force (default: ``alerts.silences``); the control topic adds to them.
    clock
        Unix seconds (tests pass their own).
    """

    def __init__(
        self,
        config: Config,
        sink: Sink | None = None,
        metrics: NotifierMetrics | None = None,
        registry: CollectorRegistry | None = None,
        silences: Silences | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.sink = sink if sink is not None else sink_from_env()
        self.metrics = metrics or NotifierMetrics(registry)
        self.silences = (
            silences if silences is not None else Silences.from_config(config.alerts.silences)
        )
        self.links = Links(
            config.alerts.grafana_url,
            config.alerts.runbook_url,
            config.topics.events,
            config.topics.alerts,
            config.model.name,
        )
        self.book: AlertBook | None = None
        self.group = notifier_group(config)
        self._clock = clock
        self._signer = Signer.from_env(CONTROL_KEY_ENV)
        self._stop = threading.Event()
        self._uncertain: set[str] = set()  # restored notifications that may have been posted
        self._inputs: dict[str, list[tuple[int, int]]] = {}  # alert id -> unsettled inputs
        self._positions: dict[int, int] = {}  # alerts-topic partition -> next offset read
        self._committed: dict[int, int] = {}
        self._retry_at = 0.0
        self._backoff = FIRST_RETRY_SECONDS
        self._failing_since: float | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._control: Consumer | None = None
        self._alerts_partitions = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Connect, rebuild the book from the alerts topic, join the notifier group."""
        config, kafka = self.config, self.config.kafka
        common = {"bootstrap.servers": kafka.bootstrap_servers, **kafka.common}
        self._producer = Producer(
            with_logging(
                {
                    **common,
                    "client.id": f"{kafka.client_id}-notifier",
                    "transactional.id": f"{self.group}-tx",
                    "acks": "all",
                    "enable.idempotence": True,
                }
            )
        )
        self._producer.init_transactions(30)
        self.book = AlertBook(
            config.alerts, config.registry.model_name, self._partitions(), self.silences
        )
        self._recover()
        self._consumer = Consumer(
            with_logging(
                {
                    **common,
                    "group.id": self.group,
                    "client.id": f"{kafka.client_id}-notifier",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                }
            )
        )
        self._consumer.subscribe([config.topics.alerts], on_assign=self._on_assign)
        self._control = topic_reader(config, f"{self.group}-silences")
        control = config.topics.control
        self._control.assign(
            [
                TopicPartition(control, p, OFFSET_BEGINNING)
                for p in partitions_of(self._control, control)
            ]
        )
        log.info(
            "notifier started: group=%s topic=%s sink=%s restored=%d alerts, %d to send",
            self.group,
            config.topics.alerts,
            self.sink.name,
            len(self.book.alerts),
            len(self.book.outbox),
        )

    def run(self) -> None:
        """Start, then loop until :meth:`stop`; close on the way out."""
        self.start()
        try:
            while not self._stop.is_set():
                self.run_once()
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        for client in (self._consumer, self._control):
            if client is not None:
                client.close()
        self._consumer = self._control = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None

    # ------------------------------------------------------------------ one turn
    def run_once(self, timeout: float | None = None, flush_groups: bool = False) -> int:
        """Read, apply, write state, deliver, commit; return the records read.
        ``flush_groups`` closes every group window now (the demo's summary)."""
        book = self.book
        assert book is not None and self._consumer is not None, "start() first"
        wait = self.config.worker.poll_timeout_seconds if timeout is None else timeout
        messages = self._consumer.consume(num_messages=500, timeout=wait)
        self._read_silences()
        records: list[dict[str, Any]] = []
        for message in messages:
            records += self._apply(message)
        now = self._clock()
        due_records, _ = book.due(now, flush_groups=flush_groups)
        records += due_records
        if records:
            self._transaction(records)
        self._deliver(now)
        self.metrics.outbox.set(len(book.outbox))
        self.metrics.set_alert_counts(book.counts())
        self.metrics.last_loop.set_to_current_time()
        return len(messages)

    def caught_up(self) -> bool:
        """Every assigned alerts partition read to its end and nothing left to send."""
        consumer, book = self._consumer, self.book
        if consumer is None or book is None or book.outbox:
            return False
        assignment = consumer.assignment()
        if not assignment:
            return False
        for tp in consumer.position(assignment):
            _, high = consumer.get_watermark_offsets(tp, timeout=10)
            if tp.offset < high and not (tp.offset < 0 and high == 0):
                return False
        return True

    # ------------------------------------------------------------------ input
    def _apply(self, message: Message) -> list[dict[str, Any]]:
        if message.error() is not None:
            log.warning("alerts topic read error (librdkafka retries): %s", message.error())
            return []
        partition, offset = message.partition(), message.offset()
        self._positions[partition] = offset + 1
        value = message.value() or b""
        if value.startswith(_OWN_PREFIXES):
            self.metrics.records.labels("own").inc()
            return []
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            self.metrics.records.labels("unreadable").inc()
            return []
        self.metrics.records.labels(str(record.get("type"))[:40]).inc()
        kind, stamp = message.timestamp()
        at = stamp / 1000.0 if kind != TIMESTAMP_NOT_AVAILABLE else self._clock()
        changes = self.book.apply(record, at, (partition, offset))
        for change in changes:
            self._inputs.setdefault(change["alert_id"], []).append((partition, offset))
        return changes

    def _read_silences(self) -> None:
        if self._control is None:
            return
        for message in self._control.consume(num_messages=100, timeout=0):
            if message.error() is None:
                self.silences.apply(message.value(), self._signer)

    # ------------------------------------------------------------------ output
    def _deliver(self, now: float) -> None:
        book = self.book
        if not book.outbox or now < self._retry_at:
            self._commit_settled([])
            return
        delivered: list[dict[str, Any]] = []
        for notification in list(book.outbox):
            try:
                receipt = self._send(notification)
            except DeliveryFailed as err:
                self.metrics.failed(self.sink.name)
                if self._failing_since is None:
                    self._failing_since = now
                    log.warning(
                        "%s refused a notification (kept, retried): %s", self.sink.name, err
                    )
                self._retry_at = now + self._backoff
                self._backoff = min(self._backoff * 2, self.config.alerts.retry_max_seconds)
                break
            if self._failing_since is not None:
                log.warning(
                    "%s accepts notifications again after %.0fs",
                    self.sink.name,
                    now - self._failing_since,
                )
                self._failing_since = None
            self._backoff = FIRST_RETRY_SECONDS
            delivered.append(book.delivered(notification, receipt))
            self.metrics.delivered(self.sink.name, notification.kind)
        self._commit_settled(delivered)

    def _send(self, notification: Notification) -> dict[str, Any]:
        book = self.book
        thread = book.thread(notification)
        if notification.key in self._uncertain:
            found = self.sink.find(notification.key, notification.created_at, thread)
            self._uncertain.discard(notification.key)
            if found is not None:
                log.info("notification %s was already posted; not posting again", notification.key)
                return found
        message = render(notification, book.members(notification), self.links)
        return self.sink.post(message, thread)

    def _commit_settled(self, delivered: list[dict[str, Any]]) -> None:
        """Write ``delivered`` records and move the group's offsets past every input whose
        notifications were accepted, in one transaction."""
        waiting = {alert.alert_id for alert in self.book.pending_inputs()}
        for alert_id in [a for a in self._inputs if a not in waiting]:
            del self._inputs[alert_id]
        offsets = dict(self._positions)
        for inputs in self._inputs.values():
            for partition, offset in inputs:
                offsets[partition] = min(offsets.get(partition, offset), offset)
        moved = {p: o for p, o in offsets.items() if self._committed.get(p) != o}
        if not delivered and not moved:
            return
        self._transaction(delivered, moved)
        self._committed.update(moved)

    def _transaction(
        self, records: list[dict[str, Any]], offsets: dict[int, int] | None = None
    ) -> None:
        producer, topic = self._producer, self.config.topics.alerts
        try:
            producer.begin_transaction()
            for record in records:
                key = record.get("alert_id") or record.get("key")
                producer.produce(
                    topic,
                    orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS),
                    f"{record['type']}:{key}".encode(),
                )
            if offsets:
                producer.send_offsets_to_transaction(
                    [TopicPartition(topic, p, o) for p, o in offsets.items()],
                    self._consumer.consumer_group_metadata(),
                )
            producer.commit_transaction(30)
        except KafkaException as err:
            error = err.args[0]
            if error.txn_requires_abort():
                producer.abort_transaction(30)
            # The book is now ahead of the topic: a fresh notifier rebuilds it from there
            # (and re-reads the uncommitted input), unless fenced by another notifier.
            raise NotifierError(
                f"alerts-topic transaction failed: {error}", fatal=error.fatal()
            ) from None
        for record in records:
            if record.get("type") == ALERT:
                self.metrics.transitions.labels(record["state"]).inc()
                if record["change"].startswith("silenced by"):
                    self.metrics.silenced.inc()

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        """The notifier's own records, read from the start of the alerts topic."""
        config = self.config
        reader = topic_reader(config, f"{self.group}-recovery")
        try:
            topic = config.topics.alerts
            metadata = reader.list_topics(topic, timeout=30).topics[topic]
            ends = {}
            for partition in metadata.partitions:
                _, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                ends[partition] = high
            self._alerts_partitions = len(ends)
            reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
            own: list[dict[str, Any]] = []
            deadline = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                for message in reader.consume(num_messages=1000, timeout=0.2):
                    value = message.value() if message.error() is None else None
                    if value and value.startswith(_OWN_PREFIXES):
                        try:
                            own.append(orjson.loads(value))
                        except orjson.JSONDecodeError:
                            log.warning("unreadable notifier record skipped at recovery")
                positions = {tp.partition: tp.offset for tp in reader.position(reader.assignment())}
                if all(positions.get(p, -1) >= high or high == 0 for p, high in ends.items()):
                    break
            else:
                log.warning("alerts topic not read to its end in time; restoring what was read")
        finally:
            reader.close()
        # Records of one alert share a key, hence a partition: their order is kept.
        self.book.restore(own)
        self._uncertain = {n.key for n in self.book.outbox}

    def _partitions(self) -> int:
        """Partitions of the events topic: the "of N" in "3/N partitions"."""
        reader = Consumer(
            {
                "bootstrap.servers": self.config.kafka.bootstrap_servers,
                "group.id": f"{self.group}-metadata-unused",
                **self.config.kafka.common,
            }
        )
        try:
            topic = self.config.topics.events
            found = reader.list_topics(topic, timeout=30).topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return len(found.partitions)
        except KafkaException as err:
            log.warning("events topic metadata unavailable (%s); using topics.partitions", err)
        finally:
            reader.close()
        return self.config.topics.partitions

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        total = self._alerts_partitions
        if len(partitions) < total:
            log.warning(
                "notifier got %d of %d alerts partitions: another member shares group %r, and "
                "alerts are only grouped across the partitions each one reads; run one notifier",
                len(partitions),
                total,
                self.group,
            )


def run_until_stopped(
    make: Callable[[], Notifier], stopped: threading.Event, on_start: Callable[[Notifier], None]
) -> None:
    """Run fresh notifiers from ``make`` until ``stopped`` is set: a failed one is replaced
    after a backoff (it rebuilds from the alerts topic); a fenced one ends the loop."""
    backoff = 1.0
    while not stopped.is_set():
        notifier = make()
        on_start(notifier)
        try:
            notifier.run()
            return
        except NotifierError as err:
            if err.fatal:
                log.error("notifier stopped for good: %s", err)
                return
            log.warning("notifier restarting in %.0fs: %s", backoff, err)
        except KafkaException as err:
            log.warning("notifier restarting in %.0fs: %s", backoff, err)
        stopped.wait(backoff)
        backoff = min(backoff * 2, 60.0)


class EmbeddedNotifier:
    """A notifier on a daemon thread of ``streamheal run``: its failures are logged (and it
    restarts), never the worker's problem.

    Parameters
    ----------
    config
        As for :class:`Notifier`.
    registry
        The worker's metrics registry: one ``/metrics`` for both.
    """

    def __init__(self, config: Config, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.metrics = NotifierMetrics(registry)
        self.notifier: Notifier | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamheal-notifier", daemon=True)

    @classmethod
    def start_if_configured(
        cls, config: Config, registry: CollectorRegistry | None = None
    ) -> EmbeddedNotifier | None:
        """Started when Slack credentials are set and ``alerts.embedded_notifier`` is on."""
        if not (config.alerts.embedded_notifier and slack_configured()):
            return None
        embedded = cls(config, registry)
        embedded._thread.start()
        return embedded

    def stop(self, timeout: float = 30.0) -> None:
        self._stopped.set()
        if self.notifier is not None:
            self.notifier.stop()
        self._thread.join(timeout)

    def _run(self) -> None:
        def started(notifier: Notifier) -> None:
            self.notifier = notifier
            if self._stopped.is_set():
                notifier.stop()

        try:
            run_until_stopped(
                lambda: Notifier(self.config, metrics=self.metrics), self._stopped, started
            )
        except Exception:
            log.exception("embedded notifier stopped; scoring goes on (alerts stay on the topic)")
