"""A model registry on a local directory: numbered versions, metadata, tags and aliases.

Layout under ``root/<model name>/``::

    versions/1/model.pkl   the serialized model
    versions/1/meta.json   created_at, cause, metrics, offsets, config hash, library
                           versions, tags, and the model file's size and SHA-256
    aliases.json           {"champion": 3, "previous": 2, ...}
    .lock                  flock()ed by every writer

Every write goes to a temporary file that is fsync'ed and renamed into place, so a crash
leaves the old state or the new one, never half of either. A version directory appears
whole (renamed from a temporary directory). Loading checks the model file's size and
SHA-256 against the metadata *before* unpickling: a truncated or tampered file is refused
with :class:`RegistryError`, never unpickled blindly.

>>> import tempfile
>>> registry = Registry(tempfile.mkdtemp(), "demo")
>>> v = registry.register(b"model-bytes", cause="start")
>>> registry.promote(v).aliases["champion"]
1
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from streamheal.config import RegistryConfig

CHAMPION = "champion"
PREVIOUS = "previous"


class RegistryError(RuntimeError):
    """The registry refused an operation (unknown version, corrupt file, ...)."""


@dataclass
class ModelVersion:
    version: int
    meta: dict[str, Any]
    aliases: list[str] = field(default_factory=list)


@dataclass
class AliasState:
    aliases: dict[str, int]


class Registry:
    def __init__(self, root: str | Path, name: str = "streamheal") -> None:
        self.root = Path(root).expanduser() / name
        self.name = name
        (self.root / "versions").mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- writing
    def register(
        self,
        model: bytes,
        cause: str,
        metrics: dict[str, Any] | None = None,
        offsets: dict[str, Any] | None = None,
        config_hash: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> int:
        """Store a serialized model as the next version; return its number."""
        with self._locked():
            version = self._next_version()
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
            try:
                _write_atomic(staging / "model.pkl", model)
                meta = build_meta(
                    self.name, version, model, cause, metrics, offsets, config_hash, tags
                )
                _write_atomic(staging / "meta.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2))
                os.rename(staging, self.root / "versions" / str(version))
            except BaseException:
                _remove_tree(staging)
                raise
            _fsync_dir(self.root / "versions")
        return version

    def set_alias(self, alias: str, version: int) -> AliasState:
        with self._locked():
            self._require(version)
            aliases = self._aliases()
            aliases[alias] = version
            self._write_aliases(aliases)
            return AliasState(aliases)

    def promote(self, version: int) -> AliasState:
        """``champion`` -> ``version``; the old champion becomes ``previous`` (one write)."""
        with self._locked():
            self._require(version)
            aliases = self._aliases()
            if aliases.get(CHAMPION) is not None and aliases[CHAMPION] != version:
                aliases[PREVIOUS] = aliases[CHAMPION]
            aliases[CHAMPION] = version
            self._write_aliases(aliases)
            return AliasState(aliases)

    def rollback(self) -> AliasState:
        """Swap ``champion`` and ``previous``."""
        with self._locked():
            aliases = self._aliases()
            if PREVIOUS not in aliases:
                raise RegistryError(f"{self.name}: no previous champion to roll back to")
            aliases[CHAMPION], aliases[PREVIOUS] = aliases[PREVIOUS], aliases.get(CHAMPION)
            self._write_aliases(aliases)
            return AliasState(aliases)

    def tag(self, version: int, key: str, value: str) -> None:
        with self._locked():
            meta = self.meta(version)
            meta["tags"][key] = value
            path = self.root / "versions" / str(version) / "meta.json"
            _write_atomic(path, orjson.dumps(meta, option=orjson.OPT_INDENT_2))

    # ----------------------------------------------------------------- reading
    def versions(self) -> list[ModelVersion]:
        aliases = self._aliases()
        by_version: dict[int, list[str]] = {}
        for alias, v in aliases.items():
            by_version.setdefault(v, []).append(alias)
        return [
            ModelVersion(v, self.meta(v), sorted(by_version.get(v, [])))
            for v in sorted(self._numbers())
        ]

    def meta(self, version: int) -> dict[str, Any]:
        path = self.root / "versions" / str(version) / "meta.json"
        try:
            return orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise RegistryError(f"{self.name}: no version {version}") from None
        except orjson.JSONDecodeError as err:
            raise RegistryError(f"{self.name} v{version}: metadata is corrupt ({err})") from err

    def load_bytes(self, version: int) -> bytes:
        """The model's bytes, after checking size and SHA-256 against the metadata."""
        blob = (self.root / "versions" / str(version) / "model.pkl").read_bytes()
        return verified(blob, self.meta(version))

    def load(self, version: int) -> Any:
        from streamheal import models

        return models.loads(self.load_bytes(version))

    def alias(self, alias: str) -> int | None:
        return self._aliases().get(alias)

    @property
    def aliases(self) -> dict[str, int]:
        return self._aliases()

    # --------------------------------------------------------------- internals
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _numbers(self) -> list[int]:
        return [int(p.name) for p in (self.root / "versions").iterdir() if p.name.isdigit()]

    def _next_version(self) -> int:
        return max(self._numbers(), default=0) + 1

    def _require(self, version: int) -> None:
        if not (self.root / "versions" / str(version) / "meta.json").exists():
            raise RegistryError(f"{self.name}: no version {version}")

    def _aliases(self) -> dict[str, int]:
        path = self.root / "aliases.json"
        try:
            return {k: int(v) for k, v in orjson.loads(path.read_bytes()).items() if v is not None}
        except FileNotFoundError:
            return {}

    def _write_aliases(self, aliases: dict[str, int]) -> None:
        _write_atomic(self.root / "aliases.json", orjson.dumps(aliases, option=orjson.OPT_INDENT_2))


