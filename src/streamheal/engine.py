"""The pure, deterministic core: a batch of decoded events in, a list of outputs out.

The Engine owns one partition's model, its label-join buffer and its counters. It
does no I/O and reads no clock but the events' own ``ts``, so the Kafka worker,
replay, the benchmark and the tests all drive exactly the same code.

Prequential order is kept: a feature event is always scored before anything is
learned from its label.

>>> from streamheal.config import Config
>>> from streamheal.events import Event, Source
>>> engine = Engine(Config())
>>> src = Source("t", 0, 0)
>>> out = engine.process([
...     Event("a", 1.0, {"x": 1.0}, None, (), src, b""),
...     Event("a", 2.0, None, 1, (), src, b""),
... ])
>>> [type(o).__name__ for o in out], engine.counters.labeled
(['Prediction'], 1)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import itertools
import math
import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamheal import models, pickling
from streamheal.block import FeatureBlock
from streamheal.config import Config
from streamheal.detectors.suite import DriftSuite, Observation
from streamheal.events import Event, Label, Reason, Rejection, Source
from streamheal.guards import (
    EventClock,
    InputGuard,
    ModelWatch,
    Notice,
    finite_probabilities,
    healthy,
    label_kind,
    linear_parts,
)
from streamheal.joins import LOG_FORMATS_READ, LabelJoin, Pending
from streamheal.policy import Action, Policy
from streamheal.serving import ServingModel, VersionAuthority

Output = Any  # Prediction | Rejection | Drift | Action | Notice
# Feature names beyond the distinct-name cap share one slot in the per-feature counters.
OTHER_FEATURES = "(other)"
# A champion pickled to at most this many bytes is read without slowing it, or served as
# a fast copy afterwards (Engine._pickled_model).
COPY_MAX_BYTES = 256 * 1024


@dataclass(slots=True)
class Prediction:
    """The model's answer for one feature event, as written to the predictions topic."""

    id: str
    ts: float
    index: int
    prediction: Label | None
    probabilities: dict[Any, float]
    model_version: int
    source: Source
    missing: tuple[str, ...]


@dataclass
class Counters:
    """Everything the Engine has counted; restored with the rest of its state.

    Every record is accounted for exactly once:
    ``records == feature_events + labels_joined + dead_lettered_total``.
    """

    records: int = 0
    feature_events: int = 0  # scored
    labels_joined: int = 0  # label events matched to buffered features
    labeled: int = 0  # learned from (joined or carried by the feature event)
    correct: int = 0
    unlabeled_expired: int = 0
    future_ts: int = 0  # events whose ts was too far ahead to move the clock
    model_restores: int = 0  # non-finite models replaced by their last good state
    dead_lettered: Counter[str] = field(default_factory=Counter)  # by reason
    missing: Counter[str] = field(default_factory=Counter)

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    @property
    def accuracy(self) -> float | None:
        """Prequential accuracy over every labeled event so far."""
        return self.correct / self.labeled if self.labeled else None


