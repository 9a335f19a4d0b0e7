"""Train a candidate over a window in time order; score models on a time-ordered holdout.

The holdout is the newest ``retrain.holdout_share`` of the window: the candidate never
learns from it, and the champion is judged on the very same examples, without learning
either (an offline evaluation, not a prequential one).

>>> from streamheal import models
>>> from streamheal.config import ModelConfig
>>> from streamheal.retrain.window import Example
>>> rows = [Example(float(i), {"x": float(i % 2)}, i % 2 == 1, 0) for i in range(200)]
>>> train, holdout = split(rows, holdout_share=0.25)
>>> len(train), len(holdout), train[-1].ts < holdout[0].ts
(150, 50, True)
>>> model = train_model(models.build_model(ModelConfig(), seed=1), train)
>>> scores = score(model, holdout)
>>> scores.accuracy, scores.holdout
(1.0, 50)
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from river import base

from streamheal.retrain.window import Example, OutOfTime

# Probabilities are clipped here before the log: a confident mistake costs ~34.5, not inf.
LOG_LOSS_EPSILON = 1e-15


@dataclass
class Scores:
    """A model's numbers on the holdout."""

    accuracy: float
    log_loss: float
    recall: dict[str, float] = field(default_factory=dict)  # per true class, keyed by str
    holdout: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split(examples: Sequence[Example], holdout_share: float) -> tuple[list[Example], list[Example]]:
    """(train, holdout): the holdout is the newest share, at least one example when any."""
    if not examples:
        return [], []
    cut = len(examples) - max(1, round(len(examples) * holdout_share))
    return list(examples[:cut]), list(examples[cut:])


def train_model(
    model: base.Classifier, examples: Sequence[Example], deadline: float = float("inf")
) -> base.Classifier:
    """``model`` after learning ``examples`` one by one, oldest first (as the worker learns)."""
    for i, example in enumerate(examples):
        if i % 1024 == 0 and time.monotonic() > deadline:
            raise OutOfTime(f"time budget spent training ({i} of {len(examples)} examples)")
        model.learn_one(example.features, example.label)
    return model


def score(
    model: base.Classifier, holdout: Sequence[Example], deadline: float = float("inf")
) -> Scores:
    """Accuracy, log loss and recall per class of ``model`` on ``holdout`` (no learning)."""
    right = 0
    loss = 0.0
    per_class: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    for i, example in enumerate(holdout):
        if i % 1024 == 0 and time.monotonic() > deadline:
            raise OutOfTime(f"time budget spent evaluating ({i} of {len(holdout)} examples)")
        proba = model.predict_proba_one(example.features)
        # The class River would predict: the most probable, ties to the first listed.
        predicted = max(proba, key=proba.__getitem__) if proba else None
        truth = example.label
        p_truth = proba.get(truth, 0.0) if proba else 0.0
        if not math.isfinite(p_truth):
            p_truth = 0.0
        loss -= math.log(min(max(p_truth, LOG_LOSS_EPSILON), 1.0))
        name = _class_name(truth)
        per_class[name] += 1
        if predicted == truth:
            right += 1
            hits[name] += 1
    n = len(holdout)
    return Scores(
        accuracy=round(right / n, 6) if n else 0.0,
        log_loss=round(loss / n, 6) if n else 0.0,
        recall={c: round(hits[c] / per_class[c], 6) for c in sorted(per_class)},
        holdout=n,
    )


def _class_name(label: Any) -> str:
    # Binary models take labels as booleans; on the wire (and in the summary) they are 0/1.
    return str(int(label)) if isinstance(label, bool) else str(label)
