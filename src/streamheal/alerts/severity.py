"""How bad an alert is: from its kind, the size of its effect, and what it did to accuracy.

Two numbers come from each drift record:

- **strength**, how many times past its raising threshold the detector is: the ratio
  ``statistic / threshold`` for thresholded statistics (CUSUM, PSI, Page-Hinkley), and
  ``log(p) / log(alpha)`` for p-value tests (1 at the level, 2 at its square). It ranks the
  features of one notification.
- **accuracy drop**: for a concept drift, the rise of the error rate over its reference;
  for any other kind, how far realized accuracy (labels) lies below the label-free
  estimate (mean top-class probability). A drift that did not hurt accuracy drops ~0.

Severity starts from the kind (concept, model and confidence drifts are about the model's
answers: ``warning``; covariate and prior drifts are about its inputs: ``info``) and goes
one step up for an accuracy drop of at least ``alerts.critical_accuracy_drop`` and one
for a strength of at least ``alerts.large_effect``. A fall of the error rate (signal
``error_fall``, direction ``improved``) is always ``info``. So a concept drift with an accuracy
drop (``critical``) outranks a covariate drift that did not hurt accuracy.

>>> from streamheal.config import AlertsConfig
>>> cfg = AlertsConfig()
>>> concept = {"kind": "concept", "detector": "adwin", "statistic": 0.3, "threshold": 1e-5,
...            "reference": {"error_rate": 0.1}, "current": {"error_rate": 0.3}}
>>> covariate = {"kind": "covariate", "detector": "ks", "statistic": 0.2, "p_value": 1e-5,
...              "threshold": 1e-4, "estimated_accuracy": 0.93, "realized_accuracy": 0.94}
>>> severity("concept", strength(concept), accuracy_drop(concept), cfg)
'critical'
>>> round(strength(covariate), 2), severity("covariate", 1.25, accuracy_drop(covariate), cfg)
(1.25, 'info')
"""

from __future__ import annotations

import math
from typing import Any, Literal

from streamheal.config import AlertsConfig

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
MAX_STRENGTH = 1000.0
_BASE: dict[str, int] = {
    "concept": 1,
    "model": 1,
    "confidence": 1,
    "control": 1,
    "covariate": 0,
    "prior": 0,
    "notice": 0,
    "model_change": 0,
}
# Model changes worth more than a note: the policy or a person took the model back.
_LOUD_CHANGES = ("rollback", "restore")


def strength(record: dict[str, Any]) -> float:
    """How many times past its raising threshold a drift record's detector is."""
    statistic = record.get("statistic")
    threshold = record.get("threshold")
    p_value = record.get("p_value")
    if record.get("kind") == "concept":
        return 1.0  # its size is the accuracy drop, counted there
    if p_value is not None and threshold is not None and 0 < threshold < 1:
        if p_value <= 0:
            return MAX_STRENGTH
        return min(MAX_STRENGTH, max(0.0, math.log(p_value) / math.log(threshold)))
    if statistic is not None and threshold:
        return min(MAX_STRENGTH, abs(statistic) / abs(threshold))
    return 1.0


def accuracy_drop(record: dict[str, Any]) -> float | None:
    """How much a drift record says accuracy fell (None when it cannot say)."""
    if record.get("kind") == "concept":
        before = (record.get("reference") or {}).get("error_rate")
        now = (record.get("current") or {}).get("error_rate")
        return None if before is None or now is None else now - before
    estimated, realized = record.get("estimated_accuracy"), record.get("realized_accuracy")
    if estimated is None or realized is None:
        return None
    return estimated - realized


def severity(
    kind: str, strength: float, drop: float | None, cfg: AlertsConfig, signal: str = ""
) -> Severity:
    """Severity from kind, strength and accuracy drop (see the module docstring)."""
    level = _BASE.get(kind, 1)
    if kind == "model_change" and signal in _LOUD_CHANGES:
        level = 1
    if signal == "error_fall":
        return "info"  # the error fell: good news, worth a note, never a page
    if drop is not None and drop >= cfg.critical_accuracy_drop:
        level += 1
    if strength >= cfg.large_effect:
        level += 1
    return SEVERITIES[min(level, len(SEVERITIES) - 1)]


def rank(value: str) -> int:
    """Order of a severity name (unknown names rank lowest)."""
    return SEVERITIES.index(value) if value in SEVERITIES else -1
