"""Per-partition checkpoints: how an Engine's state becomes records, and back.

A checkpoint is the Engine's state (:meth:`Engine.to_bytes`, a pickle) cut into chunks that
fit under the broker's record limit, followed by a JSON **manifest** that says which
checkpoint the chunks belong to, how many there are, their SHA-256, an HMAC-SHA256
signature when ``STREAMHEAL_STATE_KEY`` is set, the input offset the state covers (the
next offset to process) and a hash of each config section it was made under. The worker
writes chunks then manifest in the same transaction as the batch's outputs and offsets,
so a manifest that can be read is always complete.

Keys (the state topic is compacted: the latest record per key survives), where ``s`` is
the *stream* ``<group_id>/<input topic>`` (:func:`stream_name`: state belongs to one
consumer group, so two groups reading the same topic never share it):

- chunk ``i`` of partition ``p``: ``s:p#i``;
- chunk ``i`` of the state *part* ``name`` of partition ``p``: ``s:p$name#i``;
- the manifest: ``s:p``.

A shorter checkpoint leaves older chunks with higher indexes behind; they carry another
checkpoint id and are ignored.

**Parts.** The largest pieces of an Engine's state change rarely: the detectors'
references (hundreds of kB) change only when a detector takes a new reference. They are
written as *parts*, each under its own keys, only when they changed; the manifest names
every part the checkpoint needs with its SHA-256, size and signature, and the newest
record of each part key (compaction keeps it) is the one the newest manifest names. A
part written in an aborted transaction is never read (read_committed), and the worker
forgets what it wrote when a transaction aborts, so the next checkpoint writes it again.

>>> from streamheal.config import Config
>>> records = encode("events", 3, 1200, b"x" * 2500, Config(), signer=None, chunk_bytes=1024)
>>> [key for key, _, _ in records]
[b'events:3#0', b'events:3#1', b'events:3#2', b'events:3']
>>> manifest = Manifest.from_bytes(records[-1][1])
>>> manifest.offset, manifest.chunks, manifest.size
(1200, 3, 2500)
>>> chunks = {i: value for i, (_, value, _) in enumerate(records[:-1])}
>>> assemble(manifest, chunks, signer=None) == b"x" * 2500
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from streamheal.config import Config
from streamheal.errors import StreamhealError
from streamheal.signing import STATE_KEY_ENV, Signer

FORMAT = 2
READABLE_FORMATS = (1, 2)  # format 1: no parts
CHECKPOINT_HEADER = "streamheal.checkpoint"
CHUNK_HEADER = "streamheal.chunk"
# Config sections whose change decides what a checkpoint can still give (see `usable`).
SECTIONS = ("model", "engine", "detectors", "policy", "guards")

Usable = Literal["all", "model", "none"]


class CheckpointError(StreamhealError, ValueError):
    """A checkpoint that cannot be trusted or used: incomplete, corrupt or badly signed."""


@dataclass(frozen=True)
class Manifest:
    """What a checkpoint holds and where it stops (the last record of a checkpoint)."""

    topic: str
    partition: int
    checkpoint: str  # random id shared by the manifest and its chunks
    offset: int  # the next input offset to process: the state covers everything before
    chunks: int
    size: int
    sha256: str
    signature: str | None
    sections: dict[str, str]  # config section -> hash
    model_version: int
    created_at: float
    format: int = FORMAT
    # part name -> {"sha256", "size", "chunks", "signature"}
    parts: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # {"champion": version or None}: the registry champion this state already accounts
    # for (served from it, or installed it); empty in checkpoints older than the field.
    registry: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_bytes(self) -> bytes:
        # orjson writes a dataclass's fields in order, as dataclasses.asdict would give
        # them, without asdict's deep copy of every nested dict (a manifest per checkpoint).
        return orjson.dumps(self)

    @classmethod
    def from_bytes(cls, value: bytes) -> Manifest:
        try:
            fields = orjson.loads(value)
            manifest = cls(**fields)
        except (orjson.JSONDecodeError, TypeError) as err:
            raise CheckpointError(f"unreadable checkpoint manifest: {err}") from None
        if manifest.format not in READABLE_FORMATS:
            raise CheckpointError(
                f"checkpoint format {manifest.format}, expected one of {READABLE_FORMATS}"
            )
        return manifest


@dataclass(frozen=True)
class Part:
    """A state part as the manifest names it; ``payload`` is None when an earlier committed
    checkpoint of this partition already wrote exactly these bytes."""

    sha256: str
    size: int
    chunks: int
    signature: str | None
    payload: bytes | None = None

    @classmethod
    def of(cls, payload: bytes, signer: Signer | None, chunk_bytes: int) -> Part:
        return cls(
            hashlib.sha256(payload).hexdigest(),
            len(payload),
            max(1, -(-len(payload) // chunk_bytes)),
            signer.sign(payload) if signer is not None else None,
            payload,
        )

    def written(self) -> Part:
        """The same part, as later checkpoints refer to it (no bytes to write again)."""
        return dataclasses.replace(self, payload=None)

    def describe(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "chunks": self.chunks,
            "signature": self.signature,
        }


Record = tuple[bytes, bytes, list[tuple[str, bytes]]]


def encode(
    topic: str,
    partition: int,
    offset: int,
    payload: bytes,
    config: Config,
    signer: Signer | None,
    chunk_bytes: int,
    model_version: int = 1,
    parts: dict[str, Part] | None = None,
    registry: dict[str, Any] | None = None,
) -> list[Record]:
    """The records of one checkpoint, ``(key, value, headers)``, the manifest last; parts
    with a payload are written, the others only named."""
    checkpoint = secrets.token_hex(8)
    records = _chunks(payload, chunk_bytes, checkpoint, lambda i: chunk_key(topic, partition, i))
    pieces = len(records)
    for name, part in (parts or {}).items():
        if part.payload is not None:
            records += _chunks(
                part.payload,
                chunk_bytes,
                part.sha256,
                lambda i, name=name: part_key(topic, partition, name, i),
            )
    manifest = Manifest(
        topic=topic,
        partition=partition,
        checkpoint=checkpoint,
        offset=offset,
        chunks=pieces,
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        signature=signer.sign(payload) if signer is not None else None,
        sections=section_hashes(config),
        model_version=model_version,
        created_at=time.time(),
        parts={name: part.describe() for name, part in (parts or {}).items()},
        registry=registry or {},
    )
    records.append((manifest_key(topic, partition), manifest.to_bytes(), []))
    return records


def _chunks(
    payload: bytes, chunk_bytes: int, tag: str, key: Callable[[int], bytes]
) -> list[Record]:
    """``payload`` cut under the record limit; each chunk tagged (checkpoint id or part
    digest) so a reader can tell it from a stale chunk under the same key."""
    pieces = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)] or [b""]
    return [
        (
            key(index),
            piece,
            [
                (CHECKPOINT_HEADER, tag.encode()),
                (CHUNK_HEADER, f"{index}/{len(pieces)}".encode()),
            ],
        )
        for index, piece in enumerate(pieces)
    ]


def assemble_parts(
    manifest: Manifest, found: dict[str, dict[int, bytes]], signer: Signer | None
) -> dict[str, bytes]:
    """Every part the manifest names, whole and checked (``found``: part -> index -> chunk
    whose tag is the part's digest)."""
    parts = {}
    for name, spec in manifest.parts.items():
        chunks = found.get(name, {})
        where = f"checkpoint {manifest.checkpoint} of {manifest.topic}:{manifest.partition}"
        if any(i not in chunks for i in range(spec["chunks"])):
            raise CheckpointError(f"{where}: state part {name!r} is missing")
        payload = b"".join(chunks[i] for i in range(spec["chunks"]))
        if len(payload) != spec["size"] or hashlib.sha256(payload).hexdigest() != spec["sha256"]:
            raise CheckpointError(f"{where}: state part {name!r} does not match its SHA-256")
        if signer is not None and (
            spec["signature"] is None or not signer.verify(payload, spec["signature"])
        ):
            raise CheckpointError(
                f"{where}: state part {name!r} unsigned or badly signed while "
                f"{STATE_KEY_ENV} is set; refusing to unpickle it"
            )
        parts[name] = payload
    return parts


def assemble(manifest: Manifest, chunks: dict[int, bytes], signer: Signer | None) -> bytes:
    """The checkpoint's payload, checked whole before anyone unpickles it."""
    missing = [i for i in range(manifest.chunks) if i not in chunks]
    if missing:
        raise CheckpointError(
            f"checkpoint {manifest.checkpoint} of {manifest.topic}:{manifest.partition} is "
            f"missing chunks {missing[:5]} of {manifest.chunks}"
        )
    payload = b"".join(chunks[i] for i in range(manifest.chunks))
    if len(payload) != manifest.size or hashlib.sha256(payload).hexdigest() != manifest.sha256:
        raise CheckpointError(
            f"checkpoint {manifest.checkpoint} of {manifest.topic}:{manifest.partition}: "
            "chunks do not match the manifest's size and SHA-256 (corrupt)"
        )
    if signer is not None and (
        manifest.signature is None or not signer.verify(payload, manifest.signature)
    ):
        raise CheckpointError(
            f"checkpoint {manifest.checkpoint} of {manifest.topic}:{manifest.partition}: "
            f"{'unsigned' if manifest.signature is None else 'bad signature'} while "
            f"{STATE_KEY_ENV} is set; refusing to unpickle it"
        )
    return payload


def usable(saved: dict[str, str], config: Config) -> Usable:
    """What a checkpoint made under config sections ``saved`` can give under ``config``.

    - ``"none"``: the model section (kind, parameters) changed: the saved model cannot
      serve the new spec; the partition starts over (registry champion or fresh model).
    - ``"model"``: detector, policy or guard settings changed: the model, the label-join
      buffer, counters and guards carry over; detectors and policy start fresh (a new
      reference) under the new settings.
    - ``"all"``: nothing that matters changed (Kafka, topic, worker settings may have).
    """
    current = section_hashes(config)
    if saved.get("model") != current["model"]:
        return "none"
    if any(saved.get(name) != current[name] for name in ("detectors", "policy")):
        return "model"
    return "all"


def section_hashes(config: Config) -> dict[str, str]:
    """A short hash of each config section that shapes an Engine's state (a copy: the
    hashes of the last config asked about are kept, as every checkpoint of a worker asks
    about the same one, and ``dataclasses.asdict`` of five sections cost 0.1 ms)."""
    global _last_hashes
    if _last_hashes is None or _last_hashes[0] is not config:
        out = {}
        for name in SECTIONS:
            canonical = json.dumps(
                dataclasses.asdict(getattr(config, name)), sort_keys=True, default=repr
            )
            out[name] = hashlib.sha256(canonical.encode()).hexdigest()[:16]
        _last_hashes = (config, out)  # a config is replaced (Config.replace), not changed
    return dict(_last_hashes[1])


_last_hashes: tuple[Config, dict[str, str]] | None = None


def stream_name(group_id: str, topic: str) -> str:
    """Whose state it is: one consumer group's view of one input topic."""
    return f"{group_id}/{topic}"


def manifest_key(topic: str, partition: int) -> bytes:
    return f"{topic}:{partition}".encode()


def chunk_key(topic: str, partition: int, index: int) -> bytes:
    return f"{topic}:{partition}#{index}".encode()


def part_key(topic: str, partition: int, name: str, index: int) -> bytes:
    return f"{topic}:{partition}${name}#{index}".encode()
