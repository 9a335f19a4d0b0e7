"""The registry on MLflow: versions as MLflow model versions, aliases as MLflow aliases.

``pip install 'streamheal[mlflow]'`` and set ``registry.backend = "mlflow"`` with a
``registry.tracking_uri`` (a tracking server, or ``sqlite:///mlflow.db``). Each version is
a run whose artifacts hold ``model.pkl`` and ``meta.json``; the model version carries the
metadata as its description and tags, so it shows in MLflow's UI. MLflow moves one alias
per call: a promotion sets ``previous`` first, then ``champion``.

Version numbers are MLflow's: its database assigns each model version the next number in
one transaction (the primary key ``(name, version)`` makes a concurrent duplicate fail and
retry), and never reuses one, not even a deleted version's. So :meth:`MlflowRegistry.
issue_version` also creates a model version, for a run tagged ``streamheal.lineage`` that
holds no artifact: the model version is tagged ``streamheal.lineage`` = the action and its
description holds the lineage entry (parent, cause, partition, action, created_at) as
JSON. Registered and issued numbers thus come from one atomic sequence, across processes
and hosts. :meth:`MlflowRegistry.versions` leaves issued numbers out; loading, tagging,
aliasing or promoting one is a :class:`RegistryError` that says it has no stored model.

It fails safe exactly as the local backend does (see :mod:`streamheal.registry.local`): loading
checks size, SHA-256 and, when ``STREAMHEAL_REGISTRY_KEY`` is set, the HMAC signature
stored in the description, before unpickling; a malformed description, a missing
artifact or a bad version argument is a :class:`RegistryError` naming the version; and
:meth:`MlflowRegistry.versions` lists a broken version with its error instead of raising.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import orjson

from streamheal.registry.base import (
    CHAMPION,
    PREVIOUS,
    AliasState,
    ModelVersion,
    RegistryError,
    build_meta,
    check_lineage,
    check_meta,
    check_version,
    lineage_entry,
    not_stored,
    unreadable_meta,
    verified,
)
from streamheal.signing import REGISTRY_KEY_ENV, Signer

# Marks the runs and model versions issue_version creates (no model is stored under them).
LINEAGE_TAG = "streamheal.lineage"


class MlflowRegistry:
    """The MLflow backend.

    Parameters
    ----------
    tracking_uri
        The tracking and registry server (``http://...``, ``sqlite:///mlflow.db``).
    name
        The registered model's name.
    artifacts
        Where a newly created experiment stores its artifacts (default: a temp directory).
    signer
        Signs model files on register and verifies them on load. None (the default)
        reads ``STREAMHEAL_REGISTRY_KEY``; when that is unset too, only checksums are checked.
    """

    def __init__(
        self,
        tracking_uri: str,
        name: str = "streamheal",
        artifacts: str = "",
        signer: Signer | None = None,
    ) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if not tracking_uri:
            raise RegistryError("registry.tracking_uri is required with registry.backend = mlflow")
        self.name = name
        self.signer = signer if signer is not None else Signer.from_env(REGISTRY_KEY_ENV)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._missing = MlflowException
        experiment = self.client.get_experiment_by_name(f"streamheal-{name}")
        if experiment is None:
            location = Path(artifacts or tempfile.gettempdir()).expanduser() / f"mlflow-{name}"
            self.experiment_id = self.client.create_experiment(
                f"streamheal-{name}", artifact_location=location.as_uri()
            )
        else:
            self.experiment_id = experiment.experiment_id
        with contextlib.suppress(MlflowException):  # it exists already
            self.client.create_registered_model(name)

    def register(
        self,
        model: bytes,
        cause: str,
        metrics: dict[str, Any] | None = None,
        offsets: dict[str, Any] | None = None,
        config_hash: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> int:
        run = self.client.create_run(self.experiment_id, tags={"cause": cause})
        meta = build_meta(
            self.name, 0, model, cause, metrics, offsets, config_hash, tags, signer=self.signer
        )
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "model.pkl").write_bytes(model)
            Path(folder, "meta.json").write_bytes(orjson.dumps(meta))
            self.client.log_artifacts(run.info.run_id, folder, artifact_path="model")
        self.client.set_terminated(run.info.run_id)
        version = self.client.create_model_version(
            self.name,
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags={
                "cause": cause,
                "sha256": meta["sha256"],
                "size": str(meta["size"]),
                **(tags or {}),
            },
            description=orjson.dumps({**meta, "version": None}).decode(),
        )
        return int(version.version)

    def issue_version(
        self, *, parent: int | None, cause: str, partition: int | None, action: str
    ) -> int:
        """Reserve the next version number for a model made online and record its lineage.

        MLflow numbers the model version this creates; no model is stored under it.
        """
        entry = lineage_entry(
            self.name, 0, parent=parent, cause=cause, partition=partition, action=action
        )
        run = self.client.create_run(self.experiment_id, tags={LINEAGE_TAG: action, "cause": cause})
        self.client.set_terminated(run.info.run_id)
        tags = {LINEAGE_TAG: action, "cause": cause}
        if parent is not None:
            tags["parent"] = str(parent)
        if partition is not None:
            tags["partition"] = str(partition)
        version = self.client.create_model_version(
            self.name,
            source=f"{run.info.artifact_uri}/lineage",
            run_id=run.info.run_id,
            tags=tags,
            # MLflow numbers the version after this is written: "version" is filled on reading.
            description=orjson.dumps({**entry, "version": None}).decode(),
        )
        return int(version.version)

    def fresh_version(self, cause: str) -> int:
        """The number of the fresh model ``cause`` describes: the one issued for the same
        cause before, else a new one. MLflow offers no lock: two workers starting at the
        same moment may each issue one (both name the same fresh model)."""
        found = self.client.search_model_versions(
            f"name = '{self.name}' and tags.`{LINEAGE_TAG}` = 'initial'"
        )
        for version in sorted(found, key=lambda v: int(v.version)):
            if (version.tags or {}).get("cause") == cause:
                return int(version.version)
        return self.issue_version(parent=None, cause=cause, partition=None, action="initial")

    def lineage(self, version: int) -> dict[str, Any] | None:
        """The entry :meth:`issue_version` recorded for ``version``; None for any other number."""
        version = check_version(self.name, version)
        found = self._found(version)
        return None if found is None else self._lineage_of(found, version)

    def _found(self, version: int) -> Any | None:
        """MLflow's model version ``version``, or None when there is none."""
        try:
            return self.client.get_model_version(self.name, str(version))
        except self._missing:
            return None

    def _lineage_of(self, found: Any, version: int) -> dict[str, Any] | None:
        if LINEAGE_TAG not in (found.tags or {}):
            return None
        where = f"{self.name} v{version}: the MLflow model version's lineage description"
        entry = _decoded(found.description, where)
        if isinstance(entry, dict):  # else check_lineage says what it is
            entry["version"] = version
        return check_lineage(entry, where)

    def meta(self, version: int) -> dict[str, Any]:
        """A version's metadata (from its description and tags), checked for shape."""
        version = check_version(self.name, version)
        found = self._found(version)
        if found is None:
            raise RegistryError(f"model {self.name!r} has no version {version}")
        entry = self._lineage_of(found, version)
        if entry is not None:
            raise not_stored(self.name, entry)
        where, source = f"{self.name} v{version}", "the MLflow model version's description"
        meta = _decoded(found.description, f"{where}: {source}")
        if isinstance(meta, dict):  # else check_meta says what it is
            # The description holds "version": null (MLflow numbers versions after it is
            # written); the tags are MLflow's, so that tagging in its UI shows here too.
            meta["version"] = version
            meta["tags"] = {
                k: v for k, v in (found.tags or {}).items() if k not in ("cause", "sha256", "size")
            }
            meta["run_id"] = found.run_id
        return check_meta(meta, where, source, version)

    def load_bytes(self, version: int) -> bytes:
        """The model's bytes, after checking size, SHA-256 and signature against the metadata."""
        meta = self.meta(version)
        artifact = "model/model.pkl"
        if not meta["run_id"]:
            raise RegistryError(f"{self.name} v{version}: model file {artifact} has no run")
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = self.client.download_artifacts(meta["run_id"], artifact, folder)
                blob = Path(path).read_bytes()
            except (self._missing, OSError) as err:
                raise RegistryError(
                    f"{self.name} v{version}: model file {artifact} of run {meta['run_id']} "
                    f"cannot be read: {err}"
                ) from err
            return verified(blob, meta, self.signer)

    def load(self, version: int) -> Any:
        from streamheal import models

        return models.loads(self.load_bytes(version))

    def versions(self) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name='{self.name}'")
        aliases = self.aliases
        by_version: dict[int, list[str]] = {}
        for alias, v in aliases.items():
            by_version.setdefault(v, []).append(alias)
        listed = []
        for entry in sorted(found, key=lambda e: int(e.version)):
            if LINEAGE_TAG in (entry.tags or {}):  # an issued number: no model to list
                continue
            v = int(entry.version)
            try:
                meta = self.meta(v)
            except RegistryError as err:  # one bad version is no reason to hide the others
                created_at = (entry.creation_timestamp or 0) / 1000
                meta = unreadable_meta(self.name, v, str(err), created_at)
            listed.append(ModelVersion(v, meta, sorted(by_version.get(v, []))))
        return listed

    def set_alias(self, alias: str, version: int) -> AliasState:
        self.meta(version)  # RegistryError for an unknown version
        self.client.set_registered_model_alias(self.name, alias, str(version))
        return AliasState(self.aliases)

    def promote(self, version: int) -> AliasState:
        self.meta(version)
        current = self.alias(CHAMPION)
        if current is not None and current != version:
            self.client.set_registered_model_alias(self.name, PREVIOUS, str(current))
        self.client.set_registered_model_alias(self.name, CHAMPION, str(version))
        return AliasState(self.aliases)

    def rollback(self) -> AliasState:
        previous, current = self.alias(PREVIOUS), self.alias(CHAMPION)
        if previous is None:
            raise RegistryError(f"model {self.name!r} has no previous champion to roll back to")
        self.meta(previous)  # never point champion at a version that is gone or broken
        self.client.set_registered_model_alias(self.name, CHAMPION, str(previous))
        if current is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS, str(current))
        return AliasState(self.aliases)

    def tag(self, version: int, key: str, value: str) -> None:
        self.meta(version)
        self.client.set_model_version_tag(self.name, str(version), key, value)

    def alias(self, alias: str) -> int | None:
        return self.aliases.get(alias)

    @property
    def aliases(self) -> dict[str, int]:
        model = self.client.get_registered_model(self.name)
        try:  # MLflow stores versions as strings of digits; guard against anything else
            return {k: check_version(self.name, int(v)) for k, v in (model.aliases or {}).items()}
        except (TypeError, ValueError) as err:
            raise RegistryError(
                f"{self.name}: MLflow aliases are not version numbers: {err}"
            ) from err


def _decoded(description: str | None, where: str) -> Any:
    try:
        return orjson.loads(description or "")
    except orjson.JSONDecodeError as err:
        raise RegistryError(f"{where} is not valid JSON ({err})") from err
