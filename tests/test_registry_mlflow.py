"""The MLflow backend against MLflow's local sqlite store: the same contract as the local one."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import orjson
import pytest

from streamheal.config import RegistryConfig
from streamheal.registry import CHAMPION, PREVIOUS, RegistryError, open_registry
from streamheal.signing import REGISTRY_KEY_ENV, Signer
from tests.conftest import model_bytes


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(REGISTRY_KEY_ENV, raising=False)  # unsigned: checksums only
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


@pytest.fixture
def signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The MLflow backend with STREAMHEAL_REGISTRY_KEY set, as a production worker runs it."""
    monkeypatch.setenv(REGISTRY_KEY_ENV, "registry-key")
    cfg = RegistryConfig(
        backend="mlflow",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        path=str(tmp_path / "artifacts"),
        model_name="heal",
    )
    return open_registry(cfg)


def test_signed_models_round_trip_and_a_replaced_one_is_refused(signed, tmp_path: Path) -> None:
    version = signed.register(model_bytes(), cause="x")
    assert signed.meta(version)["signature"] == Signer(b"registry-key").sign(model_bytes())
    assert signed.load_bytes(version) == model_bytes()
    # Someone with write access to MLflow but not the key swaps the artifact and rewrites
    # the size and SHA-256 in the description: the checksum passes, the signature does not.
    evil = pickle.dumps({"not": "the model"})
    [artifact] = (tmp_path / "artifacts").rglob("model.pkl")
    artifact.write_bytes(evil)
    found = signed.client.get_model_version("heal", str(version))
    meta = {**orjson.loads(found.description), "size": len(evil)}
    meta["sha256"] = hashlib.sha256(evil).hexdigest()
    signed.client.update_model_version("heal", str(version), orjson.dumps(meta).decode())
    with pytest.raises(RegistryError, match=r"heal v1: signature does not match: "):
        signed.load(version)


def test_a_malformed_description_and_bad_versions_are_registry_errors(registry) -> None:
    registry.register(model_bytes(), cause="x")
    registry.register(model_bytes(), cause="y")
    registry.client.update_model_version("heal", "1", '{"size": "12"}')
    with pytest.raises(
        RegistryError, match=r"heal v1: the MLflow .* is malformed: .*'size' is \"12\""
    ):
        registry.load_bytes(1)
    listed = registry.versions()  # one broken version does not hide the others
    assert listed[0].error is not None and listed[1].error is None
    for bad in (0, -1, True, "2"):
        with pytest.raises(RegistryError, match="a version is an integer >= 1"):
            registry.meta(bad)
