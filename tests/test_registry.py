"""The local-directory registry: numbering, aliases, integrity, concurrency, crash safety."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamheal.registry import CHAMPION, PREVIOUS, Registry, RegistryError
from streamheal.signing import REGISTRY_KEY_ENV, Signer
from tests.conftest import model_bytes, released_together


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


# ------------------------------------------------------------------ failing safe
# Every hole below must surface as a RegistryError that names the version and the file,
# never as a bare OSError, KeyError, TypeError or ValueError from deep inside.


@pytest.fixture(autouse=True)
def no_registry_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their signer explicitly; a key in the developer's shell must not leak in."""
    monkeypatch.delenv(REGISTRY_KEY_ENV, raising=False)


def one_version(tmp_path: Path, signer: Signer | None = None) -> tuple[Registry, Path]:
    """A registry holding v1, and v1's directory."""
    registry = Registry(tmp_path, "m", signer=signer)
    registry.register(model_bytes(), cause="x")
    return registry, tmp_path / "m" / "versions" / "1"


def assert_listed_as_broken(registry: Registry, version: int, match: str) -> None:
    """versions() (and so `registry list`) shows the broken version with its error."""
    listed = {entry.version: entry for entry in registry.versions()}
    assert listed[version].error is not None and re.search(match, listed[version].error)
    assert listed[version].meta["cause"].startswith("UNREADABLE")
    assert isinstance(listed[version].meta["created_at"], float)


@pytest.mark.parametrize("damage", ["deleted", "a directory"])
def test_a_missing_model_file_is_a_registry_error(tmp_path: Path, damage: str) -> None:
    registry, folder = one_version(tmp_path)
    registry.register(model_bytes(), cause="still fine")
    (folder / "model.pkl").unlink()
    if damage == "a directory":
        (folder / "model.pkl").mkdir()
    match = r"m v1: model file .*versions/1/model\.pkl"
    with pytest.raises(RegistryError, match=match):
        registry.load_bytes(1)
    with pytest.raises(RegistryError, match=match):
        registry.promote(1)  # an alias never moves to a version that cannot be served
    assert_listed_as_broken(registry, 1, match)
    assert registry.versions()[1].error is None  # the others are listed as usual


def _edit_meta(meta: dict[str, Any], **changes: Any) -> bytes:
    for key, value in changes.items():
        if value is _DROP:
            del meta[key]
        else:
            meta[key] = value
    return orjson.dumps(meta)


_DROP = object()
META_DAMAGE: dict[str, Any] = {
    "not JSON": lambda meta: b'{"size": 12',
    "not UTF-8": lambda meta: b'{"cause": "\xff\xfe"}',
    "empty": lambda meta: b"",
    "an array": lambda meta: b"[1, 2]",
    "null": lambda meta: b"null",
    "size missing": lambda meta: _edit_meta(meta, size=_DROP),
    "size a string": lambda meta: _edit_meta(meta, size="12"),
    "size a bool": lambda meta: _edit_meta(meta, size=True),
    "size negative": lambda meta: _edit_meta(meta, size=-1),
    "sha256 missing": lambda meta: _edit_meta(meta, sha256=_DROP),
    "sha256 a number": lambda meta: _edit_meta(meta, sha256=123),
    "sha256 not hex": lambda meta: _edit_meta(meta, sha256="abc"),
    "name missing": lambda meta: _edit_meta(meta, name=_DROP),
    "name null": lambda meta: _edit_meta(meta, name=None),
    "version a string": lambda meta: _edit_meta(meta, version="1"),
    "version of another directory": lambda meta: _edit_meta(meta, version=2),
    "tags missing": lambda meta: _edit_meta(meta, tags=_DROP),
    "tags a list": lambda meta: _edit_meta(meta, tags=["a"]),
    "signature a number": lambda meta: _edit_meta(meta, signature=7),
}


@pytest.mark.parametrize("damage", list(META_DAMAGE))
def test_malformed_metadata_is_a_registry_error_naming_version_and_file(
    tmp_path: Path, damage: str
) -> None:
    registry, folder = one_version(tmp_path)
    path = folder / "meta.json"
    damaged = META_DAMAGE[damage](orjson.loads(path.read_bytes()))
    path.write_bytes(damaged)
    match = r"m v1: metadata file .*versions/1/meta\.json"
    for call in (registry.meta, registry.load_bytes, registry.load, registry.promote):
        with pytest.raises(RegistryError, match=match):
            call(1)
    with pytest.raises(RegistryError, match=match):
        registry.tag(1, "k", "v")
    assert path.read_bytes() == damaged  # tag() did not rewrite what it could not read
    assert_listed_as_broken(registry, 1, match)


