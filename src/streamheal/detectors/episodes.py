"""Drift episodes: one drift, one episode, however many detectors see it.

A single feature shift is seen by its CUSUM within a few hundred events, then by KS and
PSI at the next windowed check, and may move the model's predictions after that. Counted
one by one those are four "detections" of one change. Here every declaration gets:

- ``episode``: the id of the episode of its (kind, signal, feature). The first detector
  to fire opens it (``role: "opened"``); others firing while it is open attach to it
  (``role: "confirmation"``); the episode closes when none of its detectors fires any
  more (the last resolution has ``role: "closed"``, earlier ones ``"resolved"``).
- ``caused_by``: for a signal that is a known consequence of another, the episode that
  explains it: a prediction, predicted-class or confidence drift (kind ``model`` or
  ``confidence``) or a label-mix drift (``prior``) while a covariate or concept episode
  is open.

Ids are ``<kind>:<signal>:<feature or ->@<index it opened at>``: readable, and the same
however the stream was cut into batches.

>>> book = EpisodeBook()
>>> book.assign("covariate", "feature", "x", "cusum", "firing", 1200)
('covariate:feature:x@1200', 'opened', None)
>>> book.assign("covariate", "feature", "x", "ks", "firing", 2500)
('covariate:feature:x@1200', 'confirmation', None)
>>> book.assign("model", "prediction", None, "ks", "firing", 5000)
('model:prediction:-@5000', 'opened', 'covariate:feature:x@1200')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamheal.detectors.base import Stateful

# What each kind's drift can be the consequence of.
CAUSES: dict[str, tuple[str, ...]] = {
    "model": ("covariate", "concept"),
    "confidence": ("covariate", "concept"),
    "prior": ("covariate", "concept"),
}


@dataclass
class Episode:
    id: str
    kind: str
    opened_at: int
    firing: set[str] = field(default_factory=set)  # detectors firing in it
    caused_by: str | None = None


class EpisodeBook(Stateful):
    """Open episodes by (kind, signal, feature); bounded by the alarms that can exist."""

    _settings = ()

    def __init__(self) -> None:
        self.open: dict[tuple[str, str, str | None], Episode] = {}

    def assign(
        self,
        kind: str,
        signal: str,
        feature: str | None,
        detector: str,
        status: str,
        index: int,
    ) -> tuple[str | None, str | None, str | None]:
        """(episode id, role, caused_by) for a declaration (``status`` ``firing``) or a
        resolution (``resolved``) of ``detector`` at feature event ``index``."""
        key = (kind, signal, feature)
        episode = self.open.get(key)
        if status == "firing":
            if episode is None:
                episode = Episode(
                    f"{kind}:{signal}:{feature or '-'}@{index}",
                    kind,
                    index,
                    caused_by=self._cause(kind),
                )
                self.open[key] = episode
                role = "opened"
            else:
                role = "confirmation" if detector not in episode.firing else "refired"
            episode.firing.add(detector)
            return episode.id, role, episode.caused_by
        if episode is None:
            return None, None, None  # resolved before this book existed (old checkpoint)
        episode.firing.discard(detector)
        if episode.firing:
            return episode.id, "resolved", episode.caused_by
        del self.open[key]
        return episode.id, "closed", episode.caused_by

    def close_kind(self, kind: str) -> None:
        """Forget the open episodes of ``kind`` (their alarms were dropped: a new reference)."""
        self.open = {key: e for key, e in self.open.items() if e.kind != kind}

    def _cause(self, kind: str) -> str | None:
        """The latest-opened open episode of a kind this kind can follow from."""
        causes = [e for e in self.open.values() if e.kind in CAUSES.get(kind, ())]
        return max(causes, key=lambda e: e.opened_at).id if causes else None
