"""The MLflow backend against MLflow's local sqlite store: the same contract as the local one."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamheal.config import RegistryConfig
from streamheal.registry import CHAMPION, PREVIOUS, RegistryError, open_registry
from tests.test_registry import model_bytes


@pytest.fixture
def registry(tmp_path: Path):
    cfg = RegistryConfig(
        backend="mlflow",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        path=str(tmp_path / "artifacts"),
        model_name="heal",
    )
    return open_registry(cfg)


def test_versions_aliases_and_tags_live_in_mlflow(registry) -> None:
    first = registry.register(
        model_bytes(), cause="start", metrics={"accuracy": 0.9}, tags={"partition": "0"}
    )
    second = registry.register(model_bytes(), cause="concept drift")
    assert (first, second) == (1, 2)
    meta = registry.meta(1)
    assert meta["cause"] == "start" and meta["metrics"] == {"accuracy": 0.9}
    assert meta["tags"] == {"partition": "0"}
    registry.promote(1)
    registry.promote(2)
    assert registry.aliases == {CHAMPION: 2, PREVIOUS: 1}
    registry.rollback()
    assert registry.aliases == {CHAMPION: 1, PREVIOUS: 2}
    registry.tag(2, "reviewed", "yes")
    assert registry.meta(2)["tags"]["reviewed"] == "yes"
    assert registry.load(1).predict_proba_one({"x": 1.0})[True] > 0.5
    assert [v.version for v in registry.versions()] == [1, 2]
    with pytest.raises(RegistryError):
        registry.promote(7)


def test_a_tampered_artifact_is_refused(registry, tmp_path: Path) -> None:
    version = registry.register(model_bytes(), cause="x")
    [artifact] = (tmp_path / "artifacts").rglob("model.pkl")
    artifact.write_bytes(artifact.read_bytes()[:-5])
    with pytest.raises(RegistryError, match="truncated"):
        registry.load(version)
