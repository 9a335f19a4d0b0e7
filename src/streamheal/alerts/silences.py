"""Silences: matchers over an alert's labels and a time window in which it is not notified.

A matcher is Alertmanager's: ``label=value``, ``label!=value``, ``label=~regex``,
``label!~regex`` (regexes are anchored), several joined by commas, values optionally in
double quotes. Labels are ``model``, ``kind``, ``signal``, ``feature``, ``severity`` and
``alert`` (the alert id). A silenced alert still changes state and its records still reach
the alerts topic; only its notifications are held back.

Silences come from ``alerts.silences`` in the config and from records on the control topic
(``streamheal silence add|expire``, and the "Silence 1h" button), signed like control
commands when ``STREAMHEAL_CONTROL_KEY`` is set.

>>> matchers = parse_matchers('kind=covariate,feature=~"mean .*"')
>>> silence = Silence("s1", matchers, starts_at=0.0, ends_at=3600.0)
>>> silence.matches({"kind": "covariate", "feature": "mean radius"}, now=10.0)
True
>>> silence.matches({"kind": "covariate", "feature": "worst radius"}, now=10.0)
False
>>> silence.matches({"kind": "covariate", "feature": "mean radius"}, now=4000.0)
False
>>> parse_duration("1h30m")
5400.0
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from streamheal.errors import StreamhealError
from streamheal.signing import Signer

log = logging.getLogger("streamheal.silences")

LABELS = ("model", "kind", "signal", "feature", "severity", "alert")
SILENCE = "silence"
SILENCE_EXPIRED = "silence_expired"
MAX_RECORD_BYTES = 8192
_MATCHER = re.compile(r'\s*([a-z_]+)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^,]*?)\s*(?:,|$)')
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SilenceError(StreamhealError, ValueError):
    """A matcher, duration, time or silence record that cannot be used."""


@dataclass(frozen=True)
class Matcher:
    """One ``label op value`` test."""

    label: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.op in ("=", "!="):
            return (actual == self.value) == (self.op == "=")
        return (re.fullmatch(self.value, actual) is not None) == (self.op == "=~")

    def __str__(self) -> str:
        return f"{self.label}{self.op}{_quote(self.value)}"


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """``'kind=covariate,feature=~"mean.*"'`` as matchers; SilenceError when malformed.

    >>> [str(m) for m in parse_matchers("severity!=info, alert=ab12")]
    ['severity!=info', 'alert=ab12']
    >>> parse_matchers("colour=red")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamheal.alerts.silences.SilenceError: unknown label 'colour' in 'colour=red'; ...
    """
    matchers, at = [], 0
    text = text.strip()
    while at < len(text):
        found = _MATCHER.match(text, at)
        if found is None or found.end() == at:
            raise SilenceError(f"not a matcher at {text[at:]!r}: expected label=value, ...")
        label, op, raw = found.group(1), found.group(2), found.group(3)
        if label not in LABELS:
            raise SilenceError(
                f"unknown label {label!r} in {text!r}; labels are {', '.join(LABELS)}"
            )
        value = _unquote(raw)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as err:
                raise SilenceError(f"bad regex {value!r} for {label}: {err}") from None
        matchers.append(Matcher(label, op, value))
        at = found.end()
    if not matchers:
        raise SilenceError("a silence needs at least one matcher, e.g. kind=covariate")
    return tuple(matchers)


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``1h30m``, ``2d``, ``1w`` in seconds."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise SilenceError(f"not a duration: {text!r}; expected e.g. 30m, 1h, 1h30m, 2d")
    seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if seconds <= 0:
        raise SilenceError(f"a duration must be positive, got {text!r}")
    return seconds


def parse_time(text: str) -> float:
    """An ISO 8601 time (``2026-12-01T00:00Z``; UTC when no offset is given) in Unix seconds."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SilenceError(f"not an ISO 8601 time: {text!r}; e.g. 2026-12-01T00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class Silence:
    """Matchers and a window ``[starts_at, ends_at)`` in Unix seconds."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    by: str = ""
    comment: str = ""
    source: str = "control"  # "config" or "control"

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str], now: float) -> bool:
        return self.active(now) and all(m.matches(labels) for m in self.matchers)

    @property
    def matcher_text(self) -> str:
        return ",".join(str(m) for m in self.matchers)

    def to_record(self) -> dict[str, Any]:
        return {
            "type": SILENCE,
            "id": self.id,
            "matchers": self.matcher_text,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "by": self.by,
            "comment": self.comment,
        }


def new_silence(
    matchers: str, seconds: float, by: str = "", comment: str = "", now: float | None = None
) -> Silence:
    """A silence from now for ``seconds`` with a fresh 8-hex-digit id."""
    start = time.time() if now is None else now
    return Silence(
        uuid.uuid4().hex[:8], parse_matchers(matchers), start, start + seconds, by, comment
    )


@dataclass
class Silences:
    """Every known silence: from config, and from control-topic records in their order.

    Examples
    --------
    >>> book = Silences()
    >>> book.apply(encode(Silence("x1", parse_matchers("kind=prior"), 0.0, 100.0)), None)
    True
    >>> book.match({"kind": "prior"}, now=5.0).id
    'x1'
    >>> book.apply(encode_expiry("x1", "ann", at=6.0), None)
    True
    >>> book.match({"kind": "prior"}, now=7.0) is None
    True
    """

    by_id: dict[str, Silence] = field(default_factory=dict)
    refused: int = 0

    @classmethod
    def from_config(
        cls, entries: Iterable[Mapping[str, str]], now: float | None = None
    ) -> Silences:
        """``alerts.silences``: ``match`` required, ``starts``/``until`` ISO times (forever
        and from always when left out), ``comment`` optional."""
        book = cls()
        for i, entry in enumerate(entries):
            try:
                silence = Silence(
                    f"config-{i}",
                    parse_matchers(entry["match"]),
                    parse_time(entry["starts"]) if "starts" in entry else float("-inf"),
                    parse_time(entry["until"]) if "until" in entry else float("inf"),
                    "config",
                    entry.get("comment", ""),
                    "config",
                )
            except SilenceError as err:
                raise SilenceError(f"alerts.silences[{i}]: {err}") from None
            book.by_id[silence.id] = silence
        return book

    def add(self, silence: Silence) -> None:
        self.by_id[silence.id] = silence

    def apply(self, value: bytes | None, signer: Signer | None) -> bool:
        """Take one control-topic record; True when it was a silence record (valid or not).

        A record that claims to be a silence but is malformed, unsigned or badly signed
        (with a key set) is refused and counted, never raised. Unlike a command, a signed
        silence is not refused for its age: it carries its own window, so reading it again
        (a restarted notifier reads the topic from its start) changes nothing."""
        if not is_silence_record(value):
            return False
        record = silence_record(value)
        if record is None:  # claims to be a silence, is none (not JSON, too large, ...)
            self._refuse(value, "not a silence record (JSON object of type silence)")
            return True
        try:
            _verify(record, signer)
            if record["type"] == SILENCE_EXPIRED:
                silence = self.by_id.get(str(record["id"]))
                if silence is not None:
                    at = float(record["at"])
                    self.by_id[silence.id] = replace(silence, ends_at=min(silence.ends_at, at))
                return True
            self.add(
                Silence(
                    str(record["id"]),
                    parse_matchers(str(record["matchers"])),
                    float(record["starts_at"]),
                    float(record["ends_at"]),
                    str(record.get("by", ""))[:100],
                    str(record.get("comment", ""))[:500],
                )
            )
        except (SilenceError, KeyError, TypeError, ValueError) as err:
            self._refuse(value, f"{type(err).__name__}: {err}")
        return True

    def _refuse(self, value: bytes, why: str) -> None:
        self.refused += 1
        preview = value[:200].decode("utf-8", "replace")
        log.warning("silence record refused: %s [%s]", why[:300], preview)

    def match(self, labels: Mapping[str, str], now: float) -> Silence | None:
        """The first active silence whose matchers all match ``labels``."""
        # A snapshot of the values: a Slack click may add a silence from another thread.
        for silence in list(self.by_id.values()):
            if silence.matches(labels, now):
                return silence
        return None

    def current(self, now: float) -> list[Silence]:
        """Silences not yet ended (active now, or starting later)."""
        return [s for s in list(self.by_id.values()) if s.ends_at > now]


def encode(silence: Silence, signer: Signer | None = None) -> bytes:
    """The control-topic record for ``silence`` (signed when a key is set)."""
    return _signed(silence.to_record(), signer)


def encode_expiry(
    silence_id: str, by: str, signer: Signer | None = None, at: float | None = None
) -> bytes:
    """The control-topic record that ends silence ``silence_id`` at ``at`` (now)."""
    record = {
        "type": SILENCE_EXPIRED,
        "id": silence_id,
        "at": time.time() if at is None else at,
        "by": by,
    }
    return _signed(record, signer)


def is_silence_record(value: bytes | None) -> bool:
    """Whether a control-topic record is a silence (workers skip those: they are for the
    notifier, not commands). Cheap: the type is the record's first key."""
    return value is not None and value.startswith((b'{"type":"silence', b'{"type": "silence'))


