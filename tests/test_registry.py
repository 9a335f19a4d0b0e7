"""The local-directory registry: numbering, aliases, integrity, concurrency, crash safety."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from streamheal import models
from streamheal.config import Config
from streamheal.registry import CHAMPION, PREVIOUS, Registry, RegistryError


def model_bytes() -> bytes:
    model = models.build_model(Config().model, seed=1)
    model.learn_one({"x": 1.0}, True)
    return models.dumps(model)


def test_versions_count_from_1_and_carry_their_metadata(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "m")
    first = registry.register(
        model_bytes(),
        cause="start",
        metrics={"accuracy": 0.9},
        offsets={"partition": 0, "index": 10},
        config_hash="abc",
        tags={"team": "risk"},
    )
    second = registry.register(model_bytes(), cause="concept drift")
    assert (first, second) == (1, 2)
    meta = registry.meta(1)
    assert meta["cause"] == "start" and meta["metrics"] == {"accuracy": 0.9}
    assert meta["offsets"] == {"partition": 0, "index": 10} and meta["config_hash"] == "abc"
    assert meta["libraries"]["river"] and meta["tags"] == {"team": "risk"}
    assert registry.load(1).predict_proba_one({"x": 1.0})[True] > 0.5
    registry.tag(2, "reviewed", "yes")
    assert registry.meta(2)["tags"] == {"reviewed": "yes"}


def test_promote_moves_champion_and_previous_and_rollback_swaps_them(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "m")
    for _ in range(3):
        registry.register(model_bytes(), cause="x")
    registry.promote(1)
    registry.promote(3)
    assert registry.aliases == {CHAMPION: 3, PREVIOUS: 1}
    registry.rollback()
    assert registry.aliases == {CHAMPION: 1, PREVIOUS: 3}
    registry.set_alias("shadow-test", 2)
    assert registry.alias("shadow-test") == 2
    with pytest.raises(RegistryError, match="no version 9"):
        registry.promote(9)
    listed = {v.version: v.aliases for v in registry.versions()}
    assert listed == {1: [CHAMPION], 2: ["shadow-test"], 3: [PREVIOUS]}


def test_a_truncated_model_file_is_refused_not_unpickled(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "m")
    version = registry.register(model_bytes(), cause="x")
    path = tmp_path / "m" / "versions" / str(version) / "model.pkl"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(RegistryError, match="truncated"):
        registry.load(version)


def test_a_tampered_model_file_is_refused_not_unpickled(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "m")
    version = registry.register(model_bytes(), cause="x")
    path = tmp_path / "m" / "versions" / str(version) / "model.pkl"
    blob = bytearray(path.read_bytes())
    blob[20] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(blob))
    with pytest.raises(RegistryError, match="checksum"):
        registry.load(version)


def _register_many(root: str, count: int) -> list[int]:
    registry = Registry(root, "m")
    return [registry.register(model_bytes(), cause=f"pid {os.getpid()}") for _ in range(count)]


def test_concurrent_writers_do_not_corrupt_it(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_register_many, [(str(tmp_path), 8)] * 4)
    versions = sorted(v for batch in results for v in batch)
    assert versions == list(range(1, 33))
    registry = Registry(tmp_path, "m")
    assert [v.version for v in registry.versions()] == versions
    for version in versions:
        registry.load_bytes(version)  # every one whole and verified


def test_aliases_survive_a_crash_between_writes(tmp_path: Path, monkeypatch) -> None:
    registry = Registry(tmp_path, "m")
    for _ in range(2):
        registry.register(model_bytes(), cause="x")
    registry.promote(1)

    def crash(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)  # dies after writing the temporary file
    with pytest.raises(OSError, match="power cut"):
        registry.promote(2)
    with pytest.raises(OSError, match="power cut"):
        registry.register(model_bytes(), cause="half-written")
    monkeypatch.undo()
    assert registry.aliases == {CHAMPION: 1}  # the old state, whole
    assert [v.version for v in registry.versions()] == [1, 2]
    assert registry.register(model_bytes(), cause="after") == 3
