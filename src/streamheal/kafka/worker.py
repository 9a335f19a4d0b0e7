"""The worker: a consumer-group member that drives one Engine per assigned partition.

Per batch: ``consume`` up to ``engine.batch_size`` records, decode them, let each
partition's Engine process its records, produce predictions, alerts, dead letters and
(every ``worker.checkpoint_every_batches`` batches) each touched partition's checkpoint,
and commit all of it with the consumed offsets (:mod:`streamheal.kafka.committer`: one
transaction under ``exactly-once``, the default). A full batch's commit runs on a thread
while the next batch is fetched and decoded (:meth:`Worker._launch`).

Recovery (:meth:`Worker._on_assign`): a partition's Engine is restored from its latest
checkpoint on the state topic before anything is consumed, then consumption resumes at the
checkpoint's offset. Records between the checkpoint and the committed offset (when
checkpoints are taken less often than commits) are processed in *catch-up* mode: learned
from, outputs dropped (they were committed before). Revoke checkpoints and commits what a
partition learned before letting it go; a lost partition is dropped without committing.
Rebalance callbacks run inside ``consume``, i.e. between batches; each first settles the
commit in flight, so none runs inside a transaction.
"""

from __future__ import annotations

import logging
import pickle
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamheal import models
from streamheal.alerts.notifier import EmbeddedNotifier
from streamheal.commands import Refusal
from streamheal.config import Config
from streamheal.detectors.suite import Drift
from streamheal.engine import Engine, Prediction
from streamheal.errors import StreamhealError
from streamheal.events import Event, Rejection, Source, decode
from streamheal.guards import Notice
from streamheal.heap import frozen_heap
from streamheal.kafka import records
from streamheal.kafka.admin import ensure_topics
from streamheal.kafka.checkpoints import CheckpointReader, StateUnreadable
from streamheal.kafka.committer import CommitFailed, Committer, TransactionAborted
from streamheal.kafka.connect import (
    committed_offsets,
    require_topics,
    wait_for_cluster,
    with_logging,
)
from streamheal.kafka.control import ControlListener
from streamheal.kafka.snapshots import SnapshotWriter
from streamheal.metrics import WorkerMetrics
from streamheal.policy import Action
from streamheal.registry import CHAMPION, open_registry
from streamheal.registry.authority import RegistryVersions
from streamheal.serving import Lineage
from streamheal.signing import STATE_KEY_ENV, Signer
from streamheal.state import checkpoint
from streamheal.state.checkpoint import CheckpointError

log = logging.getLogger("streamheal.worker")

# Heartbeats: 0.5 s (librdkafka's default is 3 s), well under any allowed session timeout
# (>= 6 s); kafka.consumer."heartbeat.interval.ms" overrides it.
HEARTBEAT_INTERVAL_MS = 500
# After an aborted transaction the batch is retried after 0.1 s, doubling per abort in a
# row up to 5 s.
ABORT_BACKOFF_SECONDS = 0.1
ABORT_BACKOFF_MAX = 5.0
# Reading what a previous owner left (its committed offsets, its checkpoint) waits out
# its still-open transaction: Kafka aborts it after worker.transaction_timeout_seconds.
# This much longer, broker errors are retried; then the worker stops (exit 74).
HANDOVER_GRACE_SECONDS = 30.0
# Exit codes of `streamheal run` that say why the worker stopped (README "Command line").
EXIT_KAFKA_FAILURE = 74  # EX_IOERR: outputs not acknowledged, a fatal producer/consumer error
EXIT_FENCED = 75  # EX_TEMPFAIL: a newer process with the same worker.id took over


