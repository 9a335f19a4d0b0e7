"""Checkpoints on the compacted state topic: finding a partition's latest one to restore.

Writing is part of each batch's transaction (see :mod:`streamheal.kafka.committer`);
this module reads. The state of input partition ``p`` lives in state-topic partition
``p % partitions`` (explicitly assigned, so restoring one partition reads one state
partition). Reading is ``read_committed``: chunks of an aborted or still-open transaction
are never seen, and "caught up" means the consumer's position reached the high watermark
(the last offset of a transactional partition is a commit marker no consumer receives).

A state partition that cannot be read is not an empty one: broker errors are retried
until the restore's deadline (the first query of a topic created a moment ago answers
NOT_LEADER_FOR_PARTITION; a leader moves during a rolling restart), then
:class:`StateUnreadable` is raised, and the worker stops rather than start the partition
cold, whose next checkpoint would shadow the good one on the compacted topic.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from streamheal.config import Config
from streamheal.errors import StreamhealError
from streamheal.kafka.connect import error_text, topic_reader
from streamheal.state.checkpoint import (
    CHECKPOINT_HEADER,
    CheckpointError,
    Manifest,
    chunk_key,
    manifest_key,
    stream_name,
)

log = logging.getLogger("streamheal.checkpoints")

# Errors no retry mends: asking again until the deadline would only delay the message.
_PERMANENT = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)
RETRY_BACKOFF_SECONDS = 0.1
RETRY_BACKOFF_MAX = 2.0


class StateUnreadable(StreamhealError, RuntimeError):
    """The state partition could not be read within the deadline. A checkpoint may be
    there: this is not "no checkpoint", and never a reason to start cold."""


class CheckpointReader:
    """Reads the newest complete checkpoint of an input partition (assign, no group)."""

    def __init__(self, config: Config) -> None:
        self.topic = config.topics.state
        self.group = config.kafka.group_id
        self._consumer = topic_reader(config, f"{config.kafka.group_id}-state")
        metadata = self._consumer.list_topics(self.topic, timeout=30).topics.get(self.topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise CheckpointError(f"state topic {self.topic!r} is not readable")
        self.partitions = len(metadata.partitions)

    def state_partition(self, partition: int) -> int:
        return partition % self.partitions

    def latest(
        self, topic: str, partition: int, timeout: float
    ) -> tuple[Manifest, dict[int, bytes], dict[str, dict[int, bytes]]] | None:
        """The newest manifest of this group for ``topic:partition``, its chunks and the
        chunks of the state parts it names, or None when there is no checkpoint. Raises
        StateUnreadable when the state partition cannot be read to its end within
        ``timeout`` (broker errors that persist, or a dead worker's transaction still
        open)."""
        tp = TopicPartition(self.topic, self.state_partition(partition))
        deadline = time.monotonic() + timeout
        low, high = self._watermarks(tp, deadline)
        if high <= low:
            return None
        stream = stream_name(self.group, topic)
        wanted_manifest = manifest_key(stream, partition)
        prefix = chunk_key(stream, partition, 0)[:-1]  # b"group/topic:p#"
        part_prefix = manifest_key(stream, partition) + b"$"  # b"group/topic:p$name#i"
        manifest_value: bytes | None = None
        chunks: dict[int, tuple[bytes, bytes]] = {}  # index -> (checkpoint id, value)
        part_chunks: dict[tuple[str, int], tuple[bytes, bytes]] = {}  # (name, index) -> ...
        self._consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)])
        try:
            while True:
                for message in self._consumer.consume(num_messages=500, timeout=0.2):
                    if message.error() is not None:
                        continue
                    key = message.key() or b""
                    if key == wanted_manifest:
                        manifest_value = message.value()
                    elif key.startswith(prefix):
                        index = _index(key[len(prefix) :])
                        if index is None:
                            continue  # not a chunk key a worker writes: someone else's record
                        headers = dict(message.headers() or [])
                        chunks[index] = (headers.get(CHECKPOINT_HEADER, b""), message.value())
                    elif key.startswith(part_prefix):
                        name, _, tail = key[len(part_prefix) :].rpartition(b"#")
                        index = _index(tail)
                        if index is None or not name.isascii():
                            continue  # compaction keeps a stray key: it must not cost the state
                        headers = dict(message.headers() or [])
                        tag = headers.get(CHECKPOINT_HEADER, b"")
                        part_chunks[(name.decode(), index)] = (tag, message.value())
                [position] = self._consumer.position([tp])
                if position.offset >= high:
                    break
                if time.monotonic() > deadline:
                    raise StateUnreadable(
                        f"state partition {tp.topic}:{tp.partition} not readable to its end "
                        f"({position.offset} of {high}) within {timeout:.0f}s: an open "
                        "transaction of a worker that died has not been aborted yet"
                    )
        except KafkaException as err:
            raise StateUnreadable(f"reading {tp.topic}:{tp.partition}: {error_text(err)}") from err
        finally:
            self._consumer.unassign()
        if manifest_value is None:
            return None
        manifest = Manifest.from_bytes(manifest_value)
        own = {
            index: value
            for index, (checkpoint, value) in chunks.items()
            if checkpoint == manifest.checkpoint.encode()
        }
        parts: dict[str, dict[int, bytes]] = {}
        for (name, index), (digest, value) in part_chunks.items():
            spec = manifest.parts.get(name)
            if spec is not None and digest == spec["sha256"].encode():
                parts.setdefault(name, {})[index] = value
        return manifest, own, parts

    def _watermarks(self, tp: TopicPartition, deadline: float) -> tuple[int, int]:
        """The state partition's offsets, asked again after a broker error until
        ``deadline``; StateUnreadable past it, or at once for an error no retry mends."""
        delay = RETRY_BACKOFF_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            try:
                found = self._consumer.get_watermark_offsets(tp, timeout=min(max(remaining, 0), 30))
                if found is not None:  # None: the query timed out
                    return found
                why = "no answer in time"
                permanent = False
            except KafkaException as err:
                error = err.args[0] if err.args else None
                why = error_text(err)
                permanent = isinstance(error, KafkaError) and (
                    error.fatal() or error.code() in _PERMANENT
                )
            if permanent or time.monotonic() + delay >= deadline:
                raise StateUnreadable(
                    f"state partition {tp.topic}:{tp.partition} not readable: {why}"
                )
            log.info(
                "state partition %s:%d: %s; asking again in %.1fs",
                tp.topic,
                tp.partition,
                why,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, RETRY_BACKOFF_MAX)

    def close(self) -> None:
        self._consumer.close()


def _index(digits: bytes) -> int | None:
    """The chunk index a key ends with, or None when it is not one a worker writes."""
    return int(digits) if digits.isdigit() and len(digits) <= 9 else None