def build_meta(
    name: str,
    version: int,
    model: bytes,
    cause: str,
    metrics: dict[str, Any] | None,
    offsets: dict[str, Any] | None,
    config_hash: str | None,
    tags: dict[str, str] | None,
) -> dict[str, Any]:
    """A version's metadata, with the size and SHA-256 that loading checks."""
    return {
        "version": version,
        "name": name,
        "created_at": time.time(),
        "cause": cause,
        "metrics": metrics or {},
        "offsets": offsets or {},
        "config_hash": config_hash,
        "libraries": _libraries(),
        "tags": dict(tags or {}),
        "size": len(model),
        "sha256": hashlib.sha256(model).hexdigest(),
    }


def verified(blob: bytes, meta: dict[str, Any]) -> bytes:
    """``blob`` if its size and SHA-256 match ``meta``; RegistryError before any unpickling."""
    where = f"{meta['name']} v{meta['version']}"
    if len(blob) != meta["size"]:
        raise RegistryError(
            f"{where}: model file is {len(blob)} bytes, expected {meta['size']} "
            "(truncated?); refusing to load it"
        )
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise RegistryError(
            f"{where}: model file checksum does not match its metadata "
            "(tampered or corrupt); refusing to unpickle it"
        )
    return blob


class RegistryBackend(Protocol):
    """What the worker and the CLI need of a registry; both backends provide it."""

    name: str

    def register(
        self,
        model: bytes,
        cause: str,
        metrics: dict[str, Any] | None = None,
        offsets: dict[str, Any] | None = None,
        config_hash: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> int: ...
    def meta(self, version: int) -> dict[str, Any]: ...
    def load_bytes(self, version: int) -> bytes: ...
    def load(self, version: int) -> Any: ...
    def versions(self) -> list[ModelVersion]: ...
    def set_alias(self, alias: str, version: int) -> AliasState: ...
    def promote(self, version: int) -> AliasState: ...
    def rollback(self) -> AliasState: ...
    def tag(self, version: int, key: str, value: str) -> None: ...
    def alias(self, alias: str) -> int | None: ...


def open_registry(cfg: RegistryConfig) -> RegistryBackend:
    """The configured backend: a local directory, or MLflow (the `mlflow` extra)."""
    if cfg.backend == "mlflow":
        from streamheal.registry_mlflow import MlflowRegistry

        return MlflowRegistry(cfg.tracking_uri, cfg.model_name, cfg.path)
    return Registry(cfg.path, cfg.model_name)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _libraries() -> dict[str, str]:
    import numpy
    import river

    return {
        "python": platform.python_version(),
        "river": river.__version__,
        "numpy": numpy.__version__,
    }
