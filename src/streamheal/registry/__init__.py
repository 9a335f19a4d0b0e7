"""Model versions, aliases and tags, and the one authority for version numbers.

- :mod:`streamheal.registry.base`: the :class:`RegistryBackend` contract, its types,
  errors and the checks both backends share;
- :mod:`streamheal.registry.local`: :class:`Registry`, the local-directory backend (the
  default);
- :mod:`streamheal.registry.mlflow`: ``MlflowRegistry``, the same contract on MLflow (the
  ``mlflow`` extra), imported only when configured.

>>> import tempfile
>>> from streamheal.config import RegistryConfig
>>> registry = open_registry(RegistryConfig(path=tempfile.mkdtemp(), model_name="demo"))
>>> registry.register(b"model-bytes", cause="start")
1
>>> registry.issue_version(parent=1, cause="concept drift", partition=3, action="reset")
2
>>> registry.register(b"model-bytes", cause="snapshot")
3
"""

from __future__ import annotations

from streamheal.config import RegistryConfig
from streamheal.registry.base import (
    CHAMPION,
    PREVIOUS,
    AliasState,
    ModelVersion,
    RegistryBackend,
    RegistryError,
    build_meta,
    check_lineage,
    check_meta,
    check_version,
    describe_online,
    lineage_entry,
    not_stored,
    parse_aliases,
    unreadable_meta,
    verified,
)
from streamheal.registry.local import Registry

__all__ = [
    "CHAMPION",
    "PREVIOUS",
    "AliasState",
    "ModelVersion",
    "Registry",
    "RegistryBackend",
    "RegistryError",
    "build_meta",
    "check_lineage",
    "check_meta",
    "check_version",
    "describe_online",
    "lineage_entry",
    "not_stored",
    "open_registry",
    "parse_aliases",
    "unreadable_meta",
    "verified",
]


def open_registry(cfg: RegistryConfig) -> RegistryBackend:
    """The configured backend: a local directory, or MLflow (the `mlflow` extra).

    Both read ``STREAMHEAL_REGISTRY_KEY`` from the environment to sign and verify models.
    """
    if cfg.backend == "mlflow":
        from streamheal.registry.mlflow import MlflowRegistry

        return MlflowRegistry(cfg.tracking_uri, cfg.model_name, cfg.path)
    return Registry(cfg.path, cfg.model_name)
