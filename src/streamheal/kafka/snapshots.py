"""Registry writes off the hot loop: a bounded queue and one writer thread.

A snapshot is a disk write; the stream must never wait on it (invariant 4). If the queue
is full the snapshot is dropped, counted and logged; the alert record says so.
"""

from __future__ import annotations

import logging
import queue
import threading

from streamheal.config import Config, config_hash
from streamheal.policy import Action
from streamheal.registry import Registry

log = logging.getLogger("streamheal.snapshots")


class SnapshotWriter:
    def __init__(self, registry: Registry, capacity: int = 16) -> None:
        self.registry = registry
        self.written: list[int] = []
        self.dropped = 0
        self._queue: queue.Queue[tuple[Action, str] | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()

    def submit(self, action: Action, config: Config) -> bool:
        try:
            self._queue.put_nowait((action, _config_hash(config)))
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("snapshot dropped: the registry writer is %d behind", self._queue.qsize())
            return False

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            action, config_hash = item
            try:
                version = self.registry.register(
                    action.model or b"",
                    cause=action.cause,
                    metrics=action.detail,
                    offsets={"partition": action.partition, "index": action.index},
                    config_hash=config_hash,
                    tags={
                        "partition": str(action.partition),
                        "drift": action.cause,
                        "serving_version": str(action.model_version),
                    },
                )
                self.written.append(version)
                log.info(
                    "snapshot of partition %s stored as registry version %d",
                    action.partition,
                    version,
                )
            except Exception:
                log.exception("snapshot could not be written to the registry")


def _config_hash(config: Config) -> str:
    return config_hash(config)  # secrets left out: see streamheal.config.config_hash
