"""A model registry on a local directory: numbered versions, metadata, tags and aliases.

Layout under ``root/<model name>/``::

    versions/1/model.pkl   the serialized model
    versions/1/meta.json   created_at, cause, metrics, offsets, config hash, library
                           versions, tags, the model file's size and SHA-256, and its
                           HMAC signature when a registry key is set
    aliases.json           {"champion": 3, "previous": 2, ...}
    last_version           the highest version number handed out so far (text, e.g. "7")
    lineage.jsonl          one JSON line per number issued for a model made online
    .lock                  flock()ed by every writer

Version numbers come from one sequence, under the lock: :meth:`Registry.register` stores
a model under the next number, :meth:`Registry.issue_version` reserves the next number for
a model made online (a reset, a promotion) and appends its lineage entry (parent version,
cause, partition, action, created_at) to ``lineage.jsonl``. The next number is one more
than the highest found in ``versions/``, ``last_version`` and ``lineage.jsonl``, so a
number is never handed out twice, even when a version directory or one of the two files
is removed. ``lineage.jsonl`` only grows; each append rewrites it whole into a temporary
file renamed into place, so a crash never leaves half a line.

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
- a corrupt ``last_version`` (not a number >= 0) or ``lineage.jsonl`` (a line that is not
  a well-typed JSON lineage entry): numbering and lineage look-ups raise, naming the file
  (and the line), rather than risk handing out a number twice;
- a version argument that is not an ``int`` >= 1 (``0``, ``-1``, ``True``, ``"3"``);
- a registry root that cannot be created or locked.

A number issued by :meth:`Registry.issue_version` has no stored model: loading, tagging,
aliasing or promoting it is a :class:`RegistryError` that says so, with its parent and
cause.

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
streamheal.registry.base.RegistryError: demo: a version is an integer >= 1, got 0
>>> registry.issue_version(parent=1, cause="concept drift", partition=0, action="reset")
2
>>> registry.lineage(2)["parent"]
1
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
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
    parse_aliases,
    show_value,
    unreadable_meta,
    verified,
)
from streamheal.signing import REGISTRY_KEY_ENV, Signer

COUNTER_FILE = "last_version"
LINEAGE_FILE = "lineage.jsonl"


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
            self._write_counter(version)
        return version

    def issue_version(
        self, *, parent: int | None, cause: str, partition: int | None, action: str
    ) -> int:
        """Reserve the next version number for a model made online and record its lineage.

        Parameters
        ----------
        parent
            The version the new model replaces or descends from (None: a fresh start).
        cause
            Why it was made, e.g. the drift that triggered a reset.
        partition
            The input partition whose worker made it (None: not tied to one).
        action
            What made it: ``"reset"``, ``"promote"``, ...

        No model is stored under the number; :meth:`lineage` returns the entry.
        """
        with self._locked():
            raw = self._lineage_bytes()
            return self._append_lineage(
                raw,
                self._lineage(raw),
                parent=parent,
                cause=cause,
                partition=partition,
                action=action,
            )

    def fresh_version(self, cause: str) -> int:
        """The number of the fresh model ``cause`` describes (e.g. built from config with a
        given hash): the one issued for the same cause before, else a new one (action
        ``"initial"``). Stable across restarts and workers, so a crash before the first
        checkpoint does not renumber the same fresh model."""
        with self._locked():
            raw = self._lineage_bytes()
            entries = self._lineage(raw)
            for entry in entries:
                if entry["action"] == "initial" and entry["cause"] == cause:
                    return entry["version"]
            return self._append_lineage(
                raw, entries, parent=None, cause=cause, partition=None, action="initial"
            )

    def _append_lineage(
        self,
        raw: bytes,
        entries: list[dict[str, Any]],
        *,
        parent: int | None,
        cause: str,
        partition: int | None,
        action: str,
    ) -> int:
        """Under the lock: the next number, its lineage entry appended to ``raw`` (the
        lineage file as read, ``entries`` its lines)."""
        version = self._next_version(entries)
        entry = lineage_entry(
            self.name, version, parent=parent, cause=cause, partition=partition, action=action
        )
        # The lineage first: should the counter write fail, the entry still holds the number.
        _write_atomic(self._lineage_path(), raw + orjson.dumps(entry) + b"\n")
        self._write_counter(version)
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

    def lineage(self, version: int) -> dict[str, Any] | None:
        """The entry :meth:`issue_version` recorded for ``version``; None for any other number."""
        version = check_version(self.name, version)
        return next((e for e in self._lineage() if e["version"] == version), None)

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
                raise self._unknown(version) from None
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

    def _next_version(self, entries: list[dict[str, Any]] | None = None) -> int:
        """One more than any number stored, counted or issued: never one handed out before."""
        if entries is None:
            entries = self._lineage()
        issued = max((e["version"] for e in entries), default=0)
        return max(max(self._numbers(), default=0), self._counter(), issued) + 1

    def _unknown(self, version: int) -> RegistryError:
        entry = self.lineage(version)
        if entry is not None:
            return not_stored(self.name, entry)
        return RegistryError(f"model {self.name!r} has no version {version}")

    def _counter(self) -> int:
        path = self.root / COUNTER_FILE
        try:
            text = path.read_bytes().decode("ascii", "replace").strip()
        except FileNotFoundError:
            return 0
        except OSError as err:
            raise RegistryError(
                f"{self.name}: version counter file {path} cannot be read: {err.strerror or err}"
            ) from err
        if not (text.isascii() and text.isdigit()):
            raise RegistryError(
                f"{self.name}: version counter file {path} holds {show_value(text)}, expected the "
                "highest version number handed out (an integer >= 0); fix it, or remove it "
                "to count from versions/ and lineage.jsonl"
            )
        return int(text)

    def _write_counter(self, version: int) -> None:
        if version > self._counter():
            _write_atomic(self.root / COUNTER_FILE, f"{version}\n".encode())

    def _lineage_path(self) -> Path:
        return self.root / LINEAGE_FILE

    def _lineage_bytes(self) -> bytes:
        path = self._lineage_path()
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as err:
            raise RegistryError(
                f"{self.name}: lineage file {path} cannot be read: {err.strerror or err}"
            ) from err

    def _lineage(self, raw: bytes | None = None) -> list[dict[str, Any]]:
        """Every lineage entry, checked; RegistryError naming the file and line when corrupt."""
        path = self._lineage_path()
        if raw is None:
            raw = self._lineage_bytes()
        entries = []
        for number, line in enumerate(raw.splitlines(), start=1):
            where = f"{self.name}: lineage file {path} line {number}"
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise RegistryError(f"{where} is not valid JSON ({err}); fix it") from err
            entries.append(check_lineage(entry, where))
        return entries

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
