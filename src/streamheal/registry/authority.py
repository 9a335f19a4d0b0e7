"""The registry as the worker's version authority (:class:`~streamheal.serving.VersionAuthority`).

Every partition's Engine in every worker asks the registry for the number of a model made
online (a reset, a promotion), so a number means one model wherever it appears: in the
predictions' ``model_version``, the action records, ``registry show``.

Asking is a synchronous call, made only when a model changes (rare: a reset or a
promotion; about 2 ms on the local backend, one database round trip on MLflow), and it is
bounded: a registry that does not answer within ``ANSWER_SECONDS``, or cannot answer (a
full disk, a corrupt counter file), must not stop or stall the stream. The number then
comes from a counter in this process above every number it has seen, the failure is
logged, and the Engine carries on. The registry's next number can then repeat it; the
log line says so, and the operator fixes the registry.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging

import orjson

from streamheal.config import Config
from streamheal.registry.base import RegistryBackend

log = logging.getLogger("streamheal.registry")

# How long the stream waits for the registry to issue a number before issuing one itself.
ANSWER_SECONDS = 5.0


class RegistryVersions:
    """Issues versions through ``registry.issue_version``; a fallback number is above every
    number seen in this process."""

    def __init__(self, registry: RegistryBackend, answer_seconds: float = ANSWER_SECONDS) -> None:
        self.registry = registry
        self.answer_seconds = answer_seconds
        # One thread asks the registry, so a hung registry costs the stream a bounded wait.
        self._asker = concurrent.futures.ThreadPoolExecutor(1, "registry-versions")
        self.highest = 0  # the highest number issued or observed in this process
        self.fallbacks = 0  # numbers issued here because the registry failed
        self._fresh: int | None = None

    def fresh_version(self, config: Config) -> int:
        """The number of a fresh model built from ``config``'s model section and seed: the
        same on every restart and worker with those (the models are identical when they
        start), so a crash before the first checkpoint does not renumber it."""
        if self._fresh is None:
            cause = f"a fresh model built from config (model and seed {_model_hash(config)})"
            try:
                self._fresh = self.registry.fresh_version(cause)
            except Exception as err:  # the stream must not stop on the registry
                self._fresh = self.issue_version(
                    parent=None, cause=cause, partition=None, action="initial"
                )
                log.error("the registry could not name the fresh model (%s)", err)
            self.highest = max(self.highest, self._fresh)
        return self._fresh

    def issue_version(
        self, *, parent: int | None, cause: str, partition: int | None, action: str
    ) -> int:
        asked = self._asker.submit(
            self.registry.issue_version,
            parent=parent,
            cause=cause,
            partition=partition,
            action=action,
        )
        try:
            version = asked.result(timeout=self.answer_seconds)
        except Exception as err:  # the stream must not stop (or stall) on the registry
            if isinstance(err, concurrent.futures.TimeoutError):
                err = f"no answer within {self.answer_seconds:g}s"  # type: ignore[assignment]
            self.fallbacks += 1
            version = self.highest + 1
            log.error(
                "the registry could not issue a version (%s): v%d issued by this process "
                "instead; the registry may hand the same number out again until it is fixed",
                err,
                version,
            )
        self.highest = max(self.highest, version)
        return version

    def observe_version(self, version: int) -> None:
        # A number above the registry's (a checkpoint made under another registry) is
        # remembered here: this process never issues below it, even on a fallback.
        self.highest = max(self.highest, version)


def _model_hash(config: Config) -> str:
    """What makes a fresh model: the model section and the seed it is built with."""
    made_of = {"model": dataclasses.asdict(config.model), "seed": config.engine.seed}
    return hashlib.sha256(orjson.dumps(made_of)).hexdigest()[:12]
