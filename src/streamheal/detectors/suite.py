"""All drift detectors of one partition, under one family-wise false-alarm budget.

The Engine hands the suite, once per batch, what it saw: the scored rows, each one's
top-class probability, and the labels it learned from (with whether the prediction was
right). The suite splits that at check boundaries (every ``check_every`` feature
events), so its decisions do not depend on how the stream was cut into batches, and
returns a :class:`Drift` for every declared or resolved drift.

The budget, ``false_alarms_per_10k`` expected false declarations per 10,000 stationary
events, is shared out: 30% to the per-feature CUSUMs (their threshold comes from
Siegmund's run-length approximation, Bonferroni over features and sides), 5% each to the
CUSUMs on the label mix and on the predicted-class mix (:mod:`.shares`, the fast prior
and prediction signals), 40% to the windowed tests (a per-test level of
``share / checks per 10k / tests per check``), 10% to the concept detector (ADWIN's or
HDDM_A's confidence) and 10% to the confidence Page-Hinkley (threshold from config).
M-of-N confirmation only lowers the rate further.
"""

from __future__ import annotations

import copy
import json
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamheal.block import FeatureBlock
from streamheal.config import DetectorsConfig
from streamheal.detectors import stats
from streamheal.detectors.alarm import Alarm
from streamheal.detectors.base import Evidence, Level, Stateful
from streamheal.detectors.concept import ErrorMonitor
from streamheal.detectors.covariate import CovariateMonitor
from streamheal.detectors.cusum import threshold_for_run_length
from streamheal.detectors.episodes import EpisodeBook
from streamheal.detectors.predictions import PredictionMonitor
from streamheal.detectors.prior import LabelMonitor
from streamheal.detectors.reference import Reference
from streamheal.detectors.shares import ShareMonitor

SEQUENTIAL_SHARE = 0.3
SHARES_SHARE = 0.05  # each: the label mix, the predicted-class mix
WINDOWED_SHARE = 0.4
CONCEPT_SHARE = 0.1
ADWIN_CLOCK = 32  # River's ADWIN tests for a cut every 32 updates
SPLIT_HALF_ALPHA = 0.01  # a reference whose halves differ at this level (all features) slides
# A model is young for this many windows after it starts serving: a fall of its error rate
# is not reported, and its predicted-class mix is not watched (it moves as the model learns).
LEARNING_EVENTS = 4
# The predicted-class reference rolls forward every this many windows while it is quiet.
CLASS_MIX_ROLL = 5


@dataclass(frozen=True)
class PartRef:
    """Where a stable part (see :meth:`DriftSuite.stable_parts`) sits in a saved state."""

    name: str


@dataclass
class Drift:
    """A declared (``firing``) or ended (``resolved``) drift, as written to the alerts topic."""

    status: str
    kind: str
    signal: str
    feature: str | None
    detector: str
    statistic: float
    p_value: float | None
    threshold: float | None
    started_index: int | None
    confirmed_index: int
    offset: int | None
    partition: int | None
    model_version: int
    reference: dict[str, Any] = field(default_factory=dict)
    current: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # The drift episode it belongs to, its role in it, and what explains it (episodes.py).
    episode: str | None = None
    role: str | None = None
    caused_by: str | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.signal}:{self.feature or '-'}:{self.detector}"


