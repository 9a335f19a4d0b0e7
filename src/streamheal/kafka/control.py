"""The control topic: promote / rollback commands that running workers apply between batches.

A command is one JSON record on the single-partition control topic:
``{"command": "promote", "version": 7, "by": "alice", "reason": "passed the offline gate"}``
(``rollback`` carries the version the registry rolled back to). Workers read the topic
from its end at start (the registry's ``champion`` alias covers what came before), so a
command is applied once, by every running worker, to every partition it owns.
"""

from __future__ import annotations

import getpass
import logging
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from streamheal.config import Config
from streamheal.kafka.connect import with_logging

log = logging.getLogger("streamheal.control")
COMMANDS = ("promote", "rollback")


class ControlListener:
    """Non-blocking reader of new commands (``poll`` between batches)."""

    def __init__(self, config: Config) -> None:
        self._consumer = Consumer(
            with_logging(
                {
                    "bootstrap.servers": config.kafka.bootstrap_servers,
                    "group.id": f"{config.kafka.group_id}-control-unused",  # assign(): never joins
                    "enable.auto.commit": False,
                    **config.kafka.common,
                }
            )
        )
        self._consumer.assign([TopicPartition(config.topics.control, 0, OFFSET_END)])

    def poll(self) -> list[dict[str, Any]]:
        commands = []
        for message in self._consumer.consume(num_messages=100, timeout=0):
            if message.error() is not None:
                continue
            try:
                command = orjson.loads(message.value())
            except orjson.JSONDecodeError:
                log.warning(
                    "ignored a control record that is not JSON at offset %d", message.offset()
                )
                continue
            if command.get("command") in COMMANDS and isinstance(command.get("version"), int):
                commands.append(command)
            else:
                log.warning("ignored an unknown control command: %r", command)
        return commands

    def close(self) -> None:
        self._consumer.close()


def publish(
    config: Config, command: str, version: int, reason: str = "", by: str | None = None
) -> None:
    """Send a command to every running worker; raises RuntimeError if not delivered."""
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
    record = {
        "command": command,
        "version": version,
        "by": by or getpass.getuser(),
        "reason": reason,
    }
    producer.produce(
        config.topics.control,
        orjson.dumps(record),
        on_delivery=lambda err, _: errors.append(str(err)) if err else None,
    )
    if producer.flush(15) or errors:
        raise RuntimeError(f"control command not delivered: {errors or 'timeout'}")
