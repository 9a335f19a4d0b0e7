"""The model that serves a partition: one owner for the model, its version and lineage.

The Engine holds a :class:`ServingModel`; the self-healing policy changes the champion
only through it, so neither edits the other's fields. Versions come from one
:class:`VersionAuthority` shared by every partition of a process: the model registry when
the worker has one (numbers then mean the same model on every worker and partition), else
a :class:`VersionCounter` that never goes backwards. The partition is an attribute of the
lineage, not part of the number.

>>> serving = ServingModel("model A")
>>> serving.version
1
>>> previous = serving.replace("model B", action="reset", cause="concept:adwin", index=500)
>>> previous, serving.version, serving.lineage[-1].parent
(('model A', 1), 2, 1)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

# Lineage entries kept per partition: the recent history, not an archive (the registry and
# the alerts topic keep the full record).
LINEAGE_KEPT = 32


class VersionAuthority(Protocol):
    """Issues model version numbers: unique and increasing across every partition using it."""

    def issue_version(
        self, *, parent: int | None, cause: str, partition: int | None, action: str
    ) -> int: ...

    def observe_version(self, version: int) -> None:
        """``version`` serves somewhere (installed, restored): never issue it again."""


class VersionCounter:
    """The authority without a registry: a counter per model in this process.

    Shared by the Engines of one process (replay, a notebook, a worker without a
    registry), it never goes backwards: a restored or installed version moves it forward.
    """

    def __init__(self, last: int = 1) -> None:
        self.last = last

    def issue_version(
        self, *, parent: int | None, cause: str, partition: int | None, action: str
    ) -> int:
        self.last += 1
        return self.last

    def observe_version(self, version: int) -> None:
        self.last = max(self.last, version)


@dataclass(frozen=True, slots=True)
class Lineage:
    """How a version came to serve."""

    version: int
    parent: int | None  # the version it replaced (None for the first model)
    action: str  # initial | registry | restored | reset | promote | rollback | install
    cause: str
    index: int  # the partition's feature-event count at the change


class ServingModel:
    """The champion of one partition: ``model``, its ``version`` and recent ``lineage``.

    Parameters
    ----------
    model
        The River model that answers.
    version
        Its version number (1 for a model built from config).
    versions
        Where new version numbers come from; a private :class:`VersionCounter` if None.
    partition
        The input partition served (an attribute of every issued version).
    """

    def __init__(
        self,
        model: Any,
        version: int = 1,
        versions: VersionAuthority | None = None,
        partition: int | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.versions: VersionAuthority = versions if versions is not None else VersionCounter()
        self.versions.observe_version(version)
        self.partition = partition
        self.lineage: deque[Lineage] = deque(
            [Lineage(version, None, "initial", "", 0)], maxlen=LINEAGE_KEPT
        )

    def replace(self, model: Any, *, action: str, cause: str, index: int) -> tuple[Any, int]:
        """Serve ``model``, made here (a reset, a promotion), under a newly issued version.
        Returns the previous (model, version)."""
        version = self.versions.issue_version(
            parent=self.version, cause=cause, partition=self.partition, action=action
        )
        return self._swap(model, version, action, cause, index)

    def serve(
        self, model: Any, version: int, *, action: str, cause: str, index: int
    ) -> tuple[Any, int]:
        """Serve ``model`` under the version it already has (installed from the registry,
        rolled back to). Returns the previous (model, version)."""
        self.versions.observe_version(version)
        return self._swap(model, version, action, cause, index)

    def repair(self, model: Any) -> None:
        """Serve ``model`` as the same version: a copy of the champion's last good state
        (or a fresh model) after its state went non-finite."""
        self.model = model

    def state(self) -> dict[str, Any]:
        return {"model": self.model, "model_version": self.version, "lineage": self.lineage}

    def load(self, model: Any, version: int, lineage: list[Lineage] | None = None) -> None:
        """Continue from a checkpoint (the model already unpickled)."""
        self.model, self.version = model, version
        self.versions.observe_version(version)
        kept = lineage or [Lineage(version, None, "restored", "", 0)]
        self.lineage = deque(kept, maxlen=LINEAGE_KEPT)

    def _swap(
        self, model: Any, version: int, action: str, cause: str, index: int
    ) -> tuple[Any, int]:
        previous = self.model, self.version
        self.lineage.append(Lineage(version, self.version, action, cause, index))
        self.model, self.version = model, version
        return previous
