"""The control topic: promote / rollback commands that running workers apply between batches.

A command is one JSON record on the single-partition control topic (schema and signing
in :mod:`streamheal.commands`; ``rollback`` carries the version the registry rolled back
to). Workers read the topic from its end at start (the registry's ``champion`` alias
covers what came before), so a command is applied once, by every running worker, to every
partition it owns. Records that are not valid commands come back as refusals, never as
exceptions.
"""

from __future__ import annotations

import getpass
import logging

from confluent_kafka import OFFSET_END, TopicPartition

from streamheal import commands
from streamheal.alerts.silences import silence_record
from streamheal.commands import Command, Refusal
from streamheal.config import Config
from streamheal.kafka.connect import deliver, partitions_of, topic_reader
from streamheal.signing import CONTROL_KEY_ENV, Signer

log = logging.getLogger("streamheal.control")


class ControlListener:
    """Non-blocking reader of new commands (``poll`` between batches)."""

    def __init__(self, config: Config) -> None:
        self._consumer = topic_reader(config, f"{config.kafka.group_id}-control")
        topic = config.topics.control
        partitions = partitions_of(self._consumer, topic)
        if len(partitions) > 1:
            # Commands are read from every partition (none is lost), but their order across
            # partitions is not guaranteed: the control topic should have one partition.
            log.warning(
                "control topic %s has %d partitions; recreate it with 1 so that commands "
                "apply in the order they were sent",
                topic,
                len(partitions),
            )
        self._consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])
        self._signer = Signer.from_env(CONTROL_KEY_ENV)

    def poll(self) -> list[tuple[int, Command | Refusal]]:
        """New records as ``(offset, command or refusal)``; never raises on their content."""
        out: list[tuple[int, Command | Refusal]] = []
        for message in self._consumer.consume(num_messages=100, timeout=0):
            if message.error() is not None or silence_record(message.value()) is not None:
                continue  # silences on the same topic are the notifier's, not commands
            out.append((message.offset(), commands.parse(message.value(), self._signer)))
        return out

    def close(self) -> None:
        self._consumer.close()


def publish(
    config: Config, command: str, version: int, reason: str = "", by: str | None = None
) -> None:
    """Send a command to every running worker (signed when ``STREAMHEAL_CONTROL_KEY`` is
    set); raises RuntimeError if not delivered."""
    record = commands.encode(
        Command(command, version, by or getpass.getuser(), reason),
        Signer.from_env(CONTROL_KEY_ENV),
    )
    deliver(config, config.topics.control, record, None, "control command")
