"""Connecting to Kafka: client settings that log through Python, and a bounded check at start.

Every client streamheal makes takes its settings through :func:`with_logging`, so
librdkafka's own lines (``FAIL ... Connection refused``, every few hundred milliseconds
while a broker is down) go to the ``streamheal.librdkafka`` logger, rate-limited by
:class:`RateLimit`, instead of straight to stderr. Before the worker subscribes,
:func:`wait_for_cluster` asks for the cluster's metadata for at most
``kafka.connect_timeout_seconds`` and raises :class:`BrokerUnavailable` (exit 69) with
one line naming the bootstrap servers; with ``topics.create = false``,
:func:`require_topics` raises :class:`MissingTopics` (a config error, exit 78) for every
configured topic the cluster does not have.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata

from streamheal.config import REDACTED, TOPIC_KEYS, Config, ConfigError, is_secret
from streamheal.errors import NotDelivered, StreamhealError

LIBRDKAFKA_LOG = logging.getLogger("streamheal.librdkafka")


class BrokerUnavailable(StreamhealError, RuntimeError):
    """No broker answered within ``kafka.connect_timeout_seconds``."""


class MissingTopics(ConfigError):
    """``topics.create = false`` and some configured topics do not exist."""


class RateLimit(logging.Filter):
    """Let at most ``burst`` similar records through per ``interval_seconds``.

    Records are similar when they share logger, level and message once digits are
    blanked out (client numbers, durations, broker ids differ between repeats). The first
    record let through after a quiet spell says how many were held back.

    Parameters
    ----------
    burst
        Similar records let through per interval.
    interval_seconds
        Length of the interval.
    max_kinds
        Kinds of record remembered at once; past it, finished intervals are forgotten
        (and, if that is not enough, all of them), so memory stays bounded.
    clock
        Seconds, monotonic (tests pass a fake one).

    Examples
    --------
    >>> limit = RateLimit(burst=2, interval_seconds=60, clock=lambda: 0.0)
    >>> record = logging.LogRecord("x", logging.ERROR, "", 0, "broker %d down", (1,), None)
    >>> [limit.filter(record) for _ in range(4)]
    [True, True, False, False]
    """

    def __init__(
        self,
        burst: int = 3,
        interval_seconds: float = 60.0,
        max_kinds: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval_seconds = interval_seconds
        self.max_kinds = max_kinds
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, int, str], _Interval] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, re.sub(r"\d+", "#", record.getMessage()))
        now = self._clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is None or now - seen.start >= self.interval_seconds:
                if seen is not None and seen.held_back:
                    record.msg = (
                        f"{record.getMessage()} ({seen.held_back} similar lines held back "
                        f"in the last {self.interval_seconds:g}s)"
                    )
                    record.args = ()
                self._remember(kind, _Interval(now), now)
                return True
            if seen.let_through < self.burst:
                seen.let_through += 1
                return True
            seen.held_back += 1
            return False

    def _remember(self, kind: tuple[str, int, str], interval: _Interval, now: float) -> None:
        if kind not in self._kinds and len(self._kinds) >= self.max_kinds:
            for old, seen in list(self._kinds.items()):
                if now - seen.start >= self.interval_seconds:
                    del self._kinds[old]
            if len(self._kinds) >= self.max_kinds:
                self._kinds.clear()
        self._kinds[kind] = interval


@dataclass
class _Interval:
    start: float
    let_through: int = 1
    held_back: int = 0


LIBRDKAFKA_LOG.addFilter(RateLimit())


def with_logging(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` for a Consumer, Producer or AdminClient, logging through Python.

    librdkafka's log lines go to the ``streamheal.librdkafka`` logger and its error
    events (broker down, authentication failed) to the same logger as warnings, both
    rate-limited, instead of raw ``%3|...`` lines on stderr.
    """
    return {"logger": LIBRDKAFKA_LOG, "error_cb": _log_error, **settings}


def topic_reader(config: Config, name: str) -> Consumer:
    """A consumer that is only ever ``assign()``ed: it never joins the group ``name-unused``
    (librdkafka wants one), never commits, and reads only what producers committed (the
    workers write in transactions)."""
    return Consumer(
        with_logging(
            {
                "bootstrap.servers": config.kafka.bootstrap_servers,
                "group.id": f"{name}-unused",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                **config.kafka.common,
            }
        )
    )


def deliver(config: Config, topic: str, value: bytes, key: bytes | None, what: str) -> None:
    """Produce one record (acks=all) and wait for the broker to have it; raises
    NotDelivered naming ``what`` when it does not within 15 s. For the one-off records of
    the command line and of retraining (commands, silences, alerts), not the worker's hot
    path, which writes in transactions."""
    producer = Producer(
        with_logging(
            {
                "bootstrap.servers": config.kafka.bootstrap_servers,
                "acks": "all",
                **config.kafka.common,
            }
        )
    )
    errors: list[str] = []
    producer.produce(
        topic,
        value,
        key,
        on_delivery=lambda err, _: errors.append(str(err)) if err else None,
    )
    if producer.flush(15) or errors:
        raise NotDelivered(f"{what} not delivered to {topic}: {errors or 'timeout'}")