@pytest.mark.parametrize("damage", ["deleted", "a directory"])
def test_a_missing_metadata_file_is_a_registry_error(tmp_path: Path, damage: str) -> None:
    registry, folder = one_version(tmp_path)
    (folder / "meta.json").unlink()
    if damage == "a directory":
        (folder / "meta.json").mkdir()
    match = r"m v1: metadata file .*versions/1/meta\.json (is missing|cannot be read)"
    for call in (registry.meta, registry.load_bytes, registry.promote):
        with pytest.raises(RegistryError, match=match):
            call(1)
    with pytest.raises(RegistryError, match=match):
        registry.tag(1, "k", "v")
    assert_listed_as_broken(registry, 1, match)
    assert registry.register(model_bytes(), cause="next") == 2  # numbering goes on past it


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'"champion"',
        b'{"champion": "abc"}',
        b'{"champion": "1"}',
        b'{"champion": -1}',
        b'{"champion": 0}',
        b'{"champion": true}',
        b'{"champion": [1]}',
        b'{"champion": 1.5}',
        b'{"champion": {"v": 1}}',
    ],
)
def test_a_corrupt_aliases_file_is_a_registry_error(tmp_path: Path, content: bytes) -> None:
    registry, _ = one_version(tmp_path)
    path = tmp_path / "m" / "aliases.json"
    path.write_bytes(content)
    match = r"m: aliases file .*aliases\.json .*fix or remove it"
    with pytest.raises(RegistryError, match=match):
        registry.alias(CHAMPION)
    with pytest.raises(RegistryError, match=match):
        registry.aliases  # noqa: B018 - the property read is what is tested
    with pytest.raises(RegistryError, match=match):
        registry.versions()
    with pytest.raises(RegistryError, match=match):
        registry.promote(1)
    assert path.read_bytes() == content  # a write never papers over the corrupt file


def test_a_null_alias_reads_as_no_alias(tmp_path: Path) -> None:
    registry, _ = one_version(tmp_path)
    (tmp_path / "m" / "aliases.json").write_bytes(b'{"champion": 1, "previous": null}')
    assert registry.aliases == {CHAMPION: 1}
    assert registry.alias(PREVIOUS) is None


@pytest.mark.parametrize("version", [0, -1, True, False, "3", "1", 1.0, None])
def test_a_version_argument_must_be_an_int_from_1(tmp_path: Path, version: Any) -> None:
    registry, _ = one_version(tmp_path)
    match = r"m: a version is an integer >= 1, got"
    for call in (registry.meta, registry.load_bytes, registry.load, registry.promote):
        with pytest.raises(RegistryError, match=match):
            call(version)
    with pytest.raises(RegistryError, match=match):
        registry.set_alias("shadow", version)
    with pytest.raises(RegistryError, match=match):
        registry.tag(version, "k", "v")


def test_rollback_refuses_a_previous_version_that_is_gone(tmp_path: Path) -> None:
    registry, folder = one_version(tmp_path)
    registry.register(model_bytes(), cause="y")
    registry.promote(1)
    registry.promote(2)
    (folder / "model.pkl").unlink()
    with pytest.raises(RegistryError, match="m v1: model file"):
        registry.rollback()
    assert registry.aliases == {CHAMPION: 2, PREVIOUS: 1}


def test_a_registry_root_that_is_a_file_is_a_registry_error(tmp_path: Path) -> None:
    blocker = tmp_path / "registry"
    blocker.write_text("not a directory")
    where = re.escape(str(blocker / "m" / "versions"))
    with pytest.raises(RegistryError, match=rf"m: registry directory {where} cannot be created"):
        Registry(blocker, "m")


def test_a_registry_root_without_permission_is_a_registry_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(self: Path, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)  # as root a chmod would not stop us
    where = re.escape(str(tmp_path / "m" / "versions"))
    with pytest.raises(RegistryError, match=rf"{where} cannot be created: Permission denied"):
        Registry(tmp_path, "m")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_registry_root_is_a_registry_error(tmp_path: Path) -> None:
    registry, _ = one_version(tmp_path)
    (tmp_path / "m" / ".lock").unlink()
    (tmp_path / "m").chmod(0o555)
    try:
        with pytest.raises(RegistryError, match="cannot lock the registry"):
            registry.register(model_bytes(), cause="x")
        assert registry.meta(1)["cause"] == "x"  # reading still works
    finally:
        (tmp_path / "m").chmod(0o755)


# --------------------------------------------------------------------- signatures


