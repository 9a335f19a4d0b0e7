"""What every registry backend shares: the contract, its types, its errors and its checks.

:class:`RegistryBackend` is the contract the worker, the retrainer and the command line
program against; :mod:`streamheal.registry.local` and :mod:`streamheal.registry.mlflow`
implement it. The checks here (a version argument, ``aliases.json``, a version's
metadata, a lineage entry, a model file against its metadata) are the same for both, so
both refuse the same bad input with the same :class:`RegistryError` message.

The registry is the one authority for model version numbers. A version number is either

- *stored*: :meth:`RegistryBackend.register` keeps a model's bytes and metadata under it;
- *issued*: :meth:`RegistryBackend.issue_version` reserves it for a model made online (a
  reset, a promotion of a challenger) and records its lineage, but stores no model.

Both draw from one sequence: a number is never handed out twice and never lower than one
handed out before, so "v7" names one model on every partition and in the registry.

>>> entry = lineage_entry("m", 7, parent=3, cause="drift", partition=2, action="reset")
>>> import textwrap
>>> print(textwrap.fill(describe_online("m", entry), 80))
model 'm' v7 is a serving version made online (reset of v3 on partition 2,
cause: drift); it has no stored model
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

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
    >>> from streamheal.registry import Registry
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
    def issue_version(
        self, *, parent: int | None, cause: str, partition: int | None, action: str
    ) -> int:
        """Reserve the next version number for a model made online; record its lineage.

        Atomic and safe across processes; the number is never handed out again, by this
        method or by :meth:`register`. No model is stored under it.
        """
        ...

    def fresh_version(self, cause: str) -> int:
        """The number of the fresh model ``cause`` describes: the one issued (action
        ``"initial"``) for the same cause before, else a new one."""
        ...

    def lineage(self, version: int) -> dict[str, Any] | None:
        """The lineage entry :meth:`issue_version` recorded for ``version``, or None."""
        ...

    def meta(self, version: int) -> dict[str, Any]: ...
    def load_bytes(self, version: int) -> bytes: ...
    def load(self, version: int) -> Any: ...
    def versions(self) -> list[ModelVersion]: ...
    def set_alias(self, alias: str, version: int) -> AliasState: ...
    def promote(self, version: int) -> AliasState: ...
    def rollback(self) -> AliasState: ...
    def tag(self, version: int, key: str, value: str) -> None: ...
    def alias(self, alias: str) -> int | None: ...


def check_version(name: str, version: object) -> int:
    """``version`` if it is an ``int`` >= 1 (not a bool), else RegistryError.

    A bool is an int to Python, and ``"3"`` would build the right path by accident; both
    are refused so a caller's mistake surfaces here, not as a wrong or missing version.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryError(f"{name}: a version is an integer >= 1, got {show_value(version)}")
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
        f"{show_value(k, True)}: {show_value(v, True)}"
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
    problems = _problems(meta, _META_SHAPE)
    signature = meta.get("signature")
    if signature is not None and not isinstance(signature, str):
        problems.append(f"'signature' is {show_value(signature, True)}, expected a hex string")
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
    """The stand-in metadata ``versions()`` lists for a version it cannot read.

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


# ------------------------------------------------------------------ lineage
def lineage_entry(
    name: str,
    version: int,
    *,
    parent: int | None,
    cause: str,
    partition: int | None,
    action: str,
) -> dict[str, Any]:
    """The lineage record of an issued ``version``, after checking the caller's arguments.

    ``version`` may be 0 when the backend learns the number only after writing the entry.
    """
    if parent is not None:
        check_version(name, parent)
    if not isinstance(cause, str):
        raise RegistryError(f"{name}: a cause is a string, got {show_value(cause)}")
    if partition is not None and not (_is_int(partition) and partition >= 0):
        raise RegistryError(
            f"{name}: a partition is an integer >= 0 or None, got {show_value(partition)}"
        )
    if not isinstance(action, str) or not action:
        raise RegistryError(f"{name}: an action is a non-empty string, got {show_value(action)}")
    return {
        "version": version,
        "parent": parent,
        "cause": cause,
        "partition": partition,
        "action": action,
        "created_at": time.time(),
    }


def check_lineage(entry: object, where: str) -> dict[str, Any]:
    """``entry`` if it is a well-typed lineage record; else RegistryError naming ``where``."""
    if not isinstance(entry, dict):
        raise RegistryError(f"{where} is {_json_type(entry)}, expected a JSON object")
    problems = _problems(entry, _LINEAGE_SHAPE)
    if problems:
        raise RegistryError(f"{where} is malformed: {'; '.join(problems)}")
    return entry


_LINEAGE_SHAPE: dict[str, tuple[Any, str]] = {
    "version": (lambda v: _is_version(v), "an integer >= 1"),
    "parent": (lambda v: v is None or _is_version(v), "an integer >= 1 or null"),
    "cause": (lambda v: isinstance(v, str), "a string"),
    "partition": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0 or null"),
    "action": (lambda v: isinstance(v, str) and v, "a non-empty string"),
    "created_at": (lambda v: _is_int(v) or isinstance(v, float), "a number"),
}


def describe_online(name: str, entry: dict[str, Any]) -> str:
    """One sentence saying that an issued version is a serving model with no stored copy."""
    parent = "a fresh model" if entry["parent"] is None else f"v{entry['parent']}"
    where = "" if entry["partition"] is None else f" on partition {entry['partition']}"
    return (
        f"model {name!r} v{entry['version']} is a serving version made online "
        f"({entry['action']} of {parent}{where}, cause: {entry['cause']}); "
        "it has no stored model"
    )


def not_stored(name: str, entry: dict[str, Any]) -> RegistryError:
    """The refusal to load, tag, alias or promote an issued version."""
    return RegistryError(
        f"{describe_online(name, entry)}, so it cannot be loaded, tagged or promoted "
        "(register a snapshot of it to keep it)"
    )


# ------------------------------------------------------------------ helpers
def _problems(record: dict[str, Any], shape: dict[str, tuple[Any, str]]) -> list[str]:
    problems = []
    for key, (is_ok, expected) in shape.items():
        if key not in record:
            problems.append(f"'{key}' is missing")
        elif not is_ok(record[key]):
            problems.append(f"'{key}' is {show_value(record[key], True)}, expected {expected}")
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_version(value: object) -> bool:
    return _is_int(value) and value >= 1  # type: ignore[operator]


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "?")


def show_value(value: object, as_json: bool = False) -> str:
    """A short rendering for messages: a corrupt file may hold megabytes in one value.

    Values read from a file are shown as JSON (``true``, not ``True``), arguments as Python.
    """
    text = repr(value)
    if as_json:
        with contextlib.suppress(TypeError):
            text = orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def _libraries() -> dict[str, str]:
    import numpy
    import river

    return {
        "python": platform.python_version(),
        "river": river.__version__,
        "numpy": numpy.__version__,
    }