def silence_record(value: bytes | None) -> dict[str, Any] | None:
    """The record, when ``value`` is a JSON object of a silence type (the notifier's to
    apply or refuse); None otherwise (workers treat it as a command, and refuse it)."""
    if not is_silence_record(value) or len(value) > MAX_RECORD_BYTES:
        return None
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("type") not in (SILENCE, SILENCE_EXPIRED):
        return None
    return record


def _signed(record: dict[str, Any], signer: Signer | None) -> bytes:
    if signer is not None:
        record["issued_at"] = time.time()
        record["signature"] = signer.sign(_canonical(record))
    # "type" first: is_silence_record() reads the prefix, and a refused preview shows it.
    return orjson.dumps(record)


def _verify(record: dict[str, Any], signer: Signer | None) -> None:
    if signer is None:
        return
    signature = record.get("signature")
    fields = {k: v for k, v in record.items() if k != "signature"}
    if type(signature) is not str or not signer.verify(_canonical(fields), signature):
        raise SilenceError("unsigned or badly signed silence record")


def _canonical(fields: dict[str, Any]) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def _quote(value: str) -> str:
    if re.fullmatch(r"[\w.\-]*", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return raw


def describe_window(silence: Silence) -> str:
    """``until 2026-11-27 18:00Z`` and the like, for ``silence list`` and Slack."""

    def show(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%MZ")

    start = "" if silence.starts_at == float("-inf") else f"from {show(silence.starts_at)} "
    end = "forever" if silence.ends_at == float("inf") else f"until {show(silence.ends_at)}"
    return start + end