class Engine:
    """Scores, joins labels, learns, watches for drift and heals; one per input partition.

    Pure and deterministic: :meth:`process` takes decoded records (events and rejections,
    in stream order) and returns what to publish (predictions, drifts, actions, notices);
    it does no I/O, so the Kafka worker, replay, the benchmark and a notebook all drive
    the same code. Same config and same records give the same outputs and model bytes.

    Parameters
    ----------
    config
        The whole configuration; the Engine reads its ``model``, ``engine``,
        ``detectors``, ``policy``, ``guards`` and ``events`` sections.
    versions
        Where new model version numbers come from (resets, promotions), shared by every
        partition's Engine: the worker passes its registry; None gives this Engine its
        own counter.

    Examples
    --------
    >>> from streamheal import Config, Engine
    >>> from streamheal.events import Source, decode
    >>> engine = Engine(Config())
    >>> raw = b'{"id": "e1", "ts": 0, "features": {"x": 1.5}, "label": 1}'
    >>> outputs = engine.process([decode(raw, Source("events", 0, 0))])
    >>> [type(o).__name__ for o in outputs], engine.counters.labeled
    (['Prediction'], 1)
    """

    def __init__(self, config: Config, versions: VersionAuthority | None = None) -> None:
        self.config = config
        engine_cfg = config.engine
        self.serving = ServingModel(
            models.build_model(config.model, seed=engine_cfg.seed), 1, versions
        )
        self.mini_batch = engine_cfg.mode == "mini_batch" and models.supports_mini_batch(self.model)
        # River's binary classifiers answer False/True; we speak 0/1 on the wire.
        self._binary = models.is_binary_bool(self.model)
        self.join = LabelJoin.from_config(engine_cfg)
        guards = config.guards
        self.guard = InputGuard(guards)
        self.clock = EventClock(guards.max_future_skew_seconds)
        self.watch = ModelWatch(guards.good_state_every) if guards.check_model else None
        self._noticed: set[tuple[str, str | None]] = set()
        self._notices: list[Notice | Action] = []
        self._watched: Any = None  # the model whose linear parts are cached below
        self._watched_linear: list[Any] = []
        self._model_pickle_bytes = 0  # the champion's last pickle's size
        self._served_copy: Any = None  # the champion as last served by _pickled_model
        self.counters = Counters()
        self.drift = DriftSuite(config.detectors) if config.detectors.enabled else None
        if models.supports_mini_batch(self.model) and (self.mini_batch or self.drift):
            # pandas (River's batch calls take DataFrames) is imported now, with the rest
            # of start-up, not at the first model-drift check, where it stalled the
            # first partition's stream for about 0.3 s.
            import pandas  # noqa: F401
        # Per-event mode lets the detectors (and the policy after them) look at every check
        # boundary, not at the end of whatever batch Kafka handed over: a drift is acted on
        # at the same event however the stream was cut, so a restarted worker or a
        # partition that moved produces exactly what an uninterrupted run would.
        detectors = config.detectors
        self._watch_every = (
            math.gcd(detectors.check_every, detectors.model_check_every) if self.drift else 1 << 62
        )
        factory = functools.partial(models.build_model, config.model, engine_cfg.seed)
        self.policy = (
            Policy(config.policy, factory, self.serving) if config.policy.enabled else None
        )
        self._partition: int | None = None
        self._seen = Observation()

    # ------------------------------------------------------------------ public
    @property
    def model(self) -> Any:
        """The champion that answers (owned by :attr:`serving`)."""
        return self.serving.model

    @property
    def model_version(self) -> int:
        return self.serving.version

    def process(self, records: list[Event | Rejection]) -> list[Output]:
        """Score, join and learn from ``records`` in order; return what to publish.

        Rejections from decoding pass through (counted, in order), so one place sees every
        consumed record: consumed = scored + labels joined + dead-lettered.
        """
        self.counters.records += len(records)
        if records:  # an Engine owns one partition: its records all come from it
            self._partition = self.serving.partition = records[0].source.partition
        records = self._guarded(records)
        step = _MiniBatch(self, records) if self.mini_batch else _PerEvent(self)
        outputs = self._dispatch(records, step)
        if self._notices:
            outputs.extend(self._notices)
            self._notices = []
        self.counters.unlabeled_expired = self.join.expired
        outputs = self._watch(outputs)
        self._seen.block = None  # the batch's matrix is not kept past its batch
        return outputs

    def _dispatch(self, records: list[Event | Rejection], step: _Step) -> list[Output]:
        """The one record loop of both modes; ``step`` says how to score and learn, and
        what happens at a check boundary. A run of feature events that carry their labels
        goes through the step's ``take_run`` where the step allows it; the rest of this
        loop is its oracle."""
        outputs: list[Output] = []
        counters, every = self.counters, step.watch_every
        at, end = 0, len(records)
        while at < end:
            first = records[at]
            if (
                type(first) is not Rejection
                and first.features is not None
                and first.label is not None
            ):
                left = every - counters.feature_events % every  # events before the boundary
                done = step.take_run(records, at, left, outputs)
                if done:
                    at += done
                    if counters.feature_events % every == 0:
                        step.at_boundary(outputs)
                    continue
                # None taken (say, a non-finite answer first): the careful path takes it.
            event = records[at]
            at += 1
            if type(event) is Rejection:
                self._pass_rejection(event, outputs)
                continue
            features = event.features
            if features is None:
                self._join_label(event, outputs, step)
                continue
            if event.label is None:
                self._remember(event, features, step.score(event, features, outputs))
            else:
                label = self._model_label(event, outputs)
                if label is None:  # a record is taken whole or dead-lettered whole
                    continue
                prediction = step.score(event, features, outputs)
                right = self._account_own_label(event, prediction)
                step.learn(features, label, right, outputs, joined=False)
            if counters.feature_events % every == 0:
                step.at_boundary(outputs)
        step.finish(outputs)
        return outputs

    # ------------------------------------------------------------------ guards
    def _guarded(self, records: list[Event | Rejection]) -> list[Event | Rejection]:
        """The records with every feature event's features through the input guard (a new
        Event where something changed: replay shares decoded records between Engines).

        The batch's features become one matrix when they can (:mod:`streamheal.block`):
        then the guard checks them all at once, and the matrix goes on to the model
        (mini-batch) and the detectors."""
        rows = _feature_rows(records)
        if self.guard.label_kind is None and not self._binary:
            # The first label fixes the kind (integer or string) for good, before anything
            # in this batch is scored: both modes then take and refuse the same labels.
            first = next(
                (r.label for r in records if type(r) is not Rejection and r.label is not None), None
            )
            if first is not None:
                self.guard.label_kind = label_kind(first)
        block = FeatureBlock.of(rows)
        out: list[Event | Rejection] | None = None
        # (kind, feature) -> index of the event that set off a guard's notice.
        stamps: dict[tuple[str, str | None], int] = {}
        # Rows the guard would pass unchanged are known at once; only the others (an
        # outlier to clip, the first rows of a new layout) are admitted one by one.
        unchanged = None if block is None else self.guard.unchanged_rows(block)
        if unchanged is not None and all(unchanged):
            for record in records:  # nothing to admit one by one
                if type(record) is not Rejection and record.features is not None and record.missing:
                    self.guard.note_missing(record.missing)
        else:
            guard = self.guard
            admit, accepts = guard.admit, self._accepts_label
            # A new partition's first rows, while the guard learns their bounds: admitted
            # as one block (missing names are noted between rows: then one by one).
            learned = (
                guard.admit_learning(block)
                if block is not None and unchanged is None and not _any_missing(records)
                else None
            )
            # A guard's notice is stamped with the index of the event that set it off, as
            # its prediction is: the same wherever the batch was cut. A feature event is
            # scored unless its label is refused (then it is dead-lettered whole).
            index = self.counters.feature_events
            row = -1
            for i, record in enumerate(records):
                if type(record) is Rejection or record.features is None:
                    continue
                row += 1
                at = index
                if _scored(record, accepts):
                    index += 1
                if record.missing:
                    guard.note_missing(record.missing)
                if unchanged is not None and unchanged[row]:
                    continue
                if learned is not None:
                    for name in learned.first_clips.get(row, ()):
                        stamps.setdefault(("outlier_clipped", name), at)
                    admitted = learned.replaced.get(row, record.features)
                else:
                    before = _notice_marks(guard)
                    admitted = admit(record.features)
                    if _notice_marks(guard) != before:
                        self._stamp_guard_notices(stamps, before, at)
                if admitted is not record.features:
                    out = list(records) if out is None else out
                    out[i] = dataclasses.replace(record, features=admitted)
            if out is not None:  # the matrix of what was admitted, not of what came
                block = FeatureBlock.of(_feature_rows(out))
        self._seen.block = block
        guard = self.guard
        for name in guard.take_first_mismatches():
            self._notice(
                "type_mismatch",
                name,
                "a value of the other kind than the feature's first (a string for a numeric "
                "feature or a number for a string one) was left out (counted from now on)",
                at=stamps.get(("type_mismatch", name)),
            )
        for name in guard.take_first_clips():
            self._notice(
                "outlier_clipped",
                name,
                "a value beyond the feature's guard bounds was clipped (counted from now on)",
                at=stamps.get(("outlier_clipped", name)),
            )
        if guard.cap_reached:
            self._notice(
                "feature_cap_reached",
                None,
                f"more than {self.config.guards.max_distinct_features} distinct feature "
                "names: new names are ignored by the model and the detectors",
                at=stamps.get(("feature_cap_reached", None)),
            )
        return records if out is None else out

    def _stamp_guard_notices(
        self, stamps: dict[tuple[str, str | None], int], before: tuple[int, int, bool], index: int
    ) -> None:
        """The guard noted something new while admitting the event at ``index``: its notice
        will carry that index (in ``stamps``). ``before``: the guard's (first mismatches,
        first clips, cap reached) before that event."""
        guard = self.guard
        for name in guard.first_mismatch[before[0] :]:
            stamps.setdefault(("type_mismatch", name), index)
        for name in guard.first_clip[before[1] :]:
            stamps.setdefault(("outlier_clipped", name), index)
        if guard.cap_reached and not before[2]:
            stamps.setdefault(("feature_cap_reached", None), index)

    def _notice(
        self, kind: str, feature: str | None, message: str, at: int | None = None, **detail: Any
    ) -> None:
        """One notice per (kind, feature) per Engine: a warning, not a stream of them.
        ``at``: the index of the event that set it off (default: the next event's)."""
        if (kind, feature) in self._noticed:
            return
        self._noticed.add((kind, feature))
        index = self.counters.feature_events if at is None else at
        self._notices.append(Notice(kind, feature, index, message, detail, self._partition))

    def _now(self, ts: float) -> float:
        """The partition's event time after ``ts``: far-future stamps do not move it."""
        clock = self.clock
        before = clock.suspicious
        now = clock.advance(ts)
        if clock.suspicious != before:
            self.counters.future_ts += 1
            self._notice(
                "future_ts",
                None,
                f"an event's ts is more than {clock.max_skew:g}s ahead of the partition's "
                "event time; it was scored but did not move the clock (counted from now on)",
                ts=ts,
                clock=now,
            )
        return now

    def _learn_one(self, features: dict[str, Any], label: Label) -> None:
        policy = self.policy
        if policy is not None and policy.catch_up is not None:  # a young model catching up
            weight = policy.champion_weight(self.serving.version)
            models.learn_weighted(self.model, features, label, weight)
        else:
            self.model.learn_one(features, label)
        if self.watch is not None:
            self._check_model()

    def _check_model(self, learned: int = 1) -> None:
        """After learning: a non-finite model goes back to its last good state at once."""
        watch = self.watch
        if self.model is not self._watched:
            # A new champion (reset, promotion, rollback, install): its own good state.
            self._watched = self.model
            self._watched_linear = linear_parts(self.model)
            watch.since_good = watch.interval
        if not healthy(self._watched_linear, weights=False):
            self._restore_model("non-finite model state after learning")
            return
        watch.since_good += learned
        if watch.since_good >= watch.interval:
            if not healthy(self._watched_linear):
                self._restore_model("non-finite weights")
                return
            watch.keep(self._pickled_model(), self.model_version)

    def _pickled_model(self) -> bytes:
        """The champion pickled (``models.dumps``'s bytes) for a good state or a
        checkpoint. Pickling the default way slows River's learning step by about 5% on
        CPython 3.11 for good (:mod:`streamheal.pickling`); a small model is read without
        that (:func:`pickling.dumps`), and when it could not be (a model loaded from a
        pickle, or new to this process), a copy of the same state that runs as fast as
        before is served from then on, its feature-name keys the objects the events use.
        A large model (a forest: megabytes) is pickled the default way: read attribute by
        attribute its pickle costs several times more, and so would its copy."""
        if self._model_pickle_bytes > COPY_MAX_BYTES:
            blob = models.dumps(self.model)
        else:
            blob, kept = pickling.dumps(self.model)
            # A champion this Engine has not served as a copy yet is copied whatever the
            # pickle says: the copy's feature-name keys are the guard's name objects, and
            # a pickle's bytes depend on which keys are one object (a snapshot's bytes
            # must not depend on what else this process pickled before).
            fresh = self.model is not self._served_copy
            if (fresh or not kept) and len(blob) <= COPY_MAX_BYTES:
                self.serving.repair(pickling.copy(self.model, self.guard.features))
                self._served_copy = self._watched = self.model
                self._watched_linear = linear_parts(self.model)
        self._model_pickle_bytes = len(blob)
        return blob

    def _restore_model(self, cause: str) -> None:
        watch = self.watch
        if watch.good is not None and watch.good_version == self.model_version:
            self.serving.repair(models.loads(watch.good))
            source = "last good state"
        else:
            self.serving.repair(self._fresh_model())
            source = "fresh model" + (" (warm-started)" if self.policy is not None else "")
        self._watched = self.model
        self._watched_linear = linear_parts(self.model)
        watch.since_good = 0
        watch.restores += 1
        self.counters.model_restores += 1
        action = Action(
            "restore",
            self.counters.feature_events,
            self.model_version,
            cause,
            {"restored_from": source},
        )
        action.partition = self._partition
        self._notices.append(action)

    def _fresh_model(self) -> Any:
        model = models.build_model(self.config.model, self.config.engine.seed)
        if self.policy is not None:
            for features, label in self.policy.recent:
                model.learn_one(features, label)
        return model

    def _watch(self, outputs: list[Output]) -> list[Output]:
        """Let the drift detectors see this batch; their declarations follow its outputs,
        and the policy's actions follow the declarations."""
        seen, self._seen = self._seen, Observation(block=self._seen.block)
        if self.drift is None or not (seen.rows or seen.learned_at):
            return outputs
        seen.partition = self._partition
        drifts = self.drift.observe(seen, self.model, self.model_version)
        outputs.extend(drifts)
        if self.policy is not None:
            errors = self.drift.errors
            for drift in drifts:
                # One drift, one response: confirmations by other detectors and drifts
                # explained by an open episode (caused_by) add evidence, not actions.
                if drift.status == "firing" and drift.role == "opened" and not drift.caused_by:
                    # After a rise of the error rate a new model learns (and is scored on)
                    # the rows since the rise, not the old concept's.
                    rose = drift.kind == "concept" and drift.signal == "error"
                    since = errors.since_change() if rose else None
                    self._act(self.policy.on_drift(drift, self.counters, since), outputs)
            warning = errors.take_warning()
            if warning:
                index, since = self.counters.feature_events, errors.since_change()
                self._act(self.policy.on_warning(warning, index, since), outputs)
        return outputs

    def _heal(self, features: dict[str, Any], label: Label, right: bool, outputs: list) -> None:
        """The policy's turn after a label: kept for warm starts; a challenger or a shadow
        (when there is one) is scored and learns too."""
        policy = self.policy
        policy.recent.append((features, label))
        if policy.busy:
            index = self.counters.feature_events
            self._act(policy.on_labeled(features, label, right, index), outputs)

    def _act(self, actions: list[Action], outputs: list[Output]) -> None:
        for action in actions:
            action.partition = self._partition
            outputs.append(action)
            if action.action == "reset" and self.drift is not None:
                self.drift.reset_reference()  # a fresh model gets a new reference

    def install(self, model: Any, version: int, cause: str) -> Action:
        """Serve ``model`` as ``version`` from the next event on (hot swap between batches);
        with a policy, the previous champion is kept as a shadow for automatic rollback."""
        index = self.counters.feature_events
        if self.policy is not None:
            action = self.policy.install(model, version, cause, index)
        else:
            self.serving.serve(model, version, action="install", cause=cause, index=index)
            action = Action("install", index, version, cause)
        action.partition = self._partition
        return action

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly here, as an independent copy: the models,
        the label-join buffer, counters, detector, policy and guard state."""
        return copy.deepcopy(self._live_state())

    def to_bytes(self, without_parts: bool = False) -> bytes:
        """The same state serialized (for checkpoints): pickled straight from the live
        objects, no copy first, so a checkpoint costs about a millisecond, not tens.
        ``without_parts``: the :meth:`stable_parts` are left out (named), for a checkpoint
        that writes them only when they change. The champion is pickled on its own
        (:meth:`_pickled_model`)."""
        state = self._live_state()
        state["model"] = self._pickled_model()  # bytes: load_state_dict reads either
        if without_parts:
            state["join"] = self.join.log_state()  # its sealed segments are parts
            if self.drift is not None:
                state["drift"] = self.drift.state_without_parts()
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def stable_parts(self) -> dict[str, Any]:
        """Large pieces of the state that change rarely or never (the detectors'
        references, the label join's sealed segments), by name; ``pickle.dumps`` each for
        :meth:`load_bytes`'s ``parts``. Call it before ``to_bytes(without_parts=True)``:
        it seals what the join's log has gathered since the last time."""
        parts = self.drift.stable_parts() if self.drift is not None else {}
        return {**parts, **self.join.checkpoint_segments()}

    def load_state_dict(
        self, state: dict[str, Any], detectors: bool = True, parts: dict[str, Any] | None = None
    ) -> None:
        """Continue from ``state``. The current config's settings apply (bounds, windows,
        policy rules), not the saved ones. ``detectors=False`` keeps this Engine's fresh
        detectors and policy (the rule for a checkpoint made under other detector or
        policy settings: the model, join buffer and counters carry over). ``parts``: the
        stable parts a state made ``without_parts`` names, unpickled."""
        model = state["model"]
        model = models.loads(model) if isinstance(model, bytes) else copy.deepcopy(model)
        self.serving.load(model, state["model_version"], state.get("lineage"))
        join = state["join"]
        if "format" not in join:  # the tables whole (state_dict, older checkpoints)
            self.join.load(copy.deepcopy(join))
        elif join["format"] in LOG_FORMATS_READ:  # a change log (to_bytes without parts)
            self.join.load_log(join, parts or {})
        else:
            raise ValueError(
                f"the label join's format {join['format']!r} is not one this build reads"
            )
        self.counters = copy.deepcopy(state["counters"])
        if detectors:
            if self.drift is not None and state["drift"] is not None:
                self.drift.load_state_dict(state["drift"])
            if self.policy is not None and state["policy"] is not None:
                self.policy.load_state_dict(state["policy"])
        self.guard.load_state_dict(state["guard"])
        self.clock.load_state_dict(state["clock"])
        if self.watch is not None and state["watch"] is not None:
            self.watch.load_state_dict(state["watch"])
        self._noticed = set(state["noticed"])

    def load_bytes(
        self, blob: bytes, detectors: bool = True, parts: dict[str, bytes] | None = None
    ) -> None:
        """Continue from :meth:`to_bytes` output (trusted bytes only: it is a pickle), with
        the pickled stable ``parts`` when it was made ``without_parts``."""
        unpickled = {name: _unpickle(part) for name, part in (parts or {}).items()}
        self.load_state_dict(_unpickle(blob), detectors=detectors, parts=unpickled)
        if detectors and self.drift is not None:
            self.drift.resolve_parts(unpickled)

    def _live_state(self) -> dict[str, Any]:
        policy = self.policy
        return {
            **self.serving.state(),  # model, model_version, lineage
            "join": self.join.state(),
            "counters": self.counters,
            "drift": vars(self.drift) if self.drift is not None else None,
            # Settings (config, model factory, the serving model) are not policy state.
            "policy": (
                {k: v for k, v in vars(policy).items() if k not in policy._settings}
                if policy is not None
                else None
            ),
            "guard": vars(self.guard),
            "clock": vars(self.clock),
            "watch": self.watch.state_dict() if self.watch is not None else None,
            "noticed": self._noticed,
        }

    @property
    def pending_labels(self) -> int:
        """Feature events waiting for their label (bounded by ``join_buffer_size`` and
        ``join_buffer_max_bytes``)."""
        return len(self.join)

    @property
    def pending_bytes(self) -> int:
        """The label-join buffer's estimated size in bytes."""
        return self.join.bytes

    # ---------------------------------------------------------------- per event
    def _score_one(self, event: Event, features: dict[str, Any], outputs: list[Output]) -> Any:
        return self._emit_prediction(event, self._proba_one(features), outputs)

    def _proba_one(self, features: dict[str, Any]) -> dict[Any, float]:
        proba = self.model.predict_proba_one(features)
        if self.watch is not None and not finite_probabilities(proba):
            self._restore_model("non-finite probabilities")
            proba = self.model.predict_proba_one(features)
        return _on_the_wire(proba) if self._binary else proba

    def _labeled_run(self, records: list[Event | Rejection], at: int, limit: int) -> list[Event]:
        """The feature events carrying a label that ``records[at:]`` starts with (at most
        ``limit``, the events left before the next check boundary), when nothing else
        has to happen between them: no label to join, no challenger or shadow learning
        beside the champion, no catch-up weight, the model watch settled on this model.
        Empty when the careful path must take ``records[at]``."""
        policy = self.policy
        if policy is not None and (policy.busy or policy.catch_up is not None):
            return []
        if self.watch is not None and self.model is not self._watched:
            return []
        accepts = self._accepts_label
        stop = min(len(records), at + limit)
        run_end = at
        while run_end < stop and _labeled_for_the_model(records[run_end], accepts):
            run_end += 1
        return records[at:run_end]  # type: ignore[return-value]

    def _learn_run(self, run: list[Event], outputs: list[Output]) -> int:
        """Score and learn a run from :meth:`_labeled_run`; return how many it took.

        River's calls run back to back, as in a hand-written loop, and the bookkeeping
        (prediction records, outcomes, counters) follows in a second pass: interleaved
        with it, River's own calls ran about 10% slower than in a bare loop (its working
        set left the caches), back to back about 5%.
        The order of everything observable is the per-event order: the second pass
        emits each event's prediction before its outcome, and a model check that may
        restore the model runs after its event's prediction, as on the careful path.
        A non-finite answer stops the run before its event (the careful path takes it)."""
        model = self.serving.model
        predict, learn = model.predict_proba_one, model.learn_one
        binary, watch = self._binary, self.watch
        linear = self._watched_linear
        interval = watch.interval if watch is not None else 0  # changes only at a keep
        answers: list[dict[Any, float]] = []
        labels: list[Label] = []  # as the model learned them (0/1 as False/True)
        check_last = False
        for event in run:
            features = event.features
            proba = predict(features)
            if watch is not None and not finite_probabilities(proba):
                break
            label = bool(event.label) if binary else event.label
            learn(features, label)
            answers.append(proba)
            labels.append(label)
            if watch is not None:
                if watch.since_good + 1 >= interval or not healthy(linear, weights=False):
                    check_last = True  # a good state to keep, or one to restore
                    break
                watch.since_good += 1
        taken = run[: len(answers)]
        if binary:  # _on_the_wire, inline: a call per event cost as much as the dict
            answers = [{0: p.get(False, 0.0), 1: p.get(True, 0.0)} for p in answers]
        self._emit_own_labeled(taken, answers, None, outputs)
        policy = self.policy
        recent = policy.recent if policy is not None else None
        kept = zip([event.features for event in taken], labels, strict=True)
        if check_last:  # after the last event's prediction, before it is kept
            if recent is not None:
                recent.extend(itertools.islice(kept, len(taken) - 1))
            self._check_model()
        if recent is not None:
            recent.extend(kept)
        return len(answers)

    # ---------------------------------------------------------------- mini batch
    def _proba_many(self, frame: Any, complete: list[bool]) -> tuple[list, list, list] | None:
        """Class probabilities of the batch at once: (classes, rows, best class per row).
        Rows with a missing cell are scored one by one later; only complete rows count for
        the finiteness check."""
        matrix = models.default_proba_many(self.model, frame)
        if matrix is not None:  # the default model, computed without River's frames
            classes = [0, 1]
        else:
            proba_frame = self.model.predict_proba_many(frame)
            if not len(proba_frame.columns):
                return None
            classes = list(proba_frame.columns)
            if self._binary:
                classes = [int(c) for c in classes]
            matrix = proba_frame.to_numpy()
        if self.watch is not None and not np.isfinite(matrix[np.asarray(complete)]).all():
            self._restore_model("non-finite probabilities")
            matrix = self.model.predict_proba_many(frame).to_numpy()
        return classes, matrix.tolist(), [classes[i] for i in matrix.argmax(axis=1).tolist()]

    # ------------------------------------------------------------------ shared
    def _emit_prediction(
        self, event: Event, proba: dict[Any, float], outputs: list, prediction: Any = None
    ) -> Any:
        counters = self.counters
        counters.feature_events += 1
        for name in event.missing:
            # Only names the guard admitted get their own counter: the Counter stays bounded.
            counters.missing[name if name in self.guard.features else OTHER_FEATURES] += 1
        if prediction is None and proba:
            prediction = _best_class(proba, self._binary)
        if self.drift is not None:
            seen = self._seen
            seen.rows.append(event.features)
            seen.top.append(proba[prediction] if proba else 0.0)
            seen.predicted.append(prediction)
            seen.offsets.append(event.source.offset)
        outputs.append(
            Prediction(
                event.id,
                event.ts,
                counters.feature_events - 1,
                prediction,
                proba,
                self.model_version,
                event.source,
                event.missing,
            )
        )
        return prediction

    def _emit_own_labeled(
        self,
        events: list[Event],
        probas: list[dict[Any, float]],
        best: list[Any] | None,
        outputs: list[Output],
    ) -> None:
        """:meth:`_emit_prediction` then :meth:`_account_own_label` for each of ``events``
        (feature events carrying a label the model takes, scored as ``probas``, their best
        classes ``best`` or None to pick them), in one pass: the same records, counts,
        outcomes and closed ids, without two calls and their lookups per event."""
        counters = self.counters
        index, right_total = counters.feature_events, 0
        version, binary = self.model_version, self._binary
        tally, admitted = counters.missing, self.guard.features
        watched = self.drift is not None
        top: list[float] = []
        predicted: list[Any] = []
        correct: list[int] = []
        append = outputs.append
        for event, proba, prediction in zip(
            events, probas, best if best is not None else itertools.repeat(None), strict=False
        ):
            for name in event.missing:
                tally[name if name in admitted else OTHER_FEATURES] += 1
            if prediction is None and proba:
                # _best_class, inline for a binary answer (keyed 0/1 on the wire)
                prediction = (
                    (1 if proba[1] > proba[0] else 0) if binary else _best_class(proba, False)
                )
            append(
                Prediction(
                    event.id, event.ts, index, prediction, proba, version, event.source,
                    event.missing,
                )
            )  # fmt: skip
            index += 1
            right = prediction == event.label
            right_total += right
            if watched:
                top.append(proba[prediction] if proba else 0.0)
                predicted.append(prediction)
                correct.append(int(right))
        first = counters.feature_events
        counters.labeled += index - first
        counters.feature_events = index
        counters.correct += right_total
        if watched:
            seen = self._seen
            seen.rows += [event.features for event in events]
            seen.top += top
            seen.predicted += predicted
            seen.offsets += [event.source.offset for event in events]
            seen.learned_at += range(first + 1, index + 1)  # each learned after its own
            seen.labels += [event.label for event in events]
            seen.correct += correct
        self.join.close_all([event.id for event in events], Reason.DUPLICATE_LABEL)

    def _account_own_label(self, event: Event, prediction: Any) -> bool:
        right = self._record_outcome(prediction, event.label)
        self.join.close(event.id, Reason.DUPLICATE_LABEL)
        return right

    def _join_label(self, event: Event, outputs: list[Output], step: _Step) -> None:
        join = self.join
        # Only a label that matches waiting features tells the time: labels for unknown ids
        # cannot move the clock (and expire what is waiting).
        if event.id in join:
            join.expire(self._now(event.ts))
        found = join.find(event.id, event.ts)
        if type(found) is not Pending:
            self._reject(event, found, f"no buffered features for id {event.id!r}", outputs)
            return
        label = self._model_label(event, outputs)
        if label is None:
            return  # the features keep waiting: a valid label may still come
        pending = join.take(event.id, event.ts)
        self.counters.labels_joined += 1
        right = self._record_outcome(pending.prediction, event.label)
        step.learn(pending.features, label, right, outputs, joined=True)

    def _accepts_label(self, label: Label) -> bool:
        if self._binary:
            return label in (0, 1)  # True/False compare equal to 1/0
        return self.guard.label_kind is None or label_kind(label) == self.guard.label_kind

    def _model_label(self, event: Event, outputs: list[Output]) -> Label | None:
        label = event.label
        if not self._accepts_label(label):
            detail = (
                f"the binary model takes labels 0/1 or true/false, got {label!r}"
                if self._binary
                else f"this partition's labels are {self.guard.label_kind}s, got {label!r}"
            )
            self._reject(event, Reason.BAD_LABEL, detail, outputs)
            return None
        return bool(label) if self._binary else label

    def _record_outcome(self, prediction: Any, label: Label) -> bool:
        counters = self.counters
        counters.labeled += 1
        right = prediction == label
        counters.correct += right
        if self.drift is not None:
            seen = self._seen
            seen.learned_at.append(counters.feature_events)
            seen.labels.append(label)
            seen.correct.append(int(right))
        return right

    def _remember(self, event: Event, features: dict[str, Any], prediction: Any) -> None:
        self.join.remember(
            event.id, event.ts, len(event.raw), features, prediction, self._now(event.ts)
        )

    def _reject(self, event: Event, reason: Reason, detail: str, outputs: list[Output]) -> None:
        key = event.id.encode()
        self._pass_rejection(Rejection(reason, detail, event.source, event.raw, key), outputs)

    def _pass_rejection(self, rejection: Rejection, outputs: list[Output]) -> None:
        self.counters.dead_lettered[rejection.reason] += 1
        outputs.append(rejection)


def _best_class(proba: dict[Any, float], binary: bool) -> Any:
    if binary:  # ties go to 0, as max() over {0: p, 1: q} would
        return 1 if proba[1] > proba[0] else 0
    return max(proba, key=proba.__getitem__)


def _on_the_wire(proba: dict[Any, float]) -> dict[Any, float]:
    """A River binary answer (keyed False/True) as the wire speaks it: keyed 0/1."""
    return {0: proba.get(False, 0.0), 1: proba.get(True, 0.0)}


def _notice_marks(guard: InputGuard) -> tuple[int, int, bool]:
    """How far the guard's notices have come: first mismatches, first clips, cap reached."""
    return len(guard.first_mismatch), len(guard.first_clip), guard.cap_reached


def _any_missing(records: list[Event | Rejection]) -> bool:
    return any(type(r) is not Rejection and r.features is not None and r.missing for r in records)


def _feature_rows(records: list[Event | Rejection]) -> list[dict[str, Any]]:
    """The features of the feature events among ``records``, in order."""
    return [r.features for r in records if type(r) is not Rejection and r.features is not None]


# Modules renamed since checkpoints were first written: a checkpoint pickled before the
# move still restores (the learned state survives an upgrade).
_MOVED_MODULES = {"streamheal.detectors.model": "streamheal.detectors.predictions"}


class _CheckpointUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_MOVED_MODULES.get(module, module), name)