def partitions_of(client: Any, topic: str, timeout: float = 30.0) -> list[int]:
    """The topic's partition numbers, ``[0]`` when the metadata does not list it."""
    found = client.list_topics(topic, timeout=timeout).topics.get(topic)
    return sorted(found.partitions) if found is not None and found.partitions else [0]


def committed_offsets(
    consumer: Consumer, partitions: list[TopicPartition], timeout: float = 30.0
) -> list[TopicPartition]:
    """The group's committed offsets for ``partitions``, asked again while the answer is a
    retriable error (``NOT_COORDINATOR`` and ``COORDINATOR_LOAD_IN_PROGRESS`` are normal
    for a moment after a group coordinator moves or the broker starts) until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(deadline - time.monotonic(), 1.0)
        try:
            return consumer.committed(partitions, timeout=remaining)
        except KafkaException as err:
            error = err.args[0] if err.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable()
                or error.code()
                in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
            )
            if not retriable or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def admin_settings(config: Config) -> dict[str, Any]:
    """Settings for an AdminClient: the bootstrap servers and ``kafka.common``."""
    return with_logging(
        {"bootstrap.servers": config.kafka.bootstrap_servers, **config.kafka.common}
    )


def wait_for_cluster(
    config: Config, stopping: Callable[[], bool] | None = None
) -> ClusterMetadata | None:
    """The cluster's metadata, or :class:`BrokerUnavailable` after the connect timeout.

    Asked for in probes of 1 s, doubling up to 8 s (a broker slower than one probe still
    answers a later one); between probes ``stopping``, if given, is asked, and when it
    answers true the wait ends with None (a stop asked for before the worker started).
    """
    timeout = config.kafka.connect_timeout_seconds
    errors: deque[KafkaError] = deque(maxlen=16)  # one per retry, for as long as we wait
    # The reason goes into the one line we raise, so the probe's own repeats stay quiet
    # (log_level 2: critical only); a `log_level` or `debug` in kafka.common still wins.
    admin = AdminClient({"log_level": 2, **admin_settings(config), "error_cb": errors.append})
    deadline = time.monotonic() + timeout
    probe = 1.0
    while True:
        try:
            return admin.list_topics(timeout=max(min(deadline - time.monotonic(), probe), 0.01))
        except KafkaException as err:
            if stopping is not None and stopping():
                return None
            if time.monotonic() < deadline:
                probe = min(2 * probe, 8.0)
                continue
            admin.poll(0)  # serves error_cb: the broker-level reason, e.g. "Connection refused"
            reason = _reason(errors) or err.args[0].str()
            raise BrokerUnavailable(
                f"cannot reach Kafka at {config.kafka.bootstrap_servers} within {timeout:g}s "
                f"({reason})"
            ) from None


def require_topics(
    config: Config, metadata: ClusterMetadata, keys: Iterable[str] = TOPIC_KEYS
) -> None:
    """:class:`MissingTopics` naming each topic of ``keys`` the cluster does not have."""
    names = config.topics.names()
    missing = {key: names[key] for key in keys if names[key] not in metadata.topics}
    if missing:
        listed = ", ".join(f"topics.{key} = {name!r}" for key, name in missing.items())
        them = "it" if len(missing) == 1 else "them"
        raise MissingTopics(
            f"{listed}: not on the cluster at {config.kafka.bootstrap_servers} and "
            f"topics.create = false; create {them}, or set topics.create = true"
        )


def error_text(err: KafkaException) -> str:
    """librdkafka's own words for ``err`` (``str(err)`` wraps them in the code and flags)."""
    error = err.args[0] if err.args else None
    return error.str() if isinstance(error, KafkaError) else str(err)


def refused_settings(config: Config, err: KafkaException) -> ConfigError:
    """A client's constructor refused a property of ``kafka.common``, ``.consumer`` or
    ``.producer``: the config error to report, secret values masked."""
    message = error_text(err)
    kafka = config.kafka
    for key, value in {**kafka.common, **kafka.consumer, **kafka.producer}.items():
        if is_secret(key) and str(value):
            message = message.replace(str(value), REDACTED)
    return ConfigError(f"kafka: librdkafka refused the client settings: {message}")


def _reason(errors: Iterable[KafkaError]) -> str:
    # "1/1 brokers are down" says less than the transport error before it.
    telling = [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN] or list(errors)
    if not telling:
        return ""
    text = telling[-1].str()
    # librdkafka prefixes the broker ("127.0.0.1:1/bootstrap: ") and suffixes its state.
    text = re.sub(r"^\S+/(bootstrap|\d+): ", "", text)
    return re.sub(r" \(after \d+ms in state \w+\)$", "", text)


def _log_error(err: KafkaError) -> None:
    level = logging.ERROR if err.fatal() else logging.WARNING
    LIBRDKAFKA_LOG.log(level, "kafka client: %s", err.str())
