"""Topic creation: every topic streamheal reads or writes, with counts from config."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamheal.config import Config, ConfigError
from streamheal.kafka.connect import admin_settings


def topic_specs(config: Config) -> list[NewTopic]:
    topics = config.topics
    partitions, replicas = topics.partitions, topics.replication_factor
    plain = [topics.events, topics.predictions, topics.alerts, topics.metrics, topics.dlq]
    specs = [NewTopic(name, partitions, replicas) for name in plain]
    # Latest checkpoint per partition: compaction keeps one record per key.
    specs.append(NewTopic(topics.state, partitions, replicas, config={"cleanup.policy": "compact"}))
    # One partition so every worker sees every command in order.
    specs.append(NewTopic(topics.control, 1, replicas))
    return specs


# Refusals that a config change fixes, by the key to change.
_REFUSED_BY_KEY = {
    KafkaError.INVALID_REPLICATION_FACTOR: "topics.replication_factor",
    KafkaError.INVALID_PARTITIONS: "topics.partitions",
}


def ensure_topics(config: Config, timeout: float = 30.0) -> list[str]:
    """Create the missing topics; return the names created (existing ones are left alone).

    A refusal that the config causes (say a replication factor above the broker count)
    is a :class:`ConfigError` naming the key.
    """
    admin = AdminClient(admin_settings(config))
    created = []
    for name, future in admin.create_topics(topic_specs(config), request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as err:
            code = err.args[0].code()
            if code in _REFUSED_BY_KEY:
                raise ConfigError(
                    f"{_REFUSED_BY_KEY[code]}: the cluster refused to create topic {name!r}: "
                    f"{err.args[0].str()}"
                ) from None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    if created:
        _wait_until_listed(admin, created, timeout)
    return created


def _wait_until_listed(admin: AdminClient, names: list[str], timeout: float) -> None:
    """A created topic reaches the brokers' metadata a moment after the controller accepts
    it: wait until every one is listed with its partitions, so a client that checks for it
    right after (``topics.create = false``, a fresh consumer) finds it."""
    deadline = time.monotonic() + timeout
    while True:
        listed = admin.list_topics(timeout=timeout).topics
        if all(n in listed and listed[n].error is None and listed[n].partitions for n in names):
            return
        if time.monotonic() > deadline:
            return  # created all the same; a later check says what is missing
        time.sleep(0.1)