def _labeled_for_the_model(record: Event | Rejection, accepts: Callable[[Label], bool]) -> bool:
    """A feature event carrying a label the model takes (``accepts``: the Engine's
    ``_accepts_label``): what a run of labeled events is made of."""
    return (
        type(record) is not Rejection
        and record.features is not None
        and record.label is not None
        and accepts(record.label)
    )


def _scored(record: Event | Rejection, accepts: Callable[[Label], bool]) -> bool:
    """A feature event the record loop scores: without a label, or with one the model
    takes (``accepts``: the Engine's ``_accepts_label``); one it refuses is dead-lettered
    whole."""
    return (
        type(record) is not Rejection
        and record.features is not None
        and (record.label is None or accepts(record.label))
    )


def _unpickle(blob: bytes) -> Any:
    return _CheckpointUnpickler(io.BytesIO(blob)).load()


class _Step(Protocol):
    """How :meth:`Engine._dispatch` scores and learns, and what it does at a boundary."""

    watch_every: int

    def score(self, event: Event, features: dict[str, Any], outputs: list[Output]) -> Any: ...

    def learn(
        self, features: dict[str, Any], label: Label, right: bool, outputs: list, joined: bool
    ) -> None: ...

    def at_boundary(self, outputs: list[Output]) -> None: ...

    def finish(self, outputs: list[Output]) -> None: ...

    def take_run(
        self, records: list[Event | Rejection], at: int, limit: int, outputs: list[Output]
    ) -> int:
        """Score and learn the labeled events ``records[at:]`` starts with (at most
        ``limit``) as the record loop would; return how many (0: the loop takes the next
        one itself)."""
        ...


