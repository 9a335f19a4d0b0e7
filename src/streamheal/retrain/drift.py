"""The drift trigger: N confirmed drift alerts of chosen kinds within a time window.

The workers write one ``drift`` record per partition and detector on the alerts topic
when a drift is confirmed (``status = "firing"``). :class:`DriftCount` decides from those
records alone (pure, no clock of its own); :class:`AlertWatcher` feeds it from the topic.

What counts as one alert: a firing record of a kind in ``retrain.drift_kinds``. The same
drift key (kind, signal, feature, detector) firing in another partition within
``alerts.group_window_seconds`` of its first firing is the same alert (the notifier
groups it the same way); the same key firing again later is a repeat and counts again.

Alerts at or before the start of the last retrain were served by it, so a run "uses up"
what triggered it, and only the newest ``needed`` alerts are kept: memory is bounded by
``retrain.drift_alerts`` and by the keys seen in one group window.

>>> count = DriftCount(needed=3, window_seconds=3600, group_seconds=30)
>>> fire = {"type": "drift", "status": "firing", "kind": "concept", "key": "concept:error:-:adwin"}
>>> count.take(fire, at=100.0), count.take({**fire, "partition": 1}, at=101.0)  # one alert
(True, False)
>>> count.take({**fire, "key": "prior:label:-:chi2", "kind": "prior"}, at=200.0)
True
>>> count.due(now=300.0, served_until=None)
False
>>> count.take(fire, at=400.0), count.due(now=500.0, served_until=None)
(True, True)
>>> count.due(now=500.0, served_until=450.0)   # a run started after them: served
False
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, TopicPartition

from streamheal.config import Config
from streamheal.kafka.connect import partitions_of, topic_reader

log = logging.getLogger("streamheal.retrain")


class DriftCount:
    """Counts confirmed drift alerts; :meth:`due` says whether enough are recent."""

    def __init__(
        self,
        needed: int,
        window_seconds: float,
        group_seconds: float,
        kinds: Iterable[str] = ("concept", "prior", "covariate"),
    ) -> None:
        self.needed = needed
        self.window_seconds = window_seconds
        self.group_seconds = group_seconds
        self.kinds = frozenset(kinds)
        self._times: deque[float] = deque(maxlen=max(needed, 1))
        self._first_fired: dict[str, float] = {}  # key -> start of its current group

    def take(self, record: dict[str, Any], at: float) -> bool:
        """Take one alerts-topic record written at ``at``; True when it counted."""
        if record.get("type") != "drift" or record.get("status") != "firing":
            return False
        if record.get("kind") not in self.kinds:
            return False
        key = str(record.get("key"))
        for old in [k for k, t in self._first_fired.items() if at - t > self.group_seconds]:
            del self._first_fired[old]
        if key in self._first_fired:
            return False  # the same drift, seen by another partition or detector run
        self._first_fired[key] = at
        self._times.append(at)
        return True

    def recent(self, now: float, served_until: float | None) -> int:
        """Counted alerts inside the window and after ``served_until`` (at most ``needed``)."""
        since = now - self.window_seconds
        if served_until is not None:
            since = max(since, served_until)
        return sum(1 for t in self._times if t > since)

    def due(self, now: float, served_until: float | None) -> bool:
        return self.needed > 0 and self.recent(now, served_until) >= self.needed


class AlertWatcher:
    """Reads the alerts topic from ``drift_window_seconds`` ago into a :class:`DriftCount`
    (assign only: it never joins a group nor commits; only committed records)."""

    def __init__(self, config: Config, count: DriftCount, now: float | None = None) -> None:
        self.count = count
        self.topic = config.topics.alerts
        self._consumer = topic_reader(config, f"{config.kafka.group_id}-retrain-alerts")
        partitions = partitions_of(self._consumer, self.topic)
        start = int(((time.time() if now is None else now) - count.window_seconds) * 1000)
        found = self._consumer.offsets_for_times(
            [TopicPartition(self.topic, p, start) for p in partitions], timeout=30
        )
        # No record that recent: start at the end (offsets_for_times answers -1).
        self._consumer.assign(
            [
                TopicPartition(
                    self.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END
                )
                for tp in found
            ]
        )

    def poll(self, max_records: int = 10_000) -> int:
        """Take what arrived since the last call, without waiting; returns alerts counted."""
        counted = 0
        taken = 0
        while taken < max_records:
            messages = self._consumer.consume(num_messages=1000, timeout=0.1)
            if not messages:
                break
            for message in messages:
                taken += 1
                value = message.value()
                if message.error() is not None or not value or not value.startswith(b"{"):
                    continue
                try:
                    record = orjson.loads(value)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and self.count.take(
                    record, message.timestamp()[1] / 1000.0
                ):
                    counted += 1
                    log.info("drift alert counted for retraining: %s", record.get("key"))
        return counted

    def close(self) -> None:
        self._consumer.close()
