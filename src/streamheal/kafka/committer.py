"""Outputs and consumed offsets, committed together: the worker's delivery guarantee.

``exactly-once`` (the default): one transactional producer per worker. Per batch
``begin`` → ``produce`` outputs and checkpoint records → ``commit(offsets)`` =
``send_offsets_to_transaction`` + ``commit_transaction``. Readers with
``isolation.level=read_committed`` see a batch's predictions, alerts, dead letters and
checkpoints exactly when its offsets are committed, never twice, never half.

``at-least-once``: ``commit(offsets)`` waits until the broker acknowledged every output,
then commits the offsets; a crash in between re-processes the batch (outputs twice).

Errors (librdkafka's rules, as in its ``examples/transactions.c``): a retriable error
retries the call; an abortable one aborts the transaction and raises
:class:`TransactionAborted` (the caller rewinds and restores the affected partitions);
anything else, fencing included, raises :class:`CommitFailed`: this worker must stop.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streamheal.config import Config
from streamheal.errors import StreamhealError

log = logging.getLogger("streamheal.committer")
_RETRIES = 10
_ABORT_ATTEMPT_SECONDS = 10.0  # one abort attempt; delivery reports are served between
_FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


class TransactionAborted(StreamhealError, RuntimeError):
    """The batch's transaction was aborted: nothing of it is visible; rewind and redo."""


class CommitFailed(StreamhealError, RuntimeError):
    """The worker cannot commit any more (fenced, fatal producer error, lost outputs)."""

    def __init__(self, message: str, fenced: bool = False) -> None:
        super().__init__(message)
        self.fenced = fenced


