"""Control commands: their schema, their signature, and the refusal of everything else.

A command is one JSON object on the control topic::

    {"command": "promote", "version": 7, "by": "alice", "reason": "passed the offline gate",
     "issued_at": 1764201600.0, "signature": "<hex HMAC-SHA256>"}

Anyone who can write to the control topic can send one, so a worker acts on a record only
after :func:`parse` accepted it: a known ``command``, an integer ``version >= 1`` (not a
boolean), short ``by`` and ``reason`` strings, the whole record at most
:data:`MAX_COMMAND_BYTES`. When ``STREAMHEAL_CONTROL_KEY`` is set, a command must also
carry a valid ``signature`` (HMAC-SHA256 over the canonical JSON of the other fields) and an
``issued_at`` within :data:`MAX_AGE_SECONDS` of the worker's clock, so a captured command
cannot be replayed later. Whatever fails becomes a :class:`Refusal`; nothing raises.

>>> parse(b'{"command": "promote", "version": 3, "by": "ann", "reason": "ok"}', None)
Command(command='promote', version=3, by='ann', reason='ok', issued_at=None)
>>> parse(b'{"command": "promote", "version": true}', None).why
"'version' must be an integer >= 1, got True"
>>> signer = Signer(b"secret")
>>> signed = encode(Command("rollback", 2, "bob", "bad model", issued_at=100.0), signer)
>>> parse(signed, signer, now=110.0).version
2
>>> parse(signed.replace(b'"version":2', b'"version":3'), signer, now=110.0).why
'bad signature: not signed with STREAMHEAL_CONTROL_KEY'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from streamheal.signing import Signer

CommandName = Literal["promote", "rollback"]
COMMANDS: tuple[str, ...] = ("promote", "rollback")
MAX_COMMAND_BYTES = 8192
MAX_BY_LENGTH = 100
MAX_REASON_LENGTH = 500
# A signed command older than this (or this far in the future) is refused: replay defence.
MAX_AGE_SECONDS = 300.0
_PREVIEW = 200  # characters of a refused record kept in logs and alert records


@dataclass(frozen=True)
class Command:
    """A validated command (the registry still has to know ``version``)."""

    command: str
    version: int
    by: str = ""
    reason: str = ""
    issued_at: float | None = None

    def describe(self) -> str:
        who = f" by {self.by}" if self.by else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.command} v{self.version}{who}{why}"


@dataclass(frozen=True)
class Refusal:
    """A control record that was not acted on, and why (logged and sent as an alert)."""

    why: str
    preview: str


def parse(
    value: bytes | None, signer: Signer | None, now: float | None = None
) -> Command | Refusal:
    """The command a control record holds, or a :class:`Refusal`; never raises."""
    if value is None:
        return Refusal("empty record (tombstone)", "")
    preview = _preview(value)
    if len(value) > MAX_COMMAND_BYTES:
        return Refusal(f"{len(value)} bytes, limit is {MAX_COMMAND_BYTES}", preview)
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return Refusal("not JSON", preview)
    if not isinstance(record, dict):
        return Refusal(f"expected a JSON object, got {type(record).__name__}", preview)
    why = _schema_problem(record)
    if why is None and signer is not None:
        why = _signature_problem(record, signer, time.time() if now is None else now)
    if why is not None:
        return Refusal(why, preview)
    return Command(
        record["command"],
        record["version"],
        record.get("by", ""),
        record.get("reason", ""),
        record.get("issued_at"),
    )


def encode(command: Command, signer: Signer | None) -> bytes:
    """The record for ``command``; signed (and stamped with ``issued_at``) when a key is set."""
    fields: dict[str, Any] = {
        "command": command.command,
        "version": command.version,
        "by": command.by[:MAX_BY_LENGTH],
        "reason": command.reason[:MAX_REASON_LENGTH],
    }
    if signer is not None:
        fields["issued_at"] = time.time() if command.issued_at is None else command.issued_at
        fields["signature"] = signer.sign(_canonical(fields))
    return orjson.dumps(fields)


def _schema_problem(record: dict[str, Any]) -> str | None:
    command = record.get("command")
    if command not in COMMANDS:
        return f"unknown command {_preview_value(command)}; expected one of {', '.join(COMMANDS)}"
    version = record.get("version")
    if type(version) is not int or version < 1:
        return f"'version' must be an integer >= 1, got {_preview_value(version)}"
    for name in ("by", "reason"):
        why = text_problem(name, record.get(name, ""))
        if why is not None:
            return why
    issued_at = record.get("issued_at")
    if issued_at is not None and type(issued_at) not in (int, float):
        return "'issued_at' must be seconds since the epoch"
    return None


def text_problem(name: str, text: Any) -> str | None:
    """Why a command's ``by`` or ``reason`` would be refused by the workers, or None (the
    command line asks before it moves the champion, so the two never disagree)."""
    limit = MAX_BY_LENGTH if name == "by" else MAX_REASON_LENGTH
    if type(text) is not str:
        return f"'{name}' must be a string"
    if len(text) > limit:
        return f"'{name}' is {len(text)} characters, limit is {limit}"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
        # A newline in `by` would forge log lines and alert text.
        return f"'{name}' must not contain control characters"
    return None


def _signature_problem(record: dict[str, Any], signer: Signer, now: float) -> str | None:
    signature = record.get("signature")
    if signature is None:
        return "unsigned: STREAMHEAL_CONTROL_KEY is set, so every command must be signed"
    fields = {k: v for k, v in record.items() if k != "signature"}
    if type(signature) is not str or not signer.verify(_canonical(fields), signature):
        return "bad signature: not signed with STREAMHEAL_CONTROL_KEY"
    issued_at = record.get("issued_at")
    if issued_at is None or abs(now - issued_at) > MAX_AGE_SECONDS:
        return f"stale: issued_at {issued_at!r} is more than {MAX_AGE_SECONDS:.0f}s from now"
    return None


def _canonical(fields: dict[str, Any]) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def _preview(value: bytes) -> str:
    text = value[: _PREVIEW * 4].decode("utf-8", "replace")
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "..."


def _preview_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."
