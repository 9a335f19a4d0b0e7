"""The promotion gate: absolute floors, then beating the champion by a margin.

A candidate passes when every check holds:

- the holdout has at least ``retrain.min_holdout`` examples (too few to judge is a no);
- its accuracy is at least ``retrain.min_accuracy``, its recall of every class seen in
  the holdout at least ``retrain.min_class_recall``, its log loss at most
  ``retrain.max_log_loss`` (0 = no bound);
- when there is a champion: its accuracy beats the champion's on the same holdout by
  ``retrain.margin``, added (``margin_kind = "absolute"``) or as a share of the champion's
  accuracy (``"relative"``). The first model ever has no champion to beat.

>>> from streamheal.config import RetrainConfig
>>> from streamheal.retrain.evaluate import Scores
>>> gate = Gate(RetrainConfig(min_holdout=10, margin=0.02))
>>> good = Scores(accuracy=0.93, log_loss=0.2, recall={"0": 0.9, "1": 0.95}, holdout=500)
>>> gate.judge(good, Scores(accuracy=0.90, log_loss=0.3, holdout=500)).passed
True
>>> verdict = gate.judge(good, Scores(accuracy=0.92, log_loss=0.3, holdout=500))
>>> verdict.passed, verdict.reasons
(False, ['accuracy 0.93 does not beat the champion 0.92 by the margin 0.02 (needs >= 0.94)'])
>>> gate.judge(good, None).passed   # nothing to beat
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from streamheal.config import RetrainConfig
from streamheal.retrain.evaluate import Scores

# Floating-point slack: 0.93 must count as beating 0.91 by 0.02.
_EPSILON = 1e-9


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why not (empty when passed)
    required_accuracy: float | None = None  # what beating the champion took

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Gate:
    """Judges a candidate's holdout scores against the config and the champion's."""

    def __init__(self, cfg: RetrainConfig) -> None:
        self.cfg = cfg

    def judge(self, candidate: Scores, champion: Scores | None) -> Verdict:
        cfg = self.cfg
        reasons = []
        if candidate.holdout < cfg.min_holdout:
            reasons.append(
                f"holdout has {candidate.holdout} examples, fewer than retrain.min_holdout "
                f"= {cfg.min_holdout}"
            )
        if candidate.accuracy + _EPSILON < cfg.min_accuracy:
            reasons.append(
                f"accuracy {candidate.accuracy:g} is below retrain.min_accuracy "
                f"= {cfg.min_accuracy:g}"
            )
        for name, recall in candidate.recall.items():
            if recall + _EPSILON < cfg.min_class_recall:
                reasons.append(
                    f"recall of class {name} is {recall:g}, below retrain.min_class_recall "
                    f"= {cfg.min_class_recall:g}"
                )
        if cfg.max_log_loss > 0 and candidate.log_loss > cfg.max_log_loss + _EPSILON:
            reasons.append(
                f"log loss {candidate.log_loss:g} is above retrain.max_log_loss "
                f"= {cfg.max_log_loss:g}"
            )
        required = None
        if champion is not None:
            if cfg.margin_kind == "relative":
                required = champion.accuracy * (1 + cfg.margin)
                how = f"{cfg.margin:.0%} (relative)"
            else:
                required = champion.accuracy + cfg.margin
                how = f"{cfg.margin:g}"
            required = round(required, 6)
            if candidate.accuracy + _EPSILON < required:
                reasons.append(
                    f"accuracy {candidate.accuracy:g} does not beat the champion "
                    f"{champion.accuracy:g} by the margin {how} (needs >= {required:g})"
                )
        return Verdict(not reasons, reasons, required)
