"""What makes two alert records the same alert.

An alert's identity is (model name, kind, signal, feature). The partition is an attribute,
not part of the identity, and so is the detector: the same drift confirmed by CUSUM in one
partition and by KS in three others is one alert that says "4/4 partitions".

>>> identity = Identity("streamheal", "covariate", "feature", "mean radius")
>>> identity.alert_id
'b254b2377968'
>>> identity.describe()
"covariate drift on feature 'mean radius'"
>>> parse_drift_key("covariate:feature:a:b:cusum")
('covariate', 'feature', 'a:b', 'cusum')
>>> parse_drift_key("warning: adwin warning") is None
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Kinds the drift detectors declare (detectors/suite.py), and the one-shot kinds the
# notifier makes of other records on the alerts topic.
DRIFT_KINDS = ("covariate", "prior", "concept", "model", "confidence")
ONESHOT_KINDS = ("model_change", "notice", "control")


@dataclass(frozen=True)
class Identity:
    """(model, kind, signal, feature): one alert, whatever partition or detector saw it."""

    model: str
    kind: str
    signal: str
    feature: str | None = None

    @property
    def alert_id(self) -> str:
        """12 hex digits, stable across processes and restarts."""
        text = "\x1f".join((self.model, self.kind, self.signal, self.feature or ""))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def labels(self) -> dict[str, str]:
        """What silences match on (severity and alert id are added by the book)."""
        return {
            "model": self.model,
            "kind": self.kind,
            "signal": self.signal,
            "feature": self.feature or "",
        }

    def describe(self) -> str:
        if self.kind == "model_change":
            return f"model {self.signal}"
        if self.kind == "notice":
            on = f" on feature {self.feature!r}" if self.feature else ""
            return f"guard notice {self.signal}{on}"
        if self.kind == "control":
            return "control command refused"
        on = f"feature {self.feature!r}" if self.feature else self.signal
        return f"{self.kind} drift on {on}"

    def to_record(self) -> dict[str, str | None]:
        return {
            "model": self.model,
            "kind": self.kind,
            "signal": self.signal,
            "feature": self.feature,
        }

    @classmethod
    def from_record(cls, record: dict) -> Identity:
        return cls(record["model"], record["kind"], record["signal"], record.get("feature"))


def parse_drift_key(key: str) -> tuple[str, str, str | None, str] | None:
    """(kind, signal, feature, detector) of a drift key ``kind:signal:feature:detector``
    (feature ``-`` when there is none; a feature name may itself hold colons)."""
    parts = key.split(":")
    if len(parts) < 4 or parts[0] not in DRIFT_KINDS:
        return None
    feature = ":".join(parts[2:-1])
    return parts[0], parts[1], None if feature == "-" else feature, parts[-1]
