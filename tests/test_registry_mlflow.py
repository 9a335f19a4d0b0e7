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
from tests.conftest import model_bytes, released_together


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


def test_issued_numbers_come_from_mlflow_s_sequence_and_carry_their_lineage(registry) -> None:
    assert registry.register(model_bytes(), cause="start") == 1
    issued = registry.issue_version(parent=1, cause="concept drift", partition=2, action="reset")
    assert issued == 2
    assert registry.register(model_bytes(), cause="snapshot") == 3
    assert registry.issue_version(parent=None, cause="x", partition=None, action="promote") == 4
    entry = registry.lineage(issued)
    assert entry is not None and isinstance(entry.pop("created_at"), float)
    assert entry == {
        "version": 2,
        "parent": 1,
        "cause": "concept drift",
        "partition": 2,
        "action": "reset",
    }
    assert registry.lineage(1) is None and registry.lineage(99) is None
    assert [v.version for v in registry.versions()] == [1, 3]  # issued numbers store nothing
    match = r"model 'heal' v2 is a serving version made online \(reset of v1 on partition 2"
    for call in (registry.meta, registry.load_bytes, registry.promote):
        with pytest.raises(RegistryError, match=match):
            call(issued)
    with pytest.raises(RegistryError, match=match):
        registry.tag(issued, "k", "v")
    assert registry.aliases == {}
    with pytest.raises(RegistryError, match="a partition is an integer >= 0"):
        registry.issue_version(parent=None, cause="x", partition=-1, action="reset")


def test_a_malformed_lineage_description_is_a_registry_error(registry) -> None:
    issued = registry.issue_version(parent=None, cause="x", partition=0, action="reset")
    registry.client.update_model_version("heal", str(issued), '{"parent": "one"}')
    with pytest.raises(RegistryError, match=r"heal v1: the MLflow .*lineage.* is malformed"):
        registry.lineage(issued)


def _issue_many(uri: str, artifacts: str, partition: int) -> list[int]:
    cfg = RegistryConfig(backend="mlflow", tracking_uri=uri, path=artifacts, model_name="heal")
    registry = open_registry(cfg)
    return [
        registry.issue_version(parent=None, cause="drift", partition=partition, action="reset")
        for _ in range(25)
    ]


def test_two_processes_never_get_the_same_number(registry, tmp_path: Path) -> None:
    uri, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts")
    by_partition = released_together(_issue_many, [(uri, artifacts, p) for p in (0, 1)])
    assert sorted(n for issued in by_partition for n in issued) == list(range(1, 51))
    for partition, issued in enumerate(by_partition):
        assert issued == sorted(issued)
        assert {registry.lineage(n)["partition"] for n in issued} == {partition}  # type: ignore[index]
    assert registry.register(model_bytes(), cause="after") == 51


def test_a_fresh_model_keeps_its_number(registry) -> None:
    first = registry.fresh_version("a fresh model built from config (model and seed abc)")
    assert registry.fresh_version("a fresh model built from config (model and seed abc)") == first
    other = registry.fresh_version("a fresh model built from config (model and seed def)")
    assert other > first and registry.lineage(other)["action"] == "initial"
