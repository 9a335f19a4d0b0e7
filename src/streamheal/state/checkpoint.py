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
- the manifest: ``s:p``.

A shorter checkpoint leaves older chunks with higher indexes behind; they carry another
checkpoint id and are ignored.

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
from dataclasses import dataclass
from typing import Literal

import orjson

from streamheal.config import Config
from streamheal.errors import StreamhealError
from streamheal.signing import STATE_KEY_ENV, Signer

FORMAT = 1
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

    def to_bytes(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_bytes(cls, value: bytes) -> Manifest:
        try:
            fields = orjson.loads(value)
            manifest = cls(**fields)
        except (orjson.JSONDecodeError, TypeError) as err:
            raise CheckpointError(f"unreadable checkpoint manifest: {err}") from None
        if manifest.format != FORMAT:
            raise CheckpointError(f"checkpoint format {manifest.format}, expected {FORMAT}")
        return manifest


def encode(
    topic: str,
    partition: int,
    offset: int,
    payload: bytes,
    config: Config,
    signer: Signer | None,
    chunk_bytes: int,
    model_version: int = 1,
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """The records of one checkpoint, ``(key, value, headers)``, the manifest last."""
    checkpoint = secrets.token_hex(8)
    pieces = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)] or [b""]
    records = []
    for index, piece in enumerate(pieces):
        headers = [
            (CHECKPOINT_HEADER, checkpoint.encode()),
            (CHUNK_HEADER, f"{index}/{len(pieces)}".encode()),
        ]
        records.append((chunk_key(topic, partition, index), piece, headers))
    manifest = Manifest(
        topic=topic,
        partition=partition,
        checkpoint=checkpoint,
        offset=offset,
        chunks=len(pieces),
        size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        signature=signer.sign(payload) if signer is not None else None,
        sections=section_hashes(config),
        model_version=model_version,
        created_at=time.time(),
    )
    records.append((manifest_key(topic, partition), manifest.to_bytes(), []))
    return records


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
    """A short hash of each config section that shapes an Engine's state."""
    out = {}
    for name in SECTIONS:
        canonical = json.dumps(
            dataclasses.asdict(getattr(config, name)), sort_keys=True, default=repr
        )
        out[name] = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return out


def stream_name(group_id: str, topic: str) -> str:
    """Whose state it is: one consumer group's view of one input topic."""
    return f"{group_id}/{topic}"


def manifest_key(topic: str, partition: int) -> bytes:
    return f"{topic}:{partition}".encode()


def chunk_key(topic: str, partition: int, index: int) -> bytes:
    return f"{topic}:{partition}#{index}".encode()
