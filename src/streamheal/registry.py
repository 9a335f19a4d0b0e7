"""A model registry on a local directory: numbered versions, metadata, tags and aliases.

Layout under ``root/<model name>/``::

    versions/1/model.pkl   the serialized model
    versions/1/meta.json   created_at, cause, metrics, offsets, config hash, library
                           versions, tags, the model file's size and SHA-256, and its
                           HMAC signature when a registry key is set
    aliases.json           {"champion": 3, "previous": 2, ...}
    .lock                  flock()ed by every writer

Every write goes to a temporary file that is fsync'ed and renamed into place, so a crash
leaves the old state or the new one, never half of either. A version directory appears
whole (renamed from a temporary directory). An I/O failure while writing (disk full,
power cut) propagates as :class:`OSError` and leaves the previous state in place.

The registry fails safe. Loading checks the model file's size and SHA-256 against the
metadata *before* unpickling: a truncated or corrupt file is refused with
:class:`RegistryError`, never unpickled blindly. When ``STREAMHEAL_REGISTRY_KEY`` is set
(see :mod:`streamheal.signing`), :meth:`Registry.register` also stores an HMAC signature of
the model file, and loading refuses a version whose signature is missing or wrong, after
the size and checksum checks and still before unpickling. A checksum only catches
accidents: whoever can write ``model.pkl`` can rewrite the checksum in ``meta.json`` too;
only the key holder can produce the signature. Without a key, only the checksum is checked.

Every malformed or missing file is a :class:`RegistryError` whose message names the
version and the file, never a bare ``KeyError``, ``OSError`` or ``ValueError``:

- a missing or unreadable ``model.pkl`` or ``meta.json``; a ``meta.json`` that is not JSON,
  not an object, or lacks a well-typed ``name``, ``version`` (matching its directory),
  ``size``, ``sha256``, ``tags``, ``created_at`` or ``cause``;
- a corrupt ``aliases.json`` (not JSON, not an object, or a value that is not a version
  number >= 1): :attr:`Registry.aliases`, :meth:`Registry.alias` and every alias write
  raise, so the worker falls back to a fresh model and an operator fixes or removes the
  file the message names; a write never silently replaces it;
- a version argument that is not an ``int`` >= 1 (``0``, ``-1``, ``True``, ``"3"``);
- a registry root that cannot be created or locked.

:meth:`Registry.versions` (``streamheal registry list``) does not stop at one broken
version: it lists it with ``ModelVersion.error`` set and a stand-in ``meta`` of
``{"error": ..., "cause": "UNREADABLE: ...", "created_at": <directory mtime>, ...}``, so
the listing shows every version and says which ones cannot be served.

>>> import tempfile
>>> registry = Registry(tempfile.mkdtemp(), "demo")
>>> v = registry.register(b"model-bytes", cause="start")
>>> registry.promote(v).aliases["champion"]
1
>>> registry.meta(0)
Traceback (most recent call last):
...
streamheal.registry.RegistryError: demo: a version is an integer >= 1, got 0
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from streamheal.config import RegistryConfig
from streamheal.errors import StreamhealError
from streamheal.signing import REGISTRY_KEY_ENV, Signer

CHAMPION = "champion"
PREVIOUS = "previous"

_SHA256 = re.compile(r"[0-9a-f]{64}")


class RegistryError(StreamhealError, RuntimeError):
    """The registry refused an operation (unknown version, corrupt file, ...).

    The message names the model, so ``registry show`` reads unambiguously.

    Examples
    --------
    >>> import tempfile
    >>> try:
    ...     Registry(tempfile.mkdtemp(), "fraud").meta(3)
    ... except RegistryError as err:
    ...     print(err)
    model 'fraud' has no version 3
    """


@dataclass
class ModelVersion:
    """One version as listed: its number, metadata and the aliases pointing at it.

    A version whose files cannot be read is still listed; its ``meta`` then carries an
    ``"error"`` entry (see :attr:`error`) instead of the stored metadata.
    """

    version: int
    meta: dict[str, Any]
    aliases: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        """Why this version cannot be served, or None when it looks whole."""
        return self.meta.get("error")


@dataclass
class AliasState:
    aliases: dict[str, int]


class Registry:
    """The local-directory backend.

    Parameters
    ----------
    root
        Directory holding one sub-directory per model name; created when missing.
    name
        The model's name: a single path component.
    signer
        Signs model files on register and verifies them on load. None (the default)
        reads ``STREAMHEAL_REGISTRY_KEY`` from the environment; when that is unset too,
        nothing is signed and only checksums are checked.
    """

    def __init__(
        self, root: str | Path, name: str = "streamheal", signer: Signer | None = None
    ) -> None:
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name:
            # The name becomes a directory: a "/" or ".." would escape the root.
            raise RegistryError(f"registry model name must be one path component, got {name!r}")
        self.root = Path(root).expanduser() / name
        self.name = name
        self.signer = signer if signer is not None else Signer.from_env(REGISTRY_KEY_ENV)
        try:
            (self.root / "versions").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RegistryError(
                f"{name}: registry directory {self.root / 'versions'} cannot be created: "
                f"{err.strerror or err}"
            ) from err

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
                    self.name,
                    version,
                    model,
                    cause,
                    metrics,
                    offsets,
                    config_hash,
                    tags,
                    signer=self.signer,
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
            previous = aliases.get(PREVIOUS)
            if previous is None:
                raise RegistryError(f"model {self.name!r} has no previous champion to roll back to")
            self._require(previous)  # never point champion at a version that is gone
            current = aliases.get(CHAMPION)
            aliases[CHAMPION] = previous
            if current is None:
                del aliases[PREVIOUS]  # no null in the file: it reads as "no alias" anyway
            else:
                aliases[PREVIOUS] = current
            self._write_aliases(aliases)
            return AliasState(aliases)

    def tag(self, version: int, key: str, value: str) -> None:
        with self._locked():
            meta = self.meta(version)  # RegistryError when broken: never rewrite a bad file
            meta["tags"][key] = value
            _write_atomic(
                self._file(version, "meta.json"), orjson.dumps(meta, option=orjson.OPT_INDENT_2)
            )

    # ----------------------------------------------------------------- reading
    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first; a broken one is listed with its error, not raised."""
        by_version: dict[int, list[str]] = {}
        for alias, v in self._aliases().items():
            by_version.setdefault(v, []).append(alias)
        listed = []
        for v in sorted(self._numbers()):
            try:
                meta = self.meta(v)
                self._check_model_file(v, meta)
            except RegistryError as err:
                meta = unreadable_meta(self.name, v, str(err), self._mtime(v))
            listed.append(ModelVersion(v, meta, sorted(by_version.get(v, []))))
        return listed

    def meta(self, version: int) -> dict[str, Any]:
        """A version's metadata, checked for shape (RegistryError when malformed)."""
        version = check_version(self.name, version)
        path = self._file(version, "meta.json")
        raw = self._read(version, "meta.json", "metadata file")
        try:
            meta = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise RegistryError(
                f"{self.name} v{version}: metadata file {path} is not valid JSON ({err})"
            ) from err
        return check_meta(meta, f"{self.name} v{version}", f"metadata file {path}", version)

    def load_bytes(self, version: int) -> bytes:
        """The model's bytes, after checking size, SHA-256 and signature against the metadata."""
        meta = self.meta(version)  # first: an unknown version says so, not "model.pkl missing"
        blob = self._read(version, "model.pkl", "model file")
        return verified(blob, meta, self.signer)

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
        path = self.root / ".lock"
        try:
            lock = open(path, "a+")  # noqa: SIM115 - closed below, after the yield
        except OSError as err:
            raise RegistryError(
                f"{self.name}: cannot lock the registry ({path}): {err.strerror or err}"
            ) from err
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _file(self, version: int, filename: str) -> Path:
        return self.root / "versions" / str(version) / filename

    def _read(self, version: int, filename: str, what: str) -> bytes:
        path = self._file(version, filename)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if not os.path.lexists(path.parent):
                raise RegistryError(f"model {self.name!r} has no version {version}") from None
            raise RegistryError(f"{self.name} v{version}: {what} {path} is missing") from None
        except OSError as err:  # a directory, no permission, versions/<n> a plain file, ...
            raise RegistryError(
                f"{self.name} v{version}: {what} {path} cannot be read: {err.strerror or err}"
            ) from err

    def _check_model_file(self, version: int, meta: dict[str, Any]) -> None:
        """A cheap look at model.pkl for listings and alias moves: present, plain, right size."""
        path = self._file(version, "model.pkl")
        try:
            size = path.stat().st_size if path.is_file() else None
        except OSError as err:
            raise RegistryError(
                f"{self.name} v{version}: model file {path} cannot be read: {err.strerror or err}"
            ) from err
        if size is None:
            state = "missing" if not os.path.lexists(path) else "not a regular file"
            raise RegistryError(f"{self.name} v{version}: model file {path} is {state}")
        if size != meta["size"]:
            raise RegistryError(
                f"{self.name} v{version}: model file {path} is {size} bytes, "
                f"expected {meta['size']} (truncated?)"
            )

    def _mtime(self, version: int) -> float:
        try:
            return (self.root / "versions" / str(version)).lstat().st_mtime
        except OSError:
            return 0.0

    def _numbers(self) -> list[int]:
        folder = self.root / "versions"
        try:
            names = [p.name for p in folder.iterdir()]
        except OSError as err:
            raise RegistryError(
                f"{self.name}: cannot list versions in {folder}: {err.strerror or err}"
            ) from err
        # Only names register() writes ("1", "2", ...): not ".staging-*", "007" or "٣".
        return [int(n) for n in names if n.isascii() and n.isdigit() and not n.startswith("0")]

    def _next_version(self) -> int:
        return max(self._numbers(), default=0) + 1

    def _require(self, version: int) -> None:
        """RegistryError unless ``version`` exists with sound metadata and a model file."""
        self._check_model_file(check_version(self.name, version), self.meta(version))

    def _aliases(self) -> dict[str, int]:
        path = self.root / "aliases.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise RegistryError(
                f"{self.name}: aliases file {path} cannot be read: {err.strerror or err}"
            ) from err
        return parse_aliases(raw, f"{self.name}: aliases file {path}")

    def _write_aliases(self, aliases: dict[str, int]) -> None:
        _write_atomic(self.root / "aliases.json", orjson.dumps(aliases, option=orjson.OPT_INDENT_2))


