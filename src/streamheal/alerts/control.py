"""Silences on the control topic: written by ``streamheal silence`` and the "Silence 1h"
button, read back by the notifier and by ``streamheal silence list``.

Records are signed with ``STREAMHEAL_CONTROL_KEY`` when it is set, as control commands are
(see :mod:`streamheal.commands`); the notifier refuses unsigned ones then.
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streamheal.alerts import silences as silence_records
from streamheal.alerts.silences import Silence, Silences
from streamheal.config import Config
from streamheal.kafka.connect import deliver, partitions_of, topic_reader
from streamheal.signing import CONTROL_KEY_ENV, Signer


def publish_silence(config: Config, silence: Silence) -> None:
    """Put ``silence`` on the control topic; RuntimeError if the broker did not take it."""
    _publish(config, silence_records.encode(silence, Signer.from_env(CONTROL_KEY_ENV)))


def publish_expiry(config: Config, silence_id: str, by: str) -> None:
    """End silence ``silence_id`` now."""
    signer = Signer.from_env(CONTROL_KEY_ENV)
    _publish(config, silence_records.encode_expiry(silence_id, by, signer))


def read_silences(config: Config, timeout: float = 30.0) -> Silences:
    """Every silence: ``alerts.silences`` and the control topic read to its end."""
    book = Silences.from_config(config.alerts.silences)
    signer = Signer.from_env(CONTROL_KEY_ENV)
    reader = topic_reader(config, f"{config.kafka.group_id}-silence-list")
    try:
        topic = config.topics.control
        partitions = partitions_of(reader, topic, timeout)
        ends = {
            p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
            for p in partitions
        }
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = reader.position([TopicPartition(topic, p) for p in partitions])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                break
            for message in reader.consume(num_messages=500, timeout=0.2):
                if message.error() is None:
                    book.apply(message.value(), signer)
    finally:
        reader.close()
    return book


def _publish(config: Config, value: bytes) -> None:
    deliver(config, config.topics.control, value, b"silence", "silence")
