"""Self-healing: what the Engine does when a drift is confirmed, and how models change hands.

Per drift kind, ``policy.<kind>`` lists actions:

- ``snapshot``: emit the current champion (bytes + why) for the registry;
- ``reset``: replace the champion by a fresh model (warm-started on the last
  ``warm_start`` labeled events), keeping the old one as a shadow for rollback;
- ``fork``: start a challenger that learns from the same labels while the champion keeps
  serving; both are scored on every labeled event. The challenger is promoted when it
  beats the champion over the last ``promotion_window`` labeled events (by a margin, or a
  one-sided two-proportion z-test), with at least ``promotion_min_samples``; it is
  discarded after ``challenger_timeout`` labeled events otherwise.

A model started after a drift is young when it is needed most. With ``catch_up_weight``
above 1 (off by default) and a learner that counts evidence (River's Hoeffding trees), it
*catches up*: its first ``catch_up_events`` labeled events (warm start, trial as a
challenger, first events as champion) are learned with sample weight
``catch_up_weight``, so it splits that many times sooner, as ARF's online bagging does
for its trees. The count left travels with the challenger into promotion
and is tied to the champion's version: a rollback or an installed model learns at
weight 1.

The Policy changes the champion only through the partition's
:class:`~streamheal.serving.ServingModel`, which issues the version numbers.

After a reset, a promotion or a model installed from outside (registry promote), the
previous champion stays as a *shadow* for ``rollback_window`` labeled events; if it beats
the new champion by ``rollback_margin`` it comes back (``rollback``). During that
probation no new challenger or reset starts: a drift then is most likely the new
champion's own doing, and the rollback decision comes first. Every change is an
:class:`Action` output; the Engine stays pure (the worker writes snapshots to the
registry and actions to the alerts topic).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from streamheal import models
from streamheal.config import PolicyConfig
from streamheal.detectors.base import Stateful
from streamheal.detectors.suite import Drift
from streamheal.serving import ServingModel


@dataclass
class Action:
    """A change of model, as written to the alerts topic (``type: action``)."""

    action: str  # snapshot | reset | fork | promote | discard | rollback | install | restore
    index: int
    model_version: int
    cause: str
    detail: dict[str, Any] = field(default_factory=dict)
    model: bytes | None = None  # the snapshot's serialized model
    partition: int | None = None

    @property
    def message(self) -> str:
        what = {
            "snapshot": f"model v{self.model_version} snapshot taken",
            "reset": f"model reset: v{self.model_version} now serves",
            "fork": f"challenger started beside model v{self.model_version}",
            "promote": f"challenger promoted: model v{self.model_version} now serves",
            "discard": "challenger discarded ("
            + (
                "its champion was rolled back"
                if self.detail.get("reason") == "rollback"
                else "did not beat the champion in time"
            )
            + ")",
            "rollback": f"rolled back: model v{self.model_version} serves again",
            "install": f"model v{self.model_version} installed",
            "restore": f"model v{self.model_version} restored to its "
            f"{self.detail.get('restored_from', 'last good state')}",
        }[self.action]
        return f"{what} ({self.cause})"


class Progress(Protocol):
    """Where the partition stands (the Engine's counters): when and how well."""

    feature_events: int
    labeled: int

    @property
    def accuracy(self) -> float | None: ...


class Policy(Stateful):
    """Drift in, actions out; the champion changes through ``serving``.

    Parameters
    ----------
    cfg
        The ``[policy]`` section.
    make_model
        Builds a fresh model from config (for resets and challengers).
    serving
        The partition's serving model: the one owner of champion, version and lineage.
    """

    _settings = ("cfg", "make_model", "serving")

    def __init__(
        self, cfg: PolicyConfig, make_model: Callable[[], Any], serving: ServingModel
    ) -> None:
        self.cfg = cfg
        self.make_model = make_model
        self.serving = serving
        # warm_start = 0 keeps nothing: a "warm" model then starts as a fresh one.
        self.recent: deque[tuple[dict[str, Any], Any]] = deque(maxlen=cfg.warm_start)
        self.challenger: Any = None
        self.challenger_cause = ""
        self.challenger_seen = 0
        self.challenger_right: deque[int] = deque(maxlen=cfg.promotion_window)
        self.champion_right: deque[int] = deque(maxlen=cfg.promotion_window)
        self.shadow: Any = None  # the previous champion, kept for a possible rollback
        self.shadow_version = 0
        self.shadow_cause = ""
        self.shadow_right: deque[int] = deque(maxlen=cfg.rollback_window)
        self.new_right: deque[int] = deque(maxlen=cfg.rollback_window)
        self.snapshot_at: tuple[int, int] | None = None  # (event, version) of the last one
        # Catch-up (see the module doc), learned at weight cfg.catch_up_weight: events left
        # for the challenger, and (version, events left) for a champion started after a drift.
        self.challenger_catch_up = 0
        self.catch_up: tuple[int, int] | None = None

    # ------------------------------------------------------------- drift hooks
    def on_drift(
        self, drift: Drift, now: Progress, since_change: Sequence[int] | None = None
    ) -> list[Action]:
        # While a new champion is on probation (a shadow is kept), a drift is most likely
        # the new champion's own doing: the rollback decision comes first, then new models.
        actions: list[Action] = []
        if drift.extra.get("direction") == "improved":
            return actions  # the error fell: nothing to heal
        for name in getattr(self.cfg, drift.kind):
            if name == "snapshot":
                taken = (now.feature_events, self.serving.version)
                if self.snapshot_at != taken:  # one snapshot per model and event, not per drift
                    self.snapshot_at = taken
                    actions.append(self._snapshot(now, drift.key))
            elif name == "reset" and self.shadow is None:
                actions.append(self._reset(now.feature_events, drift.key, since_change))
            elif name == "fork" and self._provisional:
                # The warning's challenger has learned the new concept since: it is the fork.
                self.challenger_cause = drift.key
            elif name == "fork" and self.challenger is None and self.shadow is None:
                actions.append(self._fork(now.feature_events, drift.key, since_change))
                actions += self._maybe_promote(now.feature_events)
        return actions

    def on_warning(
        self, cause: str, index: int, since_change: Sequence[int] | None = None
    ) -> list[Action]:
        idle = self.challenger is None and self.shadow is None
        if self.cfg.fork_on_warning and "fork" in self.cfg.concept and idle:
            action = self._fork(index, WARNING_CAUSE + cause, since_change)
            return [action, *self._maybe_promote(index)]
        return []

    def install(self, model: Any, version: int, cause: str, index: int) -> Action:
        """Serve ``model`` from now on (e.g. a registry promotion), watched for rollback."""
        previous = self.serving.serve(model, version, action="install", cause=cause, index=index)
        self._keep_shadow(previous, cause)
        return Action("install", index, version, cause)

    # ------------------------------------------------------------ label hooks
    def on_labeled(
        self, features: dict[str, Any], label: Any, champion_right: bool, index: int
    ) -> list[Action]:
        """Called after the champion learned from a label (the Engine has already kept it
        in ``recent``): scores and trains the challenger and the shadow."""
        actions: list[Action] = []
        if self.challenger is not None:
            self.challenger_right.append(int(self.challenger.predict_one(features) == label))
            self.champion_right.append(int(champion_right))
            left = self.challenger_catch_up
            if left:
                self.challenger_catch_up = left - 1
            weight = self.cfg.catch_up_weight if left else 1.0
            models.learn_weighted(self.challenger, features, label, weight)
            self.challenger_seen += 1
            actions += self._maybe_promote(index)
        if self.shadow is not None:
            self.shadow_right.append(int(self.shadow.predict_one(features) == label))
            self.new_right.append(int(champion_right))
            self.shadow.learn_one(features, label)
            actions += self._maybe_roll_back(index)
        return actions

    def champion_weight(self, version: int) -> float:
        """The sample weight for the champion's next labeled event (``version`` serving):
        above 1 while a model started after a drift is catching up."""
        catch_up = self.catch_up
        if catch_up is None:
            return 1.0
        served, left = catch_up
        if served != version or not left:
            self.catch_up = None  # another model serves now, or the catch-up is over
            return 1.0
        self.catch_up = (served, left - 1)
        return self.cfg.catch_up_weight

    @property
    def _provisional(self) -> bool:
        """The challenger was forked on a warning and no drift has confirmed it yet: it is
        promoted only by a clear lead (a confirmation gives it the drift as its cause)."""
        return self.challenger is not None and self.challenger_cause.startswith(WARNING_CAUSE)

    @property
    def busy(self) -> bool:
        """True while a challenger or a shadow needs every labeled event."""
        return self.challenger is not None or self.shadow is not None

    # -------------------------------------------------------------- internals
    def _snapshot(self, now: Progress, cause: str) -> Action:
        serving = self.serving
        return Action(
            "snapshot",
            now.feature_events,
            serving.version,
            cause,
            {"accuracy": now.accuracy, "labeled": now.labeled},
            model=models.dumps(serving.model),
        )

    def _fresh(self, since_change: Sequence[int] | None = None) -> Started:
        """A new model for a reset or a fork, the events it has left to catch up, the rows
        it was warm-started on, and its score on them: (right, champion right) per row,
        tested before it learned the row. Given ``since_change`` (the champion's errors
        since the error rate rose, oldest first), only those newest rows are learned and
        scored: a warm start on older rows would teach the new model the concept it
        replaces."""
        cfg = self.cfg
        if cfg.challenger == "copy":  # the champion's statistics: nothing to catch up
            return Started(copy.deepcopy(self.serving.model), 0, 0, [])
        model = self.make_model()
        catches_up = cfg.catch_up_weight != 1.0 and models.counts_evidence(model)
        left = cfg.catch_up_events if catches_up else 0
        scored: list[tuple[int, int]] = []
        rows: Sequence[tuple[dict[str, Any], Any]] = ()
        if cfg.challenger == "warm":
            rows = self.recent
            errors: Sequence[int] = ()
            if since_change is not None:
                count = min(len(since_change), len(rows))
                rows = list(rows)[len(rows) - count :]
                errors = since_change[len(since_change) - count :]
            for i, (features, label) in enumerate(rows):
                if errors:
                    scored.append((int(model.predict_one(features) == label), 1 - errors[i]))
                models.learn_weighted(model, features, label, cfg.catch_up_weight if left else 1.0)
                left = max(left - 1, 0)
        return Started(model, left, len(rows), scored)

    def _reset(self, index: int, cause: str, since_change: Sequence[int] | None = None) -> Action:
        """A fresh champion (the Engine gives it a new drift reference on this action)."""
        started = self._fresh(since_change)
        previous = self.serving.replace(started.model, action="reset", cause=cause, index=index)
        left = started.catch_up
        self.catch_up = (self.serving.version, left) if left else None
        self._keep_shadow(previous, cause)
        return Action("reset", index, self.serving.version, cause, {"warm_rows": started.warm_rows})

    def _fork(self, index: int, cause: str, since_change: Sequence[int] | None = None) -> Action:
        started = self._fresh(since_change)
        self.challenger, self.challenger_catch_up = started.model, started.catch_up
        self.challenger_cause = cause
        self.challenger_seen = 0
        self.challenger_right.clear()
        self.champion_right.clear()
        for challenger_right, champion_right in started.scored:
            self.challenger_right.append(challenger_right)
            self.champion_right.append(champion_right)
        return Action(
            "fork",
            index,
            self.serving.version,
            cause,
            {"challenger": self.cfg.challenger, "warm_rows": started.warm_rows},
        )

    def _maybe_promote(self, index: int) -> list[Action]:
        cfg = self.cfg
        n = len(self.challenger_right)
        if not n:
            return []
        challenger_accuracy = sum(self.challenger_right) / n
        champion_accuracy = sum(self.champion_right) / n
        detail = {
            "challenger_accuracy": round(challenger_accuracy, 4),
            "champion_accuracy": round(champion_accuracy, 4),
            "samples": n,
        }
        # A lead too large to be luck (one-sided z-test at level 0.001) promotes from
        # `promotion_early_samples` on: after an abrupt drift the old champion is often
        # right only by chance, and each labeled event it keeps serving is one lost.
        early = (
            0 < cfg.promotion_early_samples <= n < cfg.promotion_min_samples
            and _lead_z(challenger_accuracy, champion_accuracy, n) > EARLY_Z
        )
        if early:
            detail["early"] = True
        provisional = self._provisional
        if early or (
            not provisional
            and n >= cfg.promotion_min_samples
            and _better(
                challenger_accuracy, champion_accuracy, n, cfg.promotion_margin, cfg.promotion_test
            )
        ):
            challenger, cause = self.challenger, self.challenger_cause
            self.challenger = None
            previous = self.serving.replace(challenger, action="promote", cause=cause, index=index)
            left = self.challenger_catch_up
            self.catch_up = (self.serving.version, left) if left else None
            self._keep_shadow(previous, cause)
            return [Action("promote", index, self.serving.version, cause, detail)]
        if provisional and self.challenger_seen >= cfg.warning_patience:
            detail["reason"] = "warning not confirmed"
        elif self.challenger_seen < cfg.challenger_timeout:
            return []
        self.challenger = None
        return [Action("discard", index, self.serving.version, self.challenger_cause, detail)]

    def _maybe_roll_back(self, index: int) -> list[Action]:
        n = len(self.shadow_right)
        if n < self.cfg.rollback_window:
            return []
        shadow_accuracy = sum(self.shadow_right) / n
        new_accuracy = sum(self.new_right) / n
        detail = {
            "previous_accuracy": round(shadow_accuracy, 4),
            "new_accuracy": round(new_accuracy, 4),
            "samples": n,
        }
        shadow, version, cause = self.shadow, self.shadow_version, self.shadow_cause
        self.shadow = None
        if shadow_accuracy - new_accuracy < self.cfg.rollback_margin:
            return []  # the new champion held: the shadow is dropped
        _, dropped = self.serving.serve(
            shadow, version, action="rollback", cause=f"after {cause}", index=index
        )
        actions = [Action("rollback", index, version, f"after {cause}", detail)]
        if self.challenger is not None:
            # It raced the champion just rolled back: every model change is an action.
            actions.append(
                Action(
                    "discard",
                    index,
                    version,
                    self.challenger_cause,
                    {"reason": "rollback", "raced": dropped, "samples": self.challenger_seen},
                )
            )
            self.challenger = None
        return actions

    def _keep_shadow(self, previous: tuple[Any, int], cause: str) -> None:
        """The champion just replaced stays beside the new one, for a possible rollback."""
        (self.shadow, self.shadow_version), self.shadow_cause = previous, cause
        self.shadow_right.clear()
        self.new_right.clear()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.pop("next_version", None)  # checkpoints from before versions had one authority
        super().load_state_dict(state)


class Started(NamedTuple):
    """A model started after a drift (:meth:`Policy._fresh`)."""

    model: Any
    catch_up: int  # labeled events it has left to learn at the catch-up weight
    warm_rows: int  # the labeled rows it was warm-started on
    scored: list[tuple[int, int]]  # (its answer right, the champion's) per warm row, if known


WARNING_CAUSE = "warning: "  # the cause of a challenger forked on a warning, before its name
EARLY_Z = 3.0902  # one-sided z for level 0.001: an early promotion needs a clear lead


def _better(challenger: float, champion: float, n: int, margin: float, test: str) -> bool:
    if test == "margin":
        return challenger - champion >= margin
    return _lead_z(challenger, champion, n) > 1.6449  # z for 0.05


def _lead_z(challenger: float, champion: float, n: int) -> float:
    """One-sided two-proportion z statistic (same n): is the challenger's accuracy higher?"""
    pooled = (challenger + champion) / 2
    spread = math.sqrt(max(2 * pooled * (1 - pooled) / n, 1e-12))
    return (challenger - champion) / spread