class WorkerError(StreamhealError, RuntimeError):
    """The worker cannot go on without risking loss; nothing uncommitted is kept."""

    def __init__(self, message: str, exit_code: int = EXIT_KAFKA_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class WorkerStats:
    """Counts of what was committed (a batch counts once its transaction committed)."""

    consumed: int = 0
    predictions: int = 0
    dead_lettered: int = 0
    drifts: int = 0
    actions: int = 0
    batches: int = 0
    aborted: int = 0
    restored: int = 0  # partitions restored from a checkpoint
    cold_starts: int = 0  # partitions that started without a usable checkpoint


@dataclass
class _Batch:
    """What one batch produced, counted into the stats only once it is committed."""

    stats: WorkerStats
    snapshots: list[Action]


@dataclass
class _InFlight:
    """A batch's commit running in the background (see :meth:`Worker._launch`)."""

    partitions: list[int]
    batch: _Batch
    offsets: list[TopicPartition]
    commit: Future[None]


class Worker:
    """Run with :meth:`run`; stop from any thread (or a signal handler) with :meth:`stop`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.worker_id = config.worker.id or f"{socket.gethostname()}-0"
        self.engines: dict[int, Engine] = {}
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._next: dict[int, int] = {}  # partition -> next input offset to process
        self._catch_up: dict[int, int] = {}  # partition -> outputs below here are committed
        self._unsaved: dict[int, int] = {}  # partition -> batches since its last checkpoint
        # partition -> part name -> (the object, the Part a committed checkpoint wrote)
        self._parts: dict[int, dict[str, tuple[Any, checkpoint.Part]]] = {}
        self._outbox: list[tuple[str, bytes, bytes]] = []  # records for the next transaction
        # A partition's restore notices (cold start, checkpoint partly used): committed with
        # that partition's own offsets, so a worker killed before its first commit does
        # not leave a notice of a start that its restart makes again.
        self._held: dict[int, list[tuple[str, bytes, bytes]]] = {}
        # partition -> the registry champion its state accounts for (see _reconcile)
        self._champion_seen: dict[int, int | None] = {}
        # partition -> restored from a checkpoint: the champion may have moved meanwhile
        self._reconcile: set[int] = set()
        self._fatal: WorkerError | None = None
        self._abort_streak = 0  # transactions aborted in a row (for the retry backoff)
        self._in_flight: _InFlight | None = None  # the last batch's commit, not yet settled
        self._commits = ThreadPoolExecutor(1, thread_name_prefix="streamheal-commit")
        self._restoring = False
        self._started = False
        self._closing = False  # consumer.close() under way: nothing more will be consumed
        self.heartbeat = time.monotonic()
        self.registry = open_registry(config.registry)
        # Every partition's model versions come from the registry: one number, one model.
        self.versions = RegistryVersions(self.registry)
        self._snapshots = SnapshotWriter(self.registry)
        self._state_signer = Signer.from_env(STATE_KEY_ENV)
        kafka = config.kafka
        self._consumer = Consumer(
            with_logging(
                {
                    "bootstrap.servers": kafka.bootstrap_servers,
                    "group.id": kafka.group_id,
                    "client.id": kafka.client_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "cooperative-sticky",
                    # Static membership (KIP-345): a restarted worker takes its partitions
                    # back at once instead of waiting out its dead self's session.
                    "group.instance.id": self.worker_id,
                    "session.timeout.ms": int(config.worker.session_timeout_seconds * 1000),
                    # A member learns of a rebalance from a heartbeat's answer, and a
                    # cooperative hand-over takes two rounds: at librdkafka's default of 3 s
                    # a joining worker sat idle for ~4 s while its partitions went unowned
                    # (measured; 0.5 s makes it ~1 s, for one small request a second).
                    "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                    # Offsets are committed in the producer's transactions; only what they
                    # made visible may be read back (e.g. replaying our own outputs).
                    "isolation.level": "read_committed",
                    **kafka.common,
                    **kafka.consumer,
                }
            )
        )
        self._committer = Committer(
            config,
            with_logging(
                {
                    "bootstrap.servers": kafka.bootstrap_servers,
                    "client.id": f"{kafka.client_id}-{self.worker_id}",
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    # Compressed in librdkafka's own thread: checkpoints shrink several
                    # times over at no cost to the Python loop.
                    "compression.type": "lz4",
                    # Only a failed delivery calls back into Python (the callback records
                    # failures, nothing else): no GIL round trip per output record.
                    "delivery.report.only.error": True,
                    **kafka.common,
                    **kafka.producer,
                }
            ),
            self.worker_id,
        )
        self._reader: CheckpointReader | None = None
        self.metrics = WorkerMetrics(config)

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Finish the current batch, commit it, leave the group."""
        self._stop.set()

    @property
    def ready(self) -> bool:
        """Subscribed, every assigned partition restored, not stopping (``/readyz``)."""
        return self._started and not self._restoring and not self._stop.is_set()

    def run(self) -> WorkerStats:
        config = self.config
        # Fail fast: BrokerUnavailable after kafka.connect_timeout_seconds (exit 69), or
        # MissingTopics with topics.create = false (exit 78), never an idle worker.
        try:
            metadata = wait_for_cluster(config, self._stop.is_set)
            if metadata is None:  # stopped while the cluster could not be reached
                log.info("streamheal worker stopped before it could reach Kafka")
                self._snapshots.close()
                return self.stats
            if config.topics.create:
                ensure_topics(config)
            else:
                require_topics(config, metadata)
        except BaseException:
            # The Kafka clients are left to the garbage collector: close() would replay
            # their queued connection errors into the log under the one-line reason.
            self._snapshots.close()
            raise
        try:
            self._committer.start()  # fences a previous incarnation, aborts its transaction
        except CommitFailed as err:
            self._snapshots.close()
            raise WorkerError(str(err), EXIT_FENCED if err.fenced else EXIT_KAFKA_FAILURE) from err
        self._reader = CheckpointReader(config)
        self._control = ControlListener(config)
        log.info(
            "streamheal worker %s starting: brokers=%s group=%s topic=%s model=%s mode=%s "
            "batch=%d guarantee=%s",
            self.worker_id,
            config.kafka.bootstrap_servers,
            config.kafka.group_id,
            config.topics.events,
            config.model.name,
            config.engine.mode,
            config.engine.batch_size,
            config.worker.guarantee,
        )
        self._consumer.subscribe(
            [config.topics.events],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._started = True
        self.metrics.serve(lambda: self.ready)  # a side channel: a taken port is only logged
        notifier = EmbeddedNotifier.start_if_configured(config, self.metrics.registry)
        clean = False
        try:
            with frozen_heap():  # what lives for the whole run stays out of the collector's scans
                self._loop(_Progress(config.worker.progress_interval_seconds))
            self._settle()  # a failed last commit is a failed run, as for any other batch
            clean = True
        finally:
            self._started = False
            self._abandon_in_flight()  # in flight only when an error stopped the loop
            self.metrics.close()
            if notifier is not None:
                notifier.stop()
            self._control.close()
            self._snapshots.close()
            if clean:
                # Static members keep their partitions for session_timeout after leaving
                # (a restart takes them straight back), so save what is unsaved now.
                try:
                    self._save(list(self.engines))
                except WorkerError as err:
                    log.error("final checkpoint failed (the next owner catches up): %s", err)
                self._closing = True
                self._consumer.close()
            self._committer.close()
            self._reader.close()
            log.info(
                "streamheal worker stopped: consumed=%d predictions=%d dead_lettered=%d",
                self.stats.consumed,
                self.stats.predictions,
                self.stats.dead_lettered,
            )
        self._raise_fatal()
        return self.stats

    # ------------------------------------------------------------------ the loop
    def _loop(self, progress: _Progress) -> None:
        config = self.config
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            # With a commit in flight, take only what is fetched already: when nothing
            # is, the commit is settled at once rather than after a poll's wait.
            busy = self._in_flight is not None
            messages = self._consumer.consume(
                num_messages=config.engine.batch_size,
                timeout=0 if busy else config.worker.poll_timeout_seconds,
            )
            self._raise_fatal()
            if messages:
                started = time.monotonic()
                self._process_batch(messages)
                self.metrics.observe_batch(time.monotonic() - started, len(messages))
            else:  # nothing fetched: nothing to overlap the commit in flight with
                self._settle()
            self._observe()
            self._apply_commands()
            if progress.due():
                progress.report(self.stats.consumed, self._lag())

    def _process_batch(self, messages: list[Message]) -> None:
        by_partition = self._decode(messages)
        # Decoded while the previous batch's commit ran; the Engines wait for its outcome
        # (an abort rewinds its partitions, and what was fetched for them is read again).
        for partition in self._settle():
            by_partition.pop(partition, None)
        if not by_partition:
            return
        batch = _Batch(WorkerStats(batches=1), [])

        def produce() -> None:
            for partition, items in by_partition.items():
                self._run_engine(partition, items, batch)
            every = self.config.worker.checkpoint_every_batches
            for partition in by_partition:
                if self._unsaved.get(partition, 0) >= every:
                    self._checkpoint(partition)

        # Committed in the background only when more records are likely waiting (a full
        # batch): a worker that has caught up commits at once, its outputs' latency first.
        full = len(messages) >= self.config.engine.batch_size
        self._transact(list(by_partition), batch, produce, background=full)

    def _transact(
        self,
        partitions: list[int],
        batch: _Batch,
        produce: Callable[[], None],
        background: bool = False,
    ) -> None:
        """One transaction: what waits in the outbox, what ``produce()`` produces, and the
        offsets of ``partitions``. Aborted: the partitions go back to their checkpoints
        (the Engines must not run ahead of what was committed). ``background``: the commit
        runs while the loop fetches and decodes the next batch (:meth:`_launch`)."""
        self._settle()
        try:
            self._committer.begin()
            self._flush_outbox(partitions)
            produce()
            if background:
                self._launch(partitions, batch)
                return
            self._committer.commit(self._consumer, self._offsets(partitions))
        except (TransactionAborted, CommitFailed) as err:
            self._conclude(partitions, batch, err)
            return
        self._conclude(partitions, batch, None)

    def _launch(self, partitions: list[int], batch: _Batch) -> None:
        """Commit the open transaction on a thread of its own.

        The commit is two round trips to the broker (offsets into the transaction, then
        its end), about a tenth of a batch's time spent waiting; meanwhile the loop
        fetches and decodes the next batch, which changes no state. Everything that
        touches an Engine, the producer or the assignment settles the commit first
        (:meth:`_settle`): the next batch's Engines, a revoke, an assign, a control
        command, the final checkpoint."""
        offsets = self._offsets(partitions)  # taken now: the loop moves _next on
        # Everything of the consumer is taken here, on the loop's thread: a consumer call
        # from the commit's thread would wait for the loop (see Committer.finish).
        group = self._committer.group_metadata(self._consumer)
        commit = self._commits.submit(self._committer.finish, offsets, group)
        self._in_flight = _InFlight(partitions, batch, offsets, commit)

    def _settle(self) -> list[int]:
        """Wait for the commit in flight, if any, and act on its outcome: the partitions
        it rewound (aborted), or none. Raises WorkerError when the worker must stop."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return []
        error = flight.commit.exception()
        if error is None:
            self._committer.commit_offsets(self._consumer, flight.offsets)  # at-least-once
        return self._conclude(flight.partitions, flight.batch, error)

    def _abandon_in_flight(self) -> None:
        """The loop stopped on an error: wait for the commit in flight (the producer must
        not close under it); its outcome no longer matters, the worker is stopping."""
        flight, self._in_flight = self._in_flight, None
        self._commits.shutdown()  # waits for it
        error = None if flight is None else flight.commit.exception()
        if error is not None:
            log.error("the last batch's commit failed as the worker stopped: %s", error)

    def _conclude(
        self, partitions: list[int], batch: _Batch, error: BaseException | None
    ) -> list[int]:
        """After a transaction: count it when committed; rewind ``partitions`` when it was
        aborted (and return them); raise WorkerError when the worker cannot go on."""
        if isinstance(error, TransactionAborted):
            self._abort_streak += 1
            # Bounded backoff: an abort that repeats (a broker refusing every batch) must
            # not spin the loop; a stop still ends the wait at once.
            delay = min(ABORT_BACKOFF_SECONDS * 2 ** (self._abort_streak - 1), ABORT_BACKOFF_MAX)
            log.warning(
                "transaction aborted (%s): rewinding partitions %s, retrying in %.1fs",
                error,
                partitions,
                delay,
            )
            self.stats.aborted += 1
            self._parts.clear()  # what the aborted transaction wrote is not there to refer to
            partitions = [p for p in partitions if p in self.engines]  # not those lost since
            self._rewind(partitions)
            self._stop.wait(delay)
            return partitions
        if isinstance(error, CommitFailed):
            code = EXIT_FENCED if error.fenced else EXIT_KAFKA_FAILURE
            raise WorkerError(str(error), code) from error
        if error is not None:
            raise error
        if batch.stats.batches:  # a consumed batch went through: the retries are over
            self._abort_streak = 0
        self._committed(batch)
        return []

    def _decode(self, messages: list[Message]) -> dict[int, list[Event | Rejection]]:
        limits = self.config.events
        by_partition: dict[int, list[Event | Rejection]] = defaultdict(list)
        for message in messages:
            error = message.error()
            if error is not None:
                # A consumer's fatal error arrives as code _FATAL, whose fatal() is false:
                # after it the consumer delivers nothing, and the worker would sit idle.
                if error.fatal() or error.code() == KafkaError._FATAL:
                    # Today librdkafka's only fatal consumer error is a newer static member
                    # with this group.instance.id (worker.id) taking over; its text says
                    # so, and another fatal error is not called fenced.
                    fenced = "fenced" in error.str().lower()
                    raise WorkerError(
                        f"fatal consumer error: {error.str()}"
                        + (" (a second process with the same worker.id?)" if fenced else ""),
                        EXIT_FENCED if fenced else EXIT_KAFKA_FAILURE,
                    )
                log.warning("consumer error (skipped, librdkafka retries): %s", error)
                continue
            partition, offset = message.partition(), message.offset()
            if partition not in self.engines:
                continue  # fetched before a revoke or loss: no longer ours
            expected = self._next.get(partition)
            if expected is not None and offset < expected:
                continue  # fetched before a rewind: processed already
            source = Source(message.topic(), partition, offset)
            by_partition[partition].append(
                decode(message.value(), source, key=message.key(), limits=limits)
            )
        return by_partition

    def _run_engine(self, partition: int, items: list[Event | Rejection], batch: _Batch) -> None:
        engine = self.engines[partition]
        boundary = self._catch_up.get(partition)
        if boundary is not None:
            # Committed before the restart: learn from these again, publish nothing.
            quiet = [r for r in items if r.source.offset < boundary]
            items = items[len(quiet) :]
            if quiet:
                engine.process(quiet)
                batch.stats.consumed += len(quiet)
            if items or quiet[-1].source.offset + 1 >= boundary:
                del self._catch_up[partition]
                log.info("partition %d caught up with its committed offset %d", partition, boundary)
        installed: list[Action] = []
        if items:
            installed = self._reconciled(partition) if partition in self._reconcile else []
            self._publish(installed + engine.process(items), batch)
            batch.stats.consumed += len(items)
        last = (items or quiet)[-1].source.offset
        self._next[partition] = last + 1
        self._unsaved[partition] = self._unsaved.get(partition, 0) + 1
        if installed:
            # Checkpointed in this transaction, whatever the cadence: restored from an
            # older checkpoint after a crash, the partition would install it again and
            # re-learn the events since on the model it replaced.
            every = self.config.worker.checkpoint_every_batches
            self._unsaved[partition] = max(self._unsaved[partition], every)

    def _offsets(self, partitions: Any) -> list[TopicPartition]:
        """Offsets to commit: the next to process, but never back below a catch-up boundary
        (outputs up to it are committed already; a crash now must not publish them again)."""
        topic = self.config.topics.events
        return [
            TopicPartition(topic, p, max(self._next[p], self._catch_up.get(p, 0)))
            for p in partitions
            if p in self._next
        ]

    def _committed(self, batch: _Batch) -> None:
        stats, done = self.stats, batch.stats
        stats.consumed += done.consumed
        stats.predictions += done.predictions
        stats.dead_lettered += done.dead_lettered
        stats.drifts += done.drifts
        stats.actions += done.actions
        stats.batches += done.batches
        # Registry writes are side effects: only for batches that really happened.
        for action in batch.snapshots:
            self._snapshots.submit(action, self.config)

    def _publish(self, outputs: list, batch: _Batch) -> None:
        topics = self.config.topics
        produce = self._committer.produce
        counts = batch.stats
        for output in outputs:
            kind = type(output)
            if kind is Prediction:
                produce(topics.predictions, records.prediction(output), output.id.encode())
                counts.predictions += 1
            elif kind is Rejection:
                key, value, headers = records.dead_letter(output)
                produce(topics.dlq, value, key, headers=headers)
                counts.dead_lettered += 1
            elif kind is Action:
                self._publish_action(output, batch)
            elif kind is Notice:
                produce(
                    topics.alerts,
                    records.encode(records.notice_record(output)),
                    f"notice:{output.notice}".encode(),
                )
                log.warning("partition %s: %s", output.partition, output.message)
            elif kind is Drift:
                produce(topics.alerts, records.drift(output), output.key.encode())
                counts.drifts += 1
                self.metrics.observe_drift(output)
                log.warning(
                    "drift %s: %s (statistic %s, p %s) partition %s at event %d",
                    output.status,
                    output.key,
                    output.statistic,
                    output.p_value,
                    output.partition,
                    output.confirmed_index,
                )

    def _publish_action(self, action: Action, batch: _Batch) -> None:
        record = records.action_record(action)
        if action.model is not None:  # a snapshot: to the registry, off the hot loop
            batch.snapshots.append(action)
            record["registry"] = "queued"
        self._committer.produce(
            self.config.topics.alerts,
            records.encode(record),
            f"action:{action.action}".encode(),
        )
        batch.stats.actions += 1
        self.metrics.count_action(action.action)
        log.warning("action on partition %s: %s", action.partition, action.message)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self, partition: int) -> None:
        """Produce ``partition``'s checkpoint into the open transaction."""
        offset = self._next.get(partition)
        if offset is None:
            return  # nothing consumed yet: the registry champion or a fresh model is the state
        engine = self.engines[partition]
        config, reader = self.config, self._reader
        chunk_bytes = config.worker.checkpoint_chunk_bytes
        # The detectors' references change rarely and the join's sealed segments never:
        # written again only when they are other objects than an earlier checkpoint of
        # this partition wrote.
        written = self._parts.get(partition, {})
        stable = engine.stable_parts()
        parts = {}
        for name, obj in stable.items():
            known = written.get(name)
            if known is not None and known[0] is obj:
                parts[name] = known[1]
            else:
                blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
                parts[name] = checkpoint.Part.of(blob, self._state_signer, chunk_bytes)
        for key, value, headers in checkpoint.encode(
            checkpoint.stream_name(config.kafka.group_id, config.topics.events),
            partition,
            offset,
            engine.to_bytes(without_parts=True),
            config,
            self._state_signer,
            chunk_bytes,
            engine.model_version,
            parts,
            {"champion": self._champion_seen.get(partition)},
        ):
            self._committer.produce(
                config.topics.state,
                value,
                key,
                headers=headers,
                partition=reader.state_partition(partition),
            )
        self._unsaved[partition] = 0
        # Kept as written (the objects held, so their identity cannot be reused), only for
        # the parts this checkpoint names: if the transaction aborts, the table is forgotten.
        self._parts[partition] = {
            name: (obj, parts[name].written()) for name, obj in stable.items()
        }

    def _restore(self, partition: int) -> tuple[Engine, int | None]:
        """The partition's Engine from its latest usable checkpoint, and the offset it
        covers; or a fresh Engine (registry champion or new model) and None, said loudly.
        WorkerError when the state partition cannot be read: that is not "no checkpoint"."""
        config = self.config
        engine = Engine(config, self.versions)
        why = "no checkpoint on the state topic (first start, or the topic was emptied)"
        try:
            found = self._reader.latest(
                config.topics.events,
                partition,
                config.worker.transaction_timeout_seconds + HANDOVER_GRACE_SECONDS,
            )
            if found is not None:
                manifest, chunks, part_chunks = found
                payload = checkpoint.assemble(manifest, chunks, self._state_signer)
                rule = checkpoint.usable(manifest.sections, config)
                if rule == "none":
                    why = "its checkpoint was made under another model config (model.*)"
                else:
                    parts = checkpoint.assemble_parts(manifest, part_chunks, self._state_signer)
                    engine.load_bytes(payload, detectors=rule == "all", parts=parts)
                    self.stats.restored += 1
                    note = "" if rule == "all" else "; detectors and policy start fresh (config)"
                    log.info(
                        "partition %d restored from checkpoint %s at offset %d%s",
                        partition,
                        manifest.checkpoint,
                        manifest.offset,
                        note,
                    )
                    if rule == "model":
                        self._notice(partition, "checkpoint_partly_used", note.lstrip("; "))
                    if "champion" in manifest.registry:
                        self._champion_seen[partition] = manifest.registry["champion"]
                        self._reconcile.add(partition)
                    else:  # a checkpoint older than the record: take it as up to date
                        self._champion_seen[partition] = self._alias()
                    return engine, manifest.offset
        except StateUnreadable as err:
            # Not "no checkpoint": starting cold here would write a checkpoint that
            # shadows the one the broker could not hand over. Stop; a restart reads again.
            raise WorkerError(f"partition {partition} not restored: {err}") from err
        except CheckpointError as err:
            why = f"checkpoint refused: {err}"
        except Exception as err:  # a checkpoint that passed its checks but does not load
            why = f"checkpoint does not load: {err!r}"
            engine = Engine(config, self.versions)
        champion, model_bytes = self._champion()
        if model_bytes is not None:
            start_from = Lineage(champion, None, "registry", "registry champion", 0)
            engine.serving.load(models.loads(model_bytes), champion, [start_from])
            start = f"registry champion v{champion}"
        else:  # the fresh model's number comes from the registry too
            fresh = self.versions.fresh_version(config)
            start_from = Lineage(fresh, None, "initial", "a fresh model built from config", 0)
            engine.serving.load(engine.model, fresh, [start_from])
            start = f"a fresh model (v{fresh})"
        self._champion_seen[partition] = champion
        self._reconcile.discard(partition)
        self.stats.cold_starts += 1
        self._notice(partition, "cold_start", f"{why}: starting from {start}")
        return engine, None

    def _notice(self, partition: int, kind: str, message: str) -> None:
        """Logged now; an alert record in the first transaction that commits the
        partition's offsets (dropped if it leaves before: its next owner says its own)."""
        log.warning("partition %d: %s", partition, message)
        notice = Notice(kind, None, 0, message, {"worker": self.worker_id}, partition)
        value = records.encode(records.notice_record(notice))
        held = self._held.setdefault(partition, [])
        held.append((self.config.topics.alerts, f"notice:{kind}".encode(), value))

    def _flush_outbox(self, partitions: list[int]) -> None:
        """Into the open transaction: the outbox, and the held notices of ``partitions``
        (whose offsets it commits). An abort loses them with the rest; the rewind that
        follows restores those partitions again, which notices again."""
        outbox, self._outbox = self._outbox, []
        for partition in partitions:
            outbox += self._held.pop(partition, ())
        for topic, key, value in outbox:
            self._committer.produce(topic, value, key)

    def _rewind(self, partitions: list[int]) -> None:
        """After an aborted transaction: the Engines ran ahead of what was committed. Each
        goes back to its checkpoint and catches up to the committed offset quietly."""
        committed = self._committed_offsets(partitions)
        for partition in partitions:
            engine, start = self._restore(partition)
            self.engines[partition] = engine
            self._place(partition, start, committed.get(partition))
            position = self._next.get(partition)
            # Nothing committed and no checkpoint (the partition's first transaction was
            # aborted): back to where an unread partition starts (auto.offset.reset =
            # earliest). Left alone, the fetch position would skip the aborted records.
            offset = OFFSET_BEGINNING if position is None else position
            self._consumer.seek(TopicPartition(self.config.topics.events, partition, offset))

    def _place(self, partition: int, start: int | None, committed: int | None) -> int | None:
        """Where ``partition`` resumes, given its checkpoint's and the group's offsets."""
        self._catch_up.pop(partition, None)
        # A partition with no checkpoint is checkpointed in its first transaction, whatever
        # the cadence: its offsets would be committed with none, and a crash before the
        # N-th batch would start it cold again at those offsets, its learning lost.
        every = self.config.worker.checkpoint_every_batches
        self._unsaved[partition] = every - 1 if start is None else 0
        position = start if start is not None else committed
        if start is not None and committed is not None and start < committed:
            self._catch_up[partition] = committed
        if position is None:
            self._next.pop(partition, None)
        else:
            self._next[partition] = position
        return position

    def _committed_offsets(self, partitions: list[int]) -> dict[int, int]:
        if not partitions:  # a rebalance round that brought nothing new: nothing to ask
            return {}
        topic = self.config.topics.events
        # Offsets that the previous owner's still-open transaction covers read as unstable
        # until it commits or Kafka aborts it: wait as long as that may take.
        found = committed_offsets(
            self._consumer,
            [TopicPartition(topic, p) for p in partitions],
            timeout=self.config.worker.transaction_timeout_seconds + HANDOVER_GRACE_SECONDS,
        )
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    # ------------------------------------------------------------------ control
    def _apply_commands(self) -> None:
        """Promote / rollback commands from the control topic, between batches, committed
        with a checkpoint of every partition they changed. A record that is not a valid
        command, or names a model the registry cannot serve, is refused (logged once and
        written as an alert record); nothing it holds can raise out of here."""
        installed: list[Action] = []
        commands = self._control.poll()
        if commands:
            self._settle()  # an install must not be undone by the rewind of an abort
        for offset, command in commands:
            if type(command) is Refusal:
                self._refuse_command(offset, command.why, command.preview)
                continue
            try:
                model_bytes = self.registry.load_bytes(command.version)
                models.loads(model_bytes)  # must unpickle before any partition relies on it
            except Exception as err:  # RegistryError, or a verified file that does not load
                self._refuse_command(offset, str(err), command.describe())
                continue
            if not self.engines:
                log.warning("control %s: no partitions assigned here", command.describe())
            for partition in self.engines:
                # Each partition gets its own copy: models learn in place.
                model, cause = models.loads(model_bytes), command.describe()
                installed.append(self._install(partition, model, command.version, cause))
            log.warning("applied control command at offset %d: %s", offset, command.describe())
        if installed or self._outbox:
            self._save(list(self.engines) if installed else [], installed)

    def _observe(self) -> None:
        """Metrics between batches (the Engines' numbers, lag, liveness); now and then a
        snapshot of them for the metrics topic, committed with the next transaction."""
        metrics = self.metrics
        metrics.observe_loop(self._consumer)
        metrics.observe_engines(self.engines)
        snapshot = metrics.snapshot_if_due()
        if snapshot is not None:
            self._outbox.append((self.config.topics.metrics, self.worker_id.encode(), snapshot))

    def _save(self, partitions: list[int], outputs: Sequence[Action] = ()) -> None:
        """Outside a batch: commit ``outputs``, what waits in the outbox and a checkpoint of
        those of ``partitions`` that changed since their last one."""
        self._settle()  # a rewind changes what is unsaved
        unsaved = [p for p in partitions if self._unsaved.get(p, 0) > 0 or outputs]
        if not (unsaved or outputs or self._outbox):
            return
        batch = _Batch(WorkerStats(), [])

        def produce() -> None:
            self._publish(list(outputs), batch)
            for partition in unsaved:
                self._checkpoint(partition)

        self._transact(unsaved, batch, produce)

    def _refuse_command(self, offset: int, why: str, preview: str) -> None:
        log.error("control record at offset %d refused: %s [%s]", offset, why[:300], preview)
        record = {
            "type": "control_refused",
            "offset": offset,
            "reason": why[:1000],
            "record": preview,
        }
        self._outbox.append((self.config.topics.alerts, b"control_refused", orjson.dumps(record)))

    # ------------------------------------------------------------------ rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Restore each new partition before anything of it is consumed."""
        if self._closing:
            # A rebalance that was under way when the close began still hands partitions
            # over. Nothing of them will be consumed and close() revokes them again, so
            # they are taken as they are: restoring asks the group for committed offsets,
            # which a closing consumer no longer gets (a 50 s wait, then exit 74).
            log.info(
                "partitions %s arrived during close: left to their next owner",
                sorted(tp.partition for tp in partitions),
            )
            try:
                consumer.incremental_assign(partitions)
            except KafkaException as err:
                log.info("assignment during close not taken: %s", err)
            return
        self._restoring = True
        try:
            self._settle()
            committed = self._committed_offsets([tp.partition for tp in partitions])
            placed = []
            for tp in partitions:
                engine, start = self._restore(tp.partition)
                self.engines[tp.partition] = engine
                position = self._place(tp.partition, start, committed.get(tp.partition))
                offset = OFFSET_INVALID if position is None else position  # invalid: reset
                placed.append(TopicPartition(tp.topic, tp.partition, offset))
            consumer.incremental_assign(placed)
        except KafkaException as err:
            self._fatal = WorkerError(f"assignment failed: {err}")
        except WorkerError as err:  # the commit in flight failed
            self._fatal = err
        finally:
            self._restoring = False
        log.info(
            "assigned partitions %s at %s",
            sorted(tp.partition for tp in partitions),
            {p: self._next.get(p) for p in sorted(tp.partition for tp in partitions)},
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Checkpoint and commit what the partitions learned since their last checkpoint,
        then let them go (the next owner restores exactly this state)."""
        owned = [tp.partition for tp in partitions if tp.partition in self.engines]
        try:
            self._save(owned)
        except WorkerError as err:
            self._fatal = err
        self._forget(owned)
        log.info("revoked partitions %s", sorted(owned))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Another worker owns these already: drop them, commit nothing."""
        owned = [tp.partition for tp in partitions if tp.partition in self.engines]
        self._forget(owned)  # first: an abort of the commit in flight leaves them alone
        try:
            self._settle()  # that commit fails or not; it is not retried
        except WorkerError as err:
            self._fatal = err
        log.warning("lost partitions %s (not committed; their new owner restores)", owned)

    def _forget(self, partitions: list[int]) -> None:
        for partition in partitions:
            for table in (
                self.engines,
                self._next,
                self._catch_up,
                self._unsaved,
                self._parts,
                self._champion_seen,
                self._held,
            ):
                table.pop(partition, None)
            self._reconcile.discard(partition)

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            fatal, self._fatal = self._fatal, None
            raise fatal

    # ------------------------------------------------------------------ registry
    def _alias(self) -> int | None:
        """The registry's champion version now (None: none, or the registry cannot say)."""
        try:
            return self.registry.alias(CHAMPION)
        except Exception as err:  # the stream must not stop on the registry
            log.error("registry champion unreadable: %s", err)
            return None

    def _reconciled(self, partition: int) -> list[Action]:
        """A restored partition, before its first new event: if the registry's champion
        moved while nobody served the partition (a promote or rollback sent while the
        workers were down, or refused by them), it is installed now, as the command
        would have been; the state learned since keeps serving otherwise."""
        self._reconcile.discard(partition)
        seen, champion = self._champion_seen.get(partition), self._alias()
        if champion is None or champion == seen:
            return []
        try:
            model = models.loads(self.registry.load_bytes(champion))
        except Exception as err:  # RegistryError, or a verified file that does not load
            log.error("registry champion v%d refused, keeping the checkpoint: %s", champion, err)
            return []
        cause = f"registry champion v{champion}, promoted while the partition was not served"
        return [self._install(partition, model, champion, cause)]

    def _install(self, partition: int, model: Any, version: int, cause: str) -> Action:
        """Serve the registry's ``version`` on ``partition``: its state now accounts for
        that champion (what the next checkpoint records)."""
        action = self.engines[partition].install(model, version, cause)
        action.partition = partition
        self._champion_seen[partition] = version
        self._reconcile.discard(partition)
        return action

    def _champion(self) -> tuple[int | None, bytes | None]:
        """The registry champion to serve, or (None, None): a registry that cannot give a
        sound one must not stop the worker, so a fresh model serves instead (loudly)."""
        try:
            champion = self.registry.alias(CHAMPION)
            if champion is None:
                return None, None
            model_bytes = self.registry.load_bytes(champion)
            models.loads(model_bytes)  # it must unpickle before any partition relies on it
            return champion, model_bytes
        except Exception as err:  # RegistryError, or a verified file that does not unpickle
            log.error("registry champion refused, serving a fresh model: %s", err)
            return None, None

    def _lag(self) -> int:
        lag = 0
        try:
            for tp in self._consumer.position(self._consumer.assignment()):
                _, high = self._consumer.get_watermark_offsets(tp, timeout=1.0)
                # Before the first fetch the position is unknown: the next offset to
                # process (restored or committed) tells where the partition stands.
                position = tp.offset if tp.offset >= 0 else self._next.get(tp.partition, 0)
                lag += max(0, high - position)
        except KafkaException:
            return -1
        return lag


class _Progress:
    """A periodic one-line progress report (events/s since the last line, lag)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last_time = time.monotonic()
        self._last_count = 0

    def due(self) -> bool:
        return time.monotonic() - self._last_time >= self.interval

    def report(self, consumed: int, lag: int) -> None:
        now = time.monotonic()
        rate = (consumed - self._last_count) / (now - self._last_time)
        log.info("progress: consumed=%d rate=%.0f events/s lag=%d", consumed, rate, lag)
        self._last_time, self._last_count = now, consumed