class Committer:
    """Produces a batch's outputs and commits them with the consumed offsets."""

    def __init__(self, config: Config, producer_settings: dict[str, Any], worker_id: str) -> None:
        self.exactly_once = config.worker.guarantee == "exactly-once"
        self.timeout = config.worker.transaction_timeout_seconds
        # Delivery reports come to one callback set here, not passed with every record:
        # a keyword-free produce() costs half as much (0.64 against 1.3 us per record).
        settings = {**producer_settings, "on_delivery": self._on_delivery}
        if self.exactly_once:
            self.transactional_id = f"{config.kafka.group_id}-{worker_id}"
            settings["transactional.id"] = self.transactional_id
            settings["transaction.timeout.ms"] = int(self.timeout * 1000)
        self._producer = Producer(settings)
        self._errors: list[str] = []
        self._open = False

    def start(self) -> None:
        """Fence any earlier incarnation of this worker and abort its open transaction."""
        if self.exactly_once:
            self._call("init_transactions", self.timeout)

    def begin(self) -> None:
        if self.exactly_once and not self._open:
            self._call("begin_transaction")
            self._open = True

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> None:
        while True:
            try:
                if headers is None and partition is None:  # the common case: predictions
                    self._producer.produce(topic, value, key)
                elif partition is None:
                    self._producer.produce(topic, value, key, headers=headers)
                else:
                    self._producer.produce(topic, value, key, partition=partition, headers=headers)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
            except KafkaException as err:
                self._fail(err, "produce")

    def commit(self, consumer: Consumer, offsets: list[TopicPartition]) -> None:
        """Make the produced outputs and ``offsets`` (next offsets to read) durable together."""
        self.finish(offsets, self.group_metadata(consumer))
        self.commit_offsets(consumer, offsets)

    def group_metadata(self, consumer: Consumer) -> Any:
        """What :meth:`finish` needs of the consumer, taken on the consumer's own thread."""
        return consumer.consumer_group_metadata() if self.exactly_once else None

    def finish(self, offsets: list[TopicPartition], group: Any) -> None:
        """The part of a commit that waits on the broker. Exactly-once: ``offsets`` into the
        transaction (``group``: :meth:`group_metadata`), then its commit. At-least-once:
        wait until every output is acknowledged (:meth:`commit_offsets` follows).

        It touches no consumer, so it may run on a thread of its own: confluent-kafka
        serialises a Consumer's calls across threads, and a call made from another
        thread waits until the loop's ``consume()`` returns, which it never does while a
        rebalance callback inside it waits for this commit (a deadlock seen in CI)."""
        if not self.exactly_once:
            self._producer.flush()
            self._raise_delivery_errors()
            return
        if not self._open:
            self.begin()
        try:
            if offsets:
                self._call("send_offsets_to_transaction", offsets, group, self.timeout)
            self._call("commit_transaction", self.timeout)
        finally:
            self._open = False
        self._raise_delivery_errors()

    def commit_offsets(self, consumer: Consumer, offsets: list[TopicPartition]) -> None:
        """At-least-once, after :meth:`finish`: commit the offsets (exactly-once: nothing,
        they were committed with the transaction). On the consumer's own thread."""
        if self.exactly_once or not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as err:
            # A rebalance since the batch was read (ILLEGAL_GENERATION): whoever owns the
            # partitions next, this worker included, reads the batch again (at-least-once).
            log.warning("offset commit failed, the batch will be read again: %s", err)

    def abort(self) -> None:
        """Abort the open transaction (exactly-once) or drop queued outputs (at-least-once)."""
        if self.exactly_once and self._open:
            try:
                self._abort_transaction()
            except KafkaException as err:
                self._fail(err, "abort_transaction")
            finally:
                self._open = False
        self._errors.clear()

    def _abort_transaction(self) -> None:
        """Abort the open transaction; raises KafkaException when it cannot be done.

        An abort waits for every outstanding message, and a failed delivery counts as
        outstanding until its report is served; librdkafka's answer to a timed-out abort
        is that delivery reports must be polled before aborting. So each attempt first
        serves them, and a timed-out (retriable) attempt is tried again, all within the
        transaction timeout (a CI run once lost its whole 60 s to one waiting abort)."""
        deadline = time.monotonic() + self.timeout
        while True:
            self._producer.poll(0)
            left = max(deadline - time.monotonic(), 0.1)
            try:
                self._producer.abort_transaction(min(_ABORT_ATTEMPT_SECONDS, left))
                return
            except KafkaException as err:
                if not err.args[0].retriable() or time.monotonic() >= deadline:
                    raise
                log.warning("abort_transaction: %s (serving delivery reports, retrying)", err)

    def close(self, timeout: float = 30.0) -> None:
        """Abort an open transaction and deliver what is queued. Never raises: a producer
        that was fenced or failed has nothing left that could count (none of its open
        transaction was committed, and at-least-once commits no offset past an output
        that was not acknowledged), and the error that stopped the worker is the one
        to report, not this one."""
        try:
            if self._open:
                self.abort()
            self._producer.flush(timeout)
        # Not only Kafka's errors: a fenced producer's flush can hand a delivery report to
        # Python with the fatal error still pending in confluent-kafka, and the callback's
        # first call then raises SystemError (seen once in CI: exit 1 instead of 75).
        except Exception as err:
            log.warning("producer closed without delivering its queue (never committed): %s", err)

    # ----------------------------------------------------------------- internals
    def _call(self, name: str, *args: Any) -> Any:
        for attempt in range(_RETRIES):
            try:
                return getattr(self._producer, name)(*args)
            except KafkaException as err:
                error: KafkaError = err.args[0]
                if error.retriable() and attempt < _RETRIES - 1:
                    log.warning("%s: %s (retrying)", name, error)
                    time.sleep(min(0.1 * 2**attempt, 2.0))
                    continue
                self._fail(err, name)
        raise AssertionError("unreachable")

    def _fail(self, err: KafkaException, during: str) -> None:
        error: KafkaError = err.args[0]
        if error.code() == KafkaError._FATAL and self.exactly_once:
            error = self._fatal_cause(error)
        # A delivery of this transaction failed (e.g. a record over the topic's
        # max.message.bytes): the transaction is now in an abortable state, and the next
        # produce() says only "Erroneous state" (_STATE, not flagged txn_requires_abort).
        failed_earlier = during == "produce" and error.code() == KafkaError._STATE
        abortable = error.txn_requires_abort() or failed_earlier
        if self.exactly_once and not error.fatal() and abortable:
            log.warning("%s: %s: aborting the transaction", during, error)
            try:
                self._abort_transaction()
            except KafkaException as abort_err:
                raise CommitFailed(f"abort after {during} failed: {abort_err}") from err
            finally:
                self._open = False
            self._errors.clear()
            raise TransactionAborted(f"{during}: {error}") from err
        fenced = error.code() in _FENCED
        why = (
            f"fenced: another worker took over transactional.id {self.transactional_id!r} "
            "(a second process with the same worker.id, or this one restarted elsewhere)"
            if fenced
            else f"{during} failed: {error}"
        )
        raise CommitFailed(why, fenced=fenced) from err

    def _fatal_cause(self, error: KafkaError) -> KafkaError:
        """What made the producer fail. produce() says only "Fatal error" (_FATAL) once it
        has; a transactional call on a failed producer does nothing and returns the cause
        (fenced, say), so the worker can exit with the code that says why."""
        try:
            self._producer.abort_transaction(0.1)
        except KafkaException as err:
            return err.args[0]
        return error

    def _on_delivery(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:
            self._errors.append(f"{message.topic()}: {err}")

    def _raise_delivery_errors(self) -> None:
        if self._errors:
            errors, self._errors = self._errors, []
            raise CommitFailed(f"{len(errors)} outputs not acknowledged, first: {errors[0]}")