def check_version(name: str, version: object) -> int:
    """``version`` if it is an ``int`` >= 1 (not a bool), else RegistryError.

    A bool is an int to Python, and ``"3"`` would build the right path by accident; both
    are refused so a caller's mistake surfaces here, not as a wrong or missing version.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryError(f"{name}: a version is an integer >= 1, got {_show(version)}")
    return version


def parse_aliases(raw: bytes | str, where: str) -> dict[str, int]:
    """``{alias: version}`` from aliases.json bytes; RegistryError naming ``where`` if corrupt.

    A ``null`` value means "no alias" (files written before rollback dropped it).
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise RegistryError(f"{where} is not valid JSON ({err}); fix or remove it") from err
    if not isinstance(data, dict):
        raise RegistryError(
            f"{where} is {_json_type(data)}, expected a JSON object; fix or remove it"
        )
    bad = [
        f"{_show(k, True)}: {_show(v, True)}"
        for k, v in data.items()
        if v is not None and not _is_version(v)
    ]
    if bad:
        raise RegistryError(
            f"{where} maps aliases to things that are not version numbers >= 1 "
            f"({', '.join(bad)}); fix or remove it"
        )
    return {k: v for k, v in data.items() if v is not None}


def check_meta(meta: object, where: str, source: str, version: int | None = None) -> dict[str, Any]:
    """``meta`` if it has every field loading and listing use, well typed; else RegistryError.

    Parameters
    ----------
    meta
        The decoded metadata.
    where
        ``"<name> v<version>"``, the start of every message.
    source
        Where the metadata came from (a file path, an MLflow description), for messages.
    version
        The version the caller asked for; the metadata must say the same (a meta.json
        copied into the wrong directory would otherwise describe another model).
    """
    if not isinstance(meta, dict):
        raise RegistryError(f"{where}: {source} is {_json_type(meta)}, expected a JSON object")
    problems = []
    for key, (is_ok, expected) in _META_SHAPE.items():
        if key not in meta:
            problems.append(f"'{key}' is missing")
        elif not is_ok(meta[key]):
            problems.append(f"'{key}' is {_show(meta[key], True)}, expected {expected}")
    signature = meta.get("signature")
    if signature is not None and not isinstance(signature, str):
        problems.append(f"'signature' is {_show(signature, True)}, expected a hex string")
    if problems:
        raise RegistryError(f"{where}: {source} is malformed: {'; '.join(problems)}")
    if version is not None and meta["version"] != version:
        raise RegistryError(
            f"{where}: {source} describes version {meta['version']}, not {version} "
            "(copied from another version?)"
        )
    return meta


