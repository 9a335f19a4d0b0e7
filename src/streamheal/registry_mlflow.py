"""The registry on MLflow: versions as MLflow model versions, aliases as MLflow aliases.

``pip install 'streamheal[mlflow]'`` and set ``registry.backend = "mlflow"`` with a
``registry.tracking_uri`` (a tracking server, or ``sqlite:///mlflow.db``). Each version is
a run whose artifacts hold ``model.pkl`` and ``meta.json``; the model version carries the
metadata as its description and tags, so it shows in MLflow's UI. Loading checks size
and SHA-256 exactly as the local backend does. MLflow moves one alias per call: a
promotion sets ``previous`` first, then ``champion``.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import orjson

from streamheal.registry import (
    CHAMPION,
    PREVIOUS,
    AliasState,
    ModelVersion,
    RegistryError,
    build_meta,
    verified,
)


class MlflowRegistry:
    def __init__(self, tracking_uri: str, name: str = "streamheal", artifacts: str = "") -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if not tracking_uri:
            raise RegistryError("registry.tracking_uri is required with registry.backend = mlflow")
        self.name = name
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
        meta = build_meta(self.name, 0, model, cause, metrics, offsets, config_hash, tags)
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

    def meta(self, version: int) -> dict[str, Any]:
        try:
            found = self.client.get_model_version(self.name, str(version))
        except self._missing as err:
            raise RegistryError(f"{self.name}: no version {version}") from err
        meta = orjson.loads(found.description)
        meta["version"] = version
        meta["tags"] = {k: v for k, v in found.tags.items() if k not in ("cause", "sha256", "size")}
        meta["run_id"] = found.run_id
        return meta

    def load_bytes(self, version: int) -> bytes:
        meta = self.meta(version)
        with tempfile.TemporaryDirectory() as folder:
            path = self.client.download_artifacts(meta["run_id"], "model/model.pkl", folder)
            return verified(Path(path).read_bytes(), meta)

    def load(self, version: int) -> Any:
        from streamheal import models

        return models.loads(self.load_bytes(version))

    def versions(self) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name='{self.name}'")
        aliases = self.aliases
        by_version: dict[int, list[str]] = {}
        for alias, v in aliases.items():
            by_version.setdefault(v, []).append(alias)
        numbers = sorted(int(v.version) for v in found)
        return [ModelVersion(v, self.meta(v), sorted(by_version.get(v, []))) for v in numbers]

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
            raise RegistryError(f"{self.name}: no previous champion to roll back to")
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
        return {k: int(v) for k, v in (model.aliases or {}).items()}
