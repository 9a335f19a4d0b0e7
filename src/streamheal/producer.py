"""A small producer helper for teams streaming events into streamheal.

It validates each event against the schema before sending (a bad event raises
:class:`~streamheal.events.InvalidEvent` at the call site instead of landing in the
dead-letter topic), keys records by ``id`` so a label reaches the partition of its
features, and reports delivery errors from :meth:`EventProducer.flush`.

    with EventProducer("127.0.0.1:19092") as producer:
        producer.send("e-1", features={"mean radius": 14.2, "colour": "red"})
        producer.send("e-1", label=1)          # later, when the truth is known
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streamheal.errors import StreamhealError
from streamheal.events import FeatureValue, Label, encode, loads, validate

DEFAULT_TOPIC = "streamheal.events"


class DeliveryError(StreamhealError, RuntimeError):
    """Some events were not acknowledged by the broker."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} events not delivered; first: {errors[0]}")
        self.errors = errors


class EventProducer:
    """Validate, key by id, send; :meth:`flush` raises :class:`DeliveryError` on failures."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = DEFAULT_TOPIC,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.sent = 0
        self._errors: list[str] = []
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 10,
                **(settings or {}),
            }
        )

    def send(
        self,
        event_id: str,
        features: Mapping[str, FeatureValue | None] | None = None,
        label: Label | None = None,
        ts: float | None = None,
    ) -> None:
        """Send a feature event, a label event (``features=None``) or both at once."""
        event: dict[str, Any] = {"id": event_id, "ts": time.time() if ts is None else ts}
        if features is not None:
            event["features"] = dict(features)
        if label is not None:
            event["label"] = label
        self.send_event(event)

    def send_event(self, event: Mapping[str, Any]) -> None:
        """Send an already-built event dict (validated first)."""
        payload = encode(dict(event))
        validate(loads(payload))  # what the worker will see, after NaN became null
        self.send_raw(event["id"].encode(), payload)

    def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Send bytes as they are, unvalidated (tests use it to produce bad records)."""
        while True:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        self.sent += 1
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            self._errors.append(f"{remaining} events still queued after {timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError(errors)

    def _on_delivery(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:
            self._errors.append(f"{message.key()!r}: {err}")

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