class _PerEvent:
    """Score and learn each event as it comes; the detectors (and the policy after them)
    look at every check boundary, so a drift is acted on at the same event however the
    stream was cut into batches."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.watch_every = engine._watch_every

    def score(self, event: Event, features: dict[str, Any], outputs: list[Output]) -> Any:
        engine = self.engine
        return engine._emit_prediction(event, engine._proba_one(features), outputs)

    def learn(
        self, features: dict[str, Any], label: Label, right: bool, outputs: list, joined: bool
    ) -> None:
        engine = self.engine
        engine._learn_one(features, label)
        if engine.policy is not None:
            engine._heal(features, label, right, outputs)

    def at_boundary(self, outputs: list[Output]) -> None:
        # Checks (and the model-drift re-scoring, with the model exactly as it is at this
        # event) run here, so results do not depend on how batches were cut.
        self.engine._watch(outputs)

    def finish(self, outputs: list[Output]) -> None:
        pass

    def take_run(
        self, records: list[Event | Rejection], at: int, limit: int, outputs: list[Output]
    ) -> int:
        engine = self.engine
        run = engine._labeled_run(records, at, limit)
        return engine._learn_run(run, outputs) if run else 0


class _MiniBatch:
    """Score a segment's feature events at once, then learn its labels at once.

    A segment is the batch, cut where the model-drift check falls due
    (``detectors.model_check_every``): that check re-scores with the model as it is there,
    and the rest of the batch is scored by the model after it (and after any action the
    check led to). River's batch methods cannot skip a missing cell as the per-event ones
    do, so a row with a missing value is scored and learned per event instead.
    """

    def __init__(self, engine: Engine, records: list[Event | Rejection]) -> None:
        self.engine = engine
        drift = engine.drift
        self.watch_every = engine.config.detectors.model_check_every if drift else 1 << 62
        # Exactly the feature events the dispatch will score, in order.
        self.events = [r for r in records if _scored(r, engine._accepts_label)]
        self.scored = 0  # feature events scored so far: the next one's row is this
        # Each scored row's probabilities and best class, set with the mask `complete` by
        # the same _score_from (a row marked complete has them).
        self.probas: list[dict[Any, float]] = []
        self.best: list[Any] = []
        self._score_from(0)
        self._begin_segment()

    def _score_from(self, first: int) -> None:
        """Score events[first:] at once; rows that cannot be batched are left to
        per-event scoring (``complete`` False)."""
        self.first = first
        events = self.events[first:]
        self.frame = None
        self.complete = [False] * len(events)  # no columns, or mixed types: row by row
        if not events:
            return
        rows = [e.features for e in events]
        frame = self.frame = models.feature_frame(rows, self.engine._seen.block)
        if models.batchable(frame):
            complete = frame.notna().all(axis=1).tolist()
            scores = self.engine._proba_many(frame, complete)
            if scores is not None:  # None: the model knows no class yet (untrained OvR)
                self.complete = complete
                classes, rows, self.best = scores
                if len(classes) == 2:  # the common case: a dict display is the cheapest
                    first, second = classes
                    self.probas = [{first: p, second: q} for p, q in rows]
                else:
                    self.probas = [dict(zip(classes, row, strict=True)) for row in rows]

    def _begin_segment(self) -> None:
        policy = self.engine.policy
        # With a challenger or a shadow, the policy needs every labeled row with its outcome.
        self.track = policy is not None and policy.busy
        self.batch_rows: list[int] = []  # rows of `frame` learned at once
        self.batch_labels: list[Label] = []
        self.late: list[tuple[dict[str, Any], Label]] = []  # labels joining earlier events
        self.one_by_one: list[tuple[dict[str, Any], Label]] = []  # rows with missing cells
        self.learned: list[tuple[dict[str, Any], Label]] = []  # in stream order
        self.deferred: list[tuple[dict[str, Any], Label, bool]] = []

    def score(self, event: Event, features: dict[str, Any], outputs: list[Output]) -> Any:
        engine = self.engine
        k = self.scored - self.first
        self.scored += 1
        if self.complete[k]:
            return engine._emit_prediction(event, self.probas[k], outputs, self.best[k])
        return engine._emit_prediction(event, engine._proba_one(features), outputs)

    def take_run(
        self, records: list[Event | Rejection], at: int, limit: int, outputs: list[Output]
    ) -> int:
        """Take the feature events ``records[at:]`` starts with (at most ``limit``) that
        carry a label the model takes and were scored at once: each one's prediction,
        outcome and closed id, and its row queued for learning, exactly as the record
        loop's careful path does them, without its per-event dispatch through the step.
        Returns how many; 0 leaves ``records[at]`` to the careful path, as does anything
        the policy must see row by row."""
        if self.track or not self.complete:
            return 0
        engine = self.engine
        accepts, complete = engine._accepts_label, self.complete
        first = k = self.scored - self.first
        end = at
        stop = min(len(records), at + limit)
        while end < stop and _labeled_for_the_model(records[end], accepts) and complete[k]:
            end += 1
            k += 1
        if k == first:
            return 0
        run: list[Event] = records[at:end]  # type: ignore[assignment]
        engine._emit_own_labeled(run, self.probas[first:k], self.best[first:k], outputs)
        labels = [bool(e.label) for e in run] if engine._binary else [e.label for e in run]
        self.batch_rows += range(first, k)
        self.batch_labels += labels
        self.learned += zip([e.features for e in run], labels, strict=True)
        self.scored += k - first
        return k - first

    def learn(
        self, features: dict[str, Any], label: Label, right: bool, outputs: list, joined: bool
    ) -> None:
        k = self.scored - 1 - self.first
        if joined:
            self.late.append((features, label))
        elif self.complete[k]:
            self.batch_rows.append(k)
            self.batch_labels.append(label)
        else:
            self.one_by_one.append((features, label))
        self.learned.append((features, label))
        if self.track:
            self.deferred.append((features, label, right))

    def at_boundary(self, outputs: list[Output]) -> None:
        engine = self.engine
        self.finish(outputs)
        engine._watch(outputs)
        if self.scored < len(self.events):
            self._score_from(self.scored)
        self._begin_segment()

    def finish(self, outputs: list[Output]) -> None:
        """Learn the segment: its complete rows (and late rows that fit) at once, the rest
        one by one; then the policy's turn."""
        import pandas as pd  # only mini-batch mode needs a DataFrame

        engine = self.engine
        model = engine.model
        parts, labels = [], []
        frame = self.frame
        if self.batch_rows:
            whole_frame = len(self.batch_rows) == len(frame)
            parts.append(frame if whole_frame else frame.iloc[self.batch_rows])
            labels.extend(self.batch_labels)
        one_by_one = self.one_by_one
        late = self.late
        if late:
            late_frame = models.feature_frame([x for x, _ in late])
            if models.batchable(late_frame):
                whole = late_frame.notna().all(axis=1).tolist()
            else:
                whole = [False] * len(late)
            if parts:  # stacked under this batch's rows, a late row needs the same columns
                columns = set(frame.columns)
                whole = [w and columns == x.keys() for w, (x, _) in zip(whole, late, strict=True)]
            for (features, label), ok in zip(late, whole, strict=True):
                if not ok:
                    one_by_one.append((features, label))
            if any(whole):
                parts.append(late_frame[whole])
                labels.extend(label for (_, label), ok in zip(late, whole, strict=True) if ok)
        if parts:
            learn_frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
            model.learn_many(learn_frame.reset_index(drop=True), pd.Series(labels))
        for features, label in one_by_one:
            model.learn_one(features, label)
        if engine.watch is not None and (parts or one_by_one):
            engine._check_model(learned=len(labels) + len(one_by_one))
        policy = engine.policy
        if policy is None:
            return
        # The champion learned the segment at once; the policy's turn comes after it.
        if self.track:
            for features, label, right in self.deferred:
                engine._heal(features, label, right, outputs)
        else:  # nothing to score: just keep the latest labeled rows for warm starts
            keep = policy.recent.maxlen or 0
            policy.recent.extend(self.learned[-keep:] if keep else ())