_META_SHAPE: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, str), "a string"),
    "version": (lambda v: _is_version(v), "an integer >= 1"),
    "size": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "sha256": (lambda v: isinstance(v, str) and _SHA256.fullmatch(v), "64 lowercase hex digits"),
    "tags": (lambda v: isinstance(v, dict), "a JSON object"),
    "created_at": (lambda v: _is_int(v) or isinstance(v, float), "a number"),
    "cause": (lambda v: isinstance(v, str), "a string"),
}


def unreadable_meta(name: str, version: int, error: str, created_at: float) -> dict[str, Any]:
    """The stand-in metadata :meth:`Registry.versions` lists for a version it cannot read.

    ``cause`` and ``created_at`` are filled so a listing that prints them shows the
    problem instead of failing on a missing key.
    """
    return {
        "name": name,
        "version": version,
        "error": error,
        "cause": f"UNREADABLE: {error}",
        "created_at": created_at,
        "tags": {},
    }


def build_meta(
    name: str,
    version: int,
    model: bytes,
    cause: str,
    metrics: dict[str, Any] | None,
    offsets: dict[str, Any] | None,
    config_hash: str | None,
    tags: dict[str, str] | None,
    signer: Signer | None = None,
) -> dict[str, Any]:
    """A version's metadata, with the size, SHA-256 and (keyed) signature that loading checks."""
    meta = {
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
    if signer is not None:
        meta["signature"] = signer.sign(model)
    return meta


def verified(blob: bytes, meta: dict[str, Any], signer: Signer | None = None) -> bytes:
    """``blob`` if it matches ``meta``; RegistryError before any unpickling.

    Checks, in order: the metadata's shape, the size, the SHA-256 and, when ``signer``
    is given, the HMAC signature. The checksum catches accidents; only the signature
    catches a model replaced on purpose, since the replacer can recompute the checksum.
    """
    where = f"{meta.get('name')} v{meta.get('version')}" if isinstance(meta, dict) else "model"
    check_meta(meta, where, "metadata")
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
    if signer is not None and not signer.verify(blob, meta.get("signature")):
        missing = " (its metadata carries none)" if meta.get("signature") is None else ""
        raise RegistryError(
            f"{where}: signature does not match{missing}: the model file or its metadata was "
            f"not written by a holder of {REGISTRY_KEY_ENV}; refusing to unpickle it"
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
    """The configured backend: a local directory, or MLflow (the `mlflow` extra).

    Both read ``STREAMHEAL_REGISTRY_KEY`` from the environment to sign and verify models.
    """
    if cfg.backend == "mlflow":
        from streamheal.registry_mlflow import MlflowRegistry

        return MlflowRegistry(cfg.tracking_uri, cfg.model_name, cfg.path)
    return Registry(cfg.path, cfg.model_name)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_version(value: object) -> bool:
    return _is_int(value) and value >= 1  # type: ignore[operator]


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "?")


def _show(value: object, as_json: bool = False) -> str:
    """A short rendering for messages: a corrupt file may hold megabytes in one value.

    Values read from a file are shown as JSON (``true``, not ``True``), arguments as Python.
    """
    text = repr(value)
    if as_json:
        with contextlib.suppress(TypeError):
            text = orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


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