@dataclass
class Observation:
    """What the Engine saw in one batch, in order."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    top: list[float] = field(default_factory=list)
    predicted: list[Any] = field(default_factory=list)  # the predicted class of each row
    offsets: list[int] = field(default_factory=list)
    # Each label learned, in learning order, as three columns: the feature events seen
    # when it was learned, the label, and 1 if the prediction was right.
    learned_at: list[int] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    correct: list[int] = field(default_factory=list)
    partition: int | None = None
    # The batch's features as one matrix, when the Engine could make it: rows are found
    # in it by identity, so encoding them again is skipped.
    block: FeatureBlock | None = None


class DriftSuite(Stateful):
    def __init__(self, cfg: DetectorsConfig) -> None:
        self.cfg = cfg
        self.index = 0  # feature events observed
        self.reference_rows: list[dict[str, Any]] = []
        self.reference_slides = 0  # times the reference slid past an unsteady start
        self.covariate: CovariateMonitor | None = None
        self.labels = LabelMonitor(cfg.reference_size, cfg.window_size)
        share_budget = SHARES_SHARE * cfg.false_alarms_per_10k
        size, window, k = cfg.reference_size, cfg.window_size, cfg.cusum_k
        self.label_mix = ShareMonitor("prior", "label", size, window, k, share_budget)
        self.class_mix = ShareMonitor("model", "predicted_class", size, window, k, share_budget)
        self.class_mix_version: int | None = None  # the model whose predictions it watches
        self.model_since = 0  # the feature event index from which the current model serves
        self.class_mix_since = 0  # when the predicted-class reference was last started
        concept_delta = CONCEPT_SHARE * cfg.false_alarms_per_10k / (10_000 / ADWIN_CLOCK)
        self.errors = ErrorMonitor(
            cfg.concept_detector, concept_delta, cfg.window_size, cfg.warning_delta
        )
        self.predictions = PredictionMonitor(
            cfg.model_sample_size, cfg.window_size, cfg.confidence_threshold
        )
        self.alarms: dict[tuple, Alarm] = {}
        self.episodes = EpisodeBook()
        self.alpha = 0.0
        # Replay sets a bounded deque here to log every windowed p-value (for heat maps);
        # decisions are the same with or without it.
        self.check_log: deque[tuple[int, str | None, str, float]] | None = None
        if cfg.reference_profile:
            profile = json.loads(Path(cfg.reference_profile).read_text())
            self._start(Reference.from_profile(profile, cfg.psi_bins), rows=[])

    # ------------------------------------------------------------------ public
    def observe(self, seen: Observation, model: Any, model_version: int) -> list[Drift]:
        """Feed one batch; return the drifts declared or resolved at its checks."""
        cfg, drifts = self.cfg, []
        rows, top, offsets = seen.rows, seen.top, seen.offsets
        if model_version != self.class_mix_version:
            # Another model predicts another mix: its reference starts over.
            self.class_mix.reset()
            self.class_mix_version = model_version
            self.model_since = self.index
            self.class_mix_since = self.index
        encoded = None
        learned, o = seen.learned_at, 0
        start = 0
        while start < len(rows) or o < len(learned):
            boundary = (self.index // cfg.check_every + 1) * cfg.check_every
            if self.covariate is None:
                boundary = min(boundary, self.index + cfg.reference_size - len(self.reference_rows))
            end = min(len(rows), start + boundary - self.index)
            chunk = rows[start:end]
            # The predicted-class mix is watched once the model has settled: a young
            # model's predictions move because it learns (decided before this chunk, so
            # the answer does not depend on where a batch ended).
            settled = self.covariate is not None and (
                self.index - self.model_since >= LEARNING_EVENTS * cfg.window_size
            )
            if (
                settled
                and self.index - self.class_mix_since >= CLASS_MIX_ROLL * cfg.window_size
                and self.index % cfg.check_every == 0
                and not self._firing(("model", "predicted_class", None, "cusum"))
            ):
                # A model that keeps learning moves its own predicted mix slowly: the
                # reference rolls forward while nothing fires, so only a sudden move counts.
                self.class_mix.reset()
                self.class_mix_since = self.index
            if self.covariate is None:
                self.reference_rows.extend(chunk)
                if len(self.reference_rows) >= cfg.reference_size:
                    reference = Reference.from_rows(
                        self.reference_rows, cfg.max_features, cfg.max_categories, cfg.psi_bins
                    )
                    if self._steady(reference):
                        self._start(reference, self.reference_rows)
                        encoded = None
                    else:  # an unusual start: keep the later half, collect the rest again
                        self.reference_rows = self.reference_rows[len(self.reference_rows) // 2 :]
                        self.reference_slides += 1
            elif chunk:
                if encoded is None:  # encode the rest of the batch once, then slice it
                    matrix, scores, codes = self._encode(rows[start:], seen.block)
                    self.covariate.begin(scores, self.index)
                    encoded = (start, matrix, codes)
                at = start - encoded[0]
                self.covariate.observe(
                    encoded[1][at : at + len(chunk)], encoded[2][at : at + len(chunk)]
                )
            if chunk:
                self.predictions.observe(chunk, top[start:end], self.index)
                if settled and seen.predicted:
                    self.class_mix.observe(
                        seen.predicted[start:end], range(self.index, self.index + end - start)
                    )
            self.index += len(chunk)
            # Labels learned before feature event `index` belong to this chunk (outcomes
            # are in learning order, so their event counts never fall: one bisection).
            stop = len(learned) if end == len(rows) else bisect_right(learned, self.index, lo=o)
            learned_at, labels, correct = learned[o:stop], seen.labels[o:stop], seen.correct[o:stop]
            errors = [1 - right for right in correct]
            o = stop
            self.labels.observe(labels)
            self.label_mix.observe(labels, learned_at)
            self.errors.observe(errors, learned_at)
            self.predictions.observe_outcomes(correct)
            start = end
            if chunk and self.index % cfg.check_every == 0:
                self._adopt_prediction_reference()
                offset = offsets[end - 1] if offsets else None
                drifts += self._check(model, model_version, offset, seen.partition)
            if not chunk and o >= len(learned):
                break
        return drifts

    def _encode(
        self, rows: list[dict[str, Any]], block: FeatureBlock | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`CovariateMonitor.encode` of ``rows``. Rows that are a run of the batch's
        ``block`` (per-event mode observes a batch check by check, a run at a time) are
        sliced from the whole block's encoding, made once per batch and monitor."""
        covariate = self.covariate
        if block is None:
            return covariate.encode(rows)
        run = block.run_of(rows)
        if run is None:
            return covariate.encode(rows, block.take(rows, covariate.reference.numeric_names))
        encoded = block.memo.get("covariate")
        if encoded is None or encoded[0] is not covariate:
            numeric = block.columns(covariate.reference.numeric_names)
            encoded = block.memo["covariate"] = (covariate, *covariate.encode(block.rows, numeric))
        _, matrix, scores, codes = encoded
        return matrix[run], scores[run], codes[run]

    def profile(self) -> dict[str, Any] | None:
        """The reference as JSON, for ``detectors.reference_profile`` (None while warming up)."""
        return self.covariate.reference.profile() if self.covariate else None

    def reset_reference(self) -> None:
        """Learn a new reference from the next ``reference_size`` events (after a reset or an
        accepted drift)."""
        self.covariate = None
        self.reference_rows = []
        self.reference_slides = 0
        self.labels.reset()
        self.label_mix.reset()
        self.class_mix.reset()

    # ------------------------------------------------------------ checkpoint parts
    def stable_parts(self) -> dict[str, Any]:
        """The largest pieces of this state, replaced only when a new reference is taken
        (a checkpoint writes them again only when they are other objects than last time)."""
        parts: dict[str, Any] = {"prediction_reference": self.predictions.reference_rows}
        if self.covariate is not None:
            parts["covariate_reference"] = self.covariate.reference
        return parts

    def state_without_parts(self) -> dict[str, Any]:
        """This suite's live state with each stable part as a :class:`PartRef` (shallow
        copies of the two monitors that hold them; nothing live is changed)."""
        state = dict(vars(self))
        predictions = copy.copy(self.predictions)
        predictions.reference_rows = PartRef("prediction_reference")
        state["predictions"] = predictions
        if self.covariate is not None:
            covariate = copy.copy(self.covariate)
            covariate.reference = PartRef("covariate_reference")
            state["covariate"] = covariate
        return state

    def resolve_parts(self, parts: dict[str, Any]) -> None:
        """Put the parts back where a state from :meth:`state_without_parts` named them."""
        try:
            if type(self.predictions.reference_rows) is PartRef:
                self.predictions.reference_rows = parts["prediction_reference"]
            if self.covariate is not None and type(self.covariate.reference) is PartRef:
                self.covariate.reference = parts["covariate_reference"]
        except KeyError as err:
            raise ValueError(f"the state names part {err.args[0]!r}, which was not given") from None

    @property
    def firing(self) -> list[tuple]:
        return [key for key, alarm in self.alarms.items() if alarm.firing]

    # ---------------------------------------------------------------- internals
    def _steady(self, reference: Reference) -> bool:
        """Split-half check of a new reference: does each numeric feature's first half look
        like its second half (KS, family-wise level ``SPLIT_HALF_ALPHA`` over features)? A
        stream that starts unusually (a warm-up, a backlog of odd events) would otherwise be
        the yardstick for everything after it and alarm on a feature that never drifts."""
        if self.reference_slides >= self.cfg.reference_stability_checks:
            return True  # checks used up (or off): take what there is
        rows = self.reference_rows
        half = len(rows) // 2
        early = Reference.sorted_numbers(rows[:half], self.cfg.max_features)
        late = Reference.sorted_numbers(rows[half:], self.cfg.max_features)
        # A name seen in one half only (a feature that appeared mid-way) has nothing to
        # compare: the halves of the names both have are compared.
        names = [n for n in reference.numeric_names if n in early and n in late]
        level = SPLIT_HALF_ALPHA / max(len(names), 1)
        for name in names:
            a, b = early[name], late[name]
            if len(a) >= 20 and len(b) >= 20 and stats.ks_2samp(a, b)[1] < level:
                return False
        return True

    def _start(self, reference: Reference, rows: list[dict[str, Any]]) -> None:
        cfg = self.cfg
        n_series = max(len(reference.numeric_names), 1)
        rate = cfg.false_alarms_per_10k / 10_000
        run_length = 2 * n_series / (SEQUENTIAL_SHARE * rate)  # two sides per feature
        threshold = threshold_for_run_length(cfg.cusum_k, run_length)
        self.covariate = CovariateMonitor(reference, cfg.window_size, cfg.cusum_k, threshold)
        self.predictions.set_reference(rows or self.predictions.reference_rows)
        self.reference_rows = []
        # Bonferroni over the tests of a check and over the checks in 10,000 events.
        tests_per_10k = (self.covariate.windowed_tests + 1) * 10_000 / cfg.window_check_every
        tests_per_10k += self.predictions.windowed_tests * 10_000 / cfg.model_check_every
        self.alpha = WINDOWED_SHARE * cfg.false_alarms_per_10k / tests_per_10k

    def _adopt_prediction_reference(self) -> None:
        # A stored reference_profile describes the features, not this model's predictions:
        # the first rows scored after it become the predictions' reference (taken at a
        # check, so the same rows however the stream was cut). Without one, the model and
        # confidence tests would never run while their share of the budget is set aside.
        predictions = self.predictions
        if (
            self.covariate is not None
            and not predictions.reference_rows
            and len(predictions.current_rows) == predictions.sample_size
        ):
            predictions.set_reference(list(predictions.current_rows))

    def _check(
        self, model: Any, version: int, offset: int | None, partition: int | None
    ) -> list[Drift]:
        cfg = self.cfg
        covariate = self.covariate
        # Falls of the error rate are watched once the serving model has settled (decided
        # at checks, so the same events are watched however the stream was cut).
        self.errors.watch_falls(self.index - self.model_since >= LEARNING_EVENTS * cfg.window_size)
        if covariate is None or not covariate.warm:
            if covariate is not None:
                covariate.cusum.end_check()  # keep the CUSUM's per-check peaks fresh
            for mix in (self.label_mix, self.class_mix):
                if mix.cusum is not None:
                    mix.cusum.end_check()
            return []
        windowed = self.index % cfg.window_check_every == 0
        if not windowed and self.index % cfg.model_check_every and self._quiet_check():
            return []
        # Clear readings matter only where an alarm exists to be confirmed or cleared.
        alarms = self.alarms
        watched = {key[2] for key in alarms if key[3] == "cusum"}
        evidence = covariate.sequential_evidence(watched)
        name = self.errors.name
        evidence += self.errors.evidence(
            ("concept", "error", None, name) in alarms,
            ("concept", "error_fall", None, name) in alarms,
        )
        evidence += self.predictions.sequential_evidence(
            ("confidence", "confidence", None, "page_hinkley") in alarms
        )
        for mix in (self.label_mix, self.class_mix):
            evidence += mix.evidence((mix.kind, mix.signal, None, "cusum") in alarms)
        args = (self.alpha, cfg.clear_p_value, cfg.psi_threshold)
        if windowed:
            logging = self.check_log is not None
            windowed = covariate.window_evidence(
                *args, watched=None if logging else set(self.alarms)
            )
            if logging:
                self.check_log.extend(
                    (self.index, e.feature, e.detector, e.p_value)
                    for e in windowed
                    if e.signal == "feature" and e.p_value is not None
                )
            evidence += windowed
            evidence += self.labels.window_evidence(*args)
        if self.index % cfg.model_check_every == 0:
            evidence += self.predictions.window_evidence(model, *args)
        drifts = []
        rested = []
        for item in evidence:
            if item.level == Level.CLEAR and item.key not in self.alarms:
                continue  # nothing to confirm or to clear
            alarm = self._alarm(item)
            change = alarm.update(item.level, self.index)
            if change is None:
                if item.level == Level.CLEAR and alarm.at_rest(self.index):
                    rested.append(item.key)
                continue
            drifts.append(self._drift(item, change, version, offset, partition))
            if change == "firing" and item.detector == "cusum":
                # Re-arm: a persisting shift re-raises (and keeps the alarm firing).
                if item.signal == "label":
                    self.label_mix.rearm()
                elif item.signal == "predicted_class":
                    self.class_mix.rearm()
                else:
                    covariate.reset_sequential(item.feature)
        self._forget(rested)
        # Causes first, so a consequence declared at the same check finds its cause open.
        for drift in sorted(drifts, key=lambda d: d.kind not in ("covariate", "concept")):
            drift.episode, drift.role, drift.caused_by = self.episodes.assign(
                drift.kind, drift.signal, drift.feature, drift.detector, drift.status, self.index
            )
        if cfg.roll_reference_on_drift and any(
            d.status == "firing" and d.kind == "covariate" for d in drifts
        ):
            self.reset_reference()
            for key in [k for k in self.firing if k[0] == "covariate"]:
                self.alarms.pop(key)
            self.episodes.close_kind("covariate")
        return drifts

    def _quiet_check(self) -> bool:
        """Close a check whose readings are all clear, as the full check would, without
        making them (most checks of a stationary stream): each CUSUM's check is closed,
        and each alarm the full check would feed a clear reading gets it. False, with
        nothing changed, when a reading is not clear, a detector fired, or an alarm
        could change state (firing, or a raise on record): the full check runs then."""
        errors = self.errors
        if errors.fired_at is not None or errors.fell_at is not None:
            return False
        mixes = [mix for mix in (self.label_mix, self.class_mix) if mix.cusum is not None]
        cusums = [self.covariate.cusum, self.predictions.page_hinkley]
        cusums += [mix.cusum for mix in mixes]
        if not all(cusum.all_clear() for cusum in cusums):
            return False
        alarms = self.alarms
        fed = [(key, alarm) for key in self._clear_readings(mixes) if (alarm := alarms.get(key))]
        if not all(alarm.takes_clear_quietly() for _, alarm in fed):
            return False
        for _, alarm in fed:
            alarm.update(Level.CLEAR, self.index)
        self._forget([key for key, alarm in fed if alarm.at_rest(self.index)])
        for cusum in cusums:
            cusum.end_check()
        return True

    def _clear_readings(self, mixes: list[ShareMonitor]) -> list[tuple]:
        """The keys of the readings a full sequential check makes when all are clear and
        every alarm is watched (only those with an alarm are fed to it)."""
        name = self.errors.name
        keys = [
            ("covariate", "feature", feature, "cusum")
            for feature in self.covariate.reference.numeric_names
        ]
        keys += [("concept", "error", None, name), ("concept", "error_fall", None, name)]
        keys.append(("confidence", "confidence", None, "page_hinkley"))
        keys += [(mix.kind, mix.signal, None, "cusum") for mix in mixes]
        return keys

    def _forget(self, keys: list[tuple]) -> None:
        """Drop alarms at rest: each would only be fed clear readings, check after check,
        for a signal that once read "hold" (in a long stationary run, about every feature's
        KS and CUSUM: 59 alarms after 100,000 bench events, each one an Evidence and an
        update per check). A new alarm acts exactly as the dropped one would
        (:meth:`Alarm.at_rest`), so no output changes."""
        for key in keys:
            del self.alarms[key]

    def _firing(self, key: tuple) -> bool:
        alarm = self.alarms.get(key)
        return alarm is not None and alarm.firing

    def _alarm(self, item: Evidence) -> Alarm:
        alarm = self.alarms.get(item.key)
        if alarm is None:
            cfg = self.cfg
            one_shot = item.detector in ("adwin", "page_hinkley", "ddm", "hddm_a")
            confirm = cfg.concept_confirm_checks if one_shot else cfg.confirm_checks
            alarm = self.alarms[item.key] = Alarm(confirm, cfg.confirm_window, cfg.cooldown_events)
        return alarm

    def _drift(
        self, item: Evidence, change: str, version: int, offset: int | None, partition: int | None
    ) -> Drift:
        alarm = self.alarms[item.key]
        started = item.started_index if item.started_index is not None else alarm.first_raise_index
        reference, current = item.summaries()
        return Drift(
            change,
            item.kind,
            item.signal,
            item.feature,
            item.detector,
            _round(item.statistic),
            _round(item.p_value),
            _round(item.threshold),
            started,
            self.index,
            offset,
            partition,
            version,
            reference,
            current,
            {**item.extra, **self.predictions.accuracy_report()},
        )


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")