class _Evil:
    """A pickle that, once unpickled, leaves a file behind: proof that it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _replace_model(folder: Path, blob: bytes) -> None:
    """What an attacker with write access but no key does: swap the pickle and rewrite
    the size and SHA-256 in meta.json so the checksum check passes."""
    (folder / "model.pkl").write_bytes(blob)
    meta = orjson.loads((folder / "meta.json").read_bytes())
    meta["size"], meta["sha256"] = len(blob), hashlib.sha256(blob).hexdigest()
    (folder / "meta.json").write_bytes(orjson.dumps(meta))


def test_a_signed_model_round_trips(tmp_path: Path) -> None:
    signer = Signer(b"registry-key")
    registry, _ = one_version(tmp_path, signer)
    assert registry.meta(1)["signature"] == signer.sign(model_bytes())
    assert registry.load_bytes(1) == model_bytes()
    registry.tag(1, "reviewed", "yes")  # rewriting meta.json keeps the signature
    assert registry.load(1).predict_proba_one({"x": 1.0})[True] > 0.5


def test_the_key_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REGISTRY_KEY_ENV, "from-env")
    registry, _ = one_version(tmp_path)
    assert registry.meta(1)["signature"] == Signer(b"from-env").sign(model_bytes())
    monkeypatch.setenv(REGISTRY_KEY_ENV, "another")
    with pytest.raises(RegistryError, match="signature does not match"):
        Registry(tmp_path, "m").load_bytes(1)


def test_a_replaced_pickle_with_recomputed_checksum_is_refused_when_signed(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Evil(marker))
    registry, folder = one_version(tmp_path, Signer(b"registry-key"))
    _replace_model(folder, evil)
    assert Registry(tmp_path, "m", signer=None).load_bytes(1) == evil  # a checksum is no defence
    with pytest.raises(RegistryError, match=r"signature does not match: .*STREAMHEAL_REGISTRY_KEY"):
        registry.load(1)
    assert not marker.exists()  # refused before unpickling


def test_an_unsigned_version_is_refused_when_a_key_is_set(tmp_path: Path) -> None:
    one_version(tmp_path, signer=None)
    signed = Registry(tmp_path, "m", signer=Signer(b"registry-key"))
    with pytest.raises(RegistryError, match=r"m v1: signature does not match \(.*carries none"):
        signed.load_bytes(1)


def test_a_version_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    one_version(tmp_path, Signer(b"old-key"))
    with pytest.raises(RegistryError, match=r"m v1: signature does not match: .*refusing"):
        Registry(tmp_path, "m", signer=Signer(b"new-key")).load_bytes(1)


def test_the_signature_is_checked_after_the_checksum(tmp_path: Path) -> None:
    registry, folder = one_version(tmp_path, Signer(b"registry-key"))
    (folder / "model.pkl").write_bytes(model_bytes()[:-3])
    with pytest.raises(RegistryError, match="truncated"):
        registry.load_bytes(1)


# ------------------------------------------------------------- the version authority
# Every version number, stored or issued for a model made online, comes from one sequence.


def test_issued_and_registered_numbers_share_one_increasing_sequence(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "m")
    numbers = [
        registry.register(model_bytes(), cause="start"),
        registry.issue_version(parent=1, cause="drift", partition=0, action="reset"),
        registry.issue_version(parent=1, cause="drift", partition=1, action="reset"),
        registry.register(model_bytes(), cause="snapshot"),
        registry.issue_version(parent=2, cause="challenger won", partition=0, action="promote"),
    ]
    assert numbers == [1, 2, 3, 4, 5]
    assert [v.version for v in registry.versions()] == [1, 4]  # issued numbers store nothing
    assert Registry(tmp_path, "m").register(model_bytes(), cause="another process") == 6


def test_lineage_round_trips_and_is_none_for_other_numbers(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "m")
    registry.register(model_bytes(), cause="start")
    issued = registry.issue_version(parent=1, cause="concept drift", partition=3, action="reset")
    fresh = registry.issue_version(parent=None, cause="start", partition=None, action="reset")
    entry = Registry(tmp_path, "m").lineage(issued)
    assert entry is not None and isinstance(entry.pop("created_at"), float)
    assert entry == {
        "version": issued,
        "parent": 1,
        "cause": "concept drift",
        "partition": 3,
        "action": "reset",
    }
    assert registry.lineage(fresh)["parent"] is None  # type: ignore[index]
    assert registry.lineage(1) is None  # a stored version has no lineage entry
    assert registry.lineage(99) is None


def test_a_removed_counter_or_version_never_lets_a_number_be_reused(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "m")
    registry.register(model_bytes(), cause="x")
    registry.issue_version(parent=1, cause="drift", partition=0, action="reset")
    (tmp_path / "m" / "last_version").unlink()
    assert registry.issue_version(parent=2, cause="drift", partition=0, action="reset") == 3
    for leftover in (tmp_path / "m" / "versions" / "1").iterdir():
        leftover.unlink()
    (tmp_path / "m" / "versions" / "1").rmdir()
    (tmp_path / "m" / "lineage.jsonl").unlink()
    assert registry.register(model_bytes(), cause="y") == 4  # last_version still says 3


@pytest.mark.parametrize(
    "call",
    [
        lambda r, v: r.issue_version(parent=v, cause="x", partition=0, action="reset"),
        lambda r, v: r.issue_version(parent=None, cause="x", partition=-1, action="reset"),
        lambda r, v: r.issue_version(parent=None, cause="x", partition=True, action="reset"),
        lambda r, v: r.issue_version(parent=None, cause=None, partition=0, action="reset"),
        lambda r, v: r.issue_version(parent=None, cause="x", partition=0, action=""),
        lambda r, v: r.lineage(v),
    ],
)
def test_bad_issue_arguments_are_registry_errors_that_issue_nothing(tmp_path: Path, call) -> None:
    registry = Registry(tmp_path, "m")
    with pytest.raises(RegistryError, match=r"^m: an? \w+ is "):
        call(registry, 0)
    assert registry.issue_version(parent=None, cause="x", partition=0, action="reset") == 1


def _issue_and_register(root: str, partition: int) -> list[tuple[str, int]]:
    registry = Registry(root, "m")
    got = []
    for i in range(55):
        if i % 11 == 10:
            got.append(("stored", registry.register(model_bytes(), cause=f"p{partition}")))
        else:
            issued = registry.issue_version(
                parent=None, cause="drift", partition=partition, action="reset"
            )
            got.append(("issued", issued))
    return got


def test_two_processes_never_get_the_same_number(tmp_path: Path) -> None:
    by_partition = released_together(_issue_and_register, [(str(tmp_path), p) for p in (0, 1)])
    numbers = [n for got in by_partition for _, n in got]
    assert sorted(numbers) == list(range(1, 111))  # no number twice, none skipped
    registry = Registry(tmp_path, "m")
    for partition, got in enumerate(by_partition):
        assert [n for _, n in got] == sorted(n for _, n in got)  # each one's own increase
        for kind, number in got:
            entry = registry.lineage(number)
            if kind == "issued":
                assert entry is not None and entry["partition"] == partition
            else:
                assert entry is None and registry.meta(number)["cause"] == f"p{partition}"
    assert (tmp_path / "m" / "last_version").read_text() == "110\n"


@pytest.mark.parametrize("content", [b"seven\n", b"-1\n", b"", b"3.5\n", b"\xff\xfe"])
def test_a_corrupt_counter_file_is_a_registry_error_naming_it(
    tmp_path: Path, content: bytes
) -> None:
    registry, _ = one_version(tmp_path)
    path = tmp_path / "m" / "last_version"
    path.write_bytes(content)
    match = rf"m: version counter file {re.escape(str(path))} holds .*fix it, or remove it"
    with pytest.raises(RegistryError, match=match):
        registry.issue_version(parent=1, cause="drift", partition=0, action="reset")
    with pytest.raises(RegistryError, match=match):
        registry.register(model_bytes(), cause="y")
    assert path.read_bytes() == content  # never papered over
    path.unlink()
    assert registry.issue_version(parent=1, cause="drift", partition=0, action="reset") == 2


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"not json", "is not valid JSON"),
        (b"[1, 2]", "is an array, expected a JSON object"),
        (b'{"version": 2}', "is malformed: 'parent' is missing"),
        (
            b'{"version": 2, "parent": 0, "cause": "x", "partition": 0, "action": "reset",'
            b' "created_at": 1.0}',
            "is malformed: 'parent' is 0, expected an integer >= 1 or null",
        ),
    ],
)
def test_a_corrupt_lineage_file_is_a_registry_error_naming_file_and_line(
    tmp_path: Path, line: bytes, problem: str
) -> None:
    registry, _ = one_version(tmp_path)
    registry.issue_version(parent=1, cause="drift", partition=0, action="reset")
    path = tmp_path / "m" / "lineage.jsonl"
    path.write_bytes(path.read_bytes() + line + b"\n")
    match = rf"m: lineage file {re.escape(str(path))} line 2 {re.escape(problem)}"
    with pytest.raises(RegistryError, match=match):
        registry.lineage(2)
    with pytest.raises(RegistryError, match=match):
        registry.issue_version(parent=2, cause="drift", partition=0, action="reset")


def test_an_issued_number_has_no_model_to_load_tag_alias_or_promote(tmp_path: Path) -> None:
    registry, _ = one_version(tmp_path)
    issued = registry.issue_version(parent=1, cause="concept drift", partition=2, action="reset")
    match = (
        r"model 'm' v2 is a serving version made online \(reset of v1 on partition 2, "
        r"cause: concept drift\); it has no stored model, so it cannot be .*promoted"
    )
    for call in (registry.meta, registry.load_bytes, registry.load, registry.promote):
        with pytest.raises(RegistryError, match=match):
            call(issued)
    with pytest.raises(RegistryError, match=match):
        registry.set_alias("shadow", issued)
    with pytest.raises(RegistryError, match=match):
        registry.tag(issued, "k", "v")
    assert registry.aliases == {}


def test_the_command_line_shows_an_issued_number_and_refuses_to_promote_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamheal.cli import main

    monkeypatch.setenv("STREAMHEAL_REGISTRY__PATH", str(tmp_path))
    monkeypatch.setenv("STREAMHEAL_REGISTRY__MODEL_NAME", "m")
    registry, _ = one_version(tmp_path)
    registry.issue_version(parent=1, cause="concept drift", partition=2, action="reset")
    assert main(["registry", "show", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "model 'm' v2 is a serving version made online (reset of v1 on partition 2, "
        "cause: concept drift); it has no stored model\n"
    )
    assert '"parent": 1' in out
    assert main(["registry", "list"]) == 0
    assert capsys.readouterr().out.startswith("v1  ")
    assert main(["registry", "promote", "2"]) == 1
    err = capsys.readouterr().err
    assert "streamheal registry: model 'm' v2 is a serving version made online" in err
    assert "cannot be loaded, tagged or promoted" in err
    assert registry.aliases == {}


# ------------------------------------------------------- the worker's version authority
def test_a_fresh_model_keeps_its_number_across_restarts_and_workers(tmp_path: Path) -> None:
    from streamheal.config import Config
    from streamheal.registry.authority import RegistryVersions

    registry = Registry(tmp_path, "m")
    config = Config()
    first = RegistryVersions(registry).fresh_version(config)
    again = RegistryVersions(Registry(tmp_path, "m")).fresh_version(config)  # a restart
    assert first == again == 1
    other = RegistryVersions(registry).fresh_version(config.replace(engine={"seed": 7}))
    assert other == 2  # another seed builds another model: another number
    versions = RegistryVersions(registry)
    assert versions.issue_version(parent=1, cause="drift", partition=0, action="reset") == 3
    assert registry.lineage(3)["partition"] == 0


def test_a_registry_that_cannot_answer_does_not_stop_or_stall_the_stream(
    tmp_path: Path,
) -> None:
    import fcntl

    from streamheal.registry.authority import RegistryVersions

    registry = Registry(tmp_path, "m")
    versions = RegistryVersions(registry, answer_seconds=0.2)
    versions.observe_version(7)  # e.g. restored from a checkpoint
    (tmp_path / "m" / "last_version").write_text("not a number")
    assert versions.issue_version(parent=7, cause="c", partition=0, action="reset") == 8
    (tmp_path / "m" / "last_version").write_text("8")
    with open(tmp_path / "m" / ".lock", "a+") as held:  # another process holds the registry
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            assert versions.issue_version(parent=8, cause="c", partition=1, action="reset") == 9
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    assert versions.fallbacks == 2
    # Once the registry answers again, its numbers are used (the late answer took 9).
    assert versions.issue_version(parent=9, cause="c", partition=1, action="promote") == 10


@pytest.mark.parametrize(
    ("option", "value"),
    [("--reason", "first line\nsecond line"), ("--by", "ana\x1b[31m"), ("--reason", "x" * 501)],
)
def test_the_command_line_refuses_what_the_workers_would_before_moving_the_champion(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
) -> None:
    # Workers refuse a command whose `by` or `reason` breaks their schema; the champion
    # must not move on a promote that every worker would then ignore.
    from streamheal.cli import main

    monkeypatch.setenv("STREAMHEAL_REGISTRY__PATH", str(tmp_path))
    monkeypatch.setenv("STREAMHEAL_REGISTRY__MODEL_NAME", "m")
    registry, _ = one_version(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["registry", "promote", "1", option, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: streamheal registry promote") and option in err
    assert registry.aliases == {}
