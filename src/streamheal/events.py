"""The event schema: decoding, validation and dead-letter reasons.

A *feature event* carries ``features`` (and possibly a ``label``); a *label event*
carries only a ``label`` for an ``id`` seen before. ``null``, NaN and ±Infinity
feature values are *missing*: they are left out of the model input and listed in
``Event.missing``. Anything else that does not fit the schema becomes a
:class:`Rejection` with a machine-readable :class:`Reason`.

>>> src = Source("streamheal.events", 0, 7)
>>> ev = decode(b'{"id": "e-1", "ts": 1.5, "features": {"a": 1.0, "b": NaN, "c": "red"}}', src)
>>> ev.features, ev.missing
({'a': 1.0, 'c': 'red'}, ('b',))
>>> decode(b'{"id": 5, "ts": 1.5, "label": 1}', src).reason
<Reason.BAD_ID: 'bad_id'>
"""

from __future__ import annotations

import json
import math
import reprlib
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any, NamedTuple

import orjson

from streamheal.config import EventsConfig
from streamheal.errors import StreamhealError

try:  # the all-floats check in one C pass; the same Python test without it
    from streamheal.detectors import _loops as compiled
except ImportError:  # pragma: no cover - built without a C compiler
    compiled = None

Label = int | str | bool
FeatureValue = float | int | str

# Seconds since the epoch stop being plausible here (year 5138): a larger ts is almost
# always milliseconds or microseconds sent by mistake.
MAX_TS = 1e11
# The integers orjson reads as ints (beyond them, floats; loads() reads them the same).
_INT_RANGE = (-(1 << 63), 1 << 64)
# Dead-letter details are headers: keep them short whatever the record held.
_MAX_DETAIL = 300
_DEFAULT_LIMITS = EventsConfig()


class Reason(StrEnum):
    """Why a record went to the dead-letter topic (the ``reason`` header)."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_ID = "missing_id"
    BAD_ID = "bad_id"
    BAD_TS = "bad_ts"
    BAD_FEATURES = "bad_features"
    TOO_MANY_FEATURES = "too_many_features"
    BAD_FEATURE_NAME = "bad_feature_name"
    BAD_FEATURE_VALUE = "bad_feature_value"
    BAD_LABEL = "bad_label"
    NO_FEATURES_OR_LABEL = "no_features_or_label"
    UNKNOWN_LABEL_ID = "unknown_label_id"
    EXPIRED_LABEL_ID = "expired_label_id"
    DUPLICATE_LABEL = "duplicate_label"
    INVALID = "invalid"  # the decoder failed in a way no other reason names (report it)


class Source(NamedTuple):
    """Where a record came from: enough to find it again on the broker. (A named tuple:
    made for every record consumed, it costs 240 ns where a frozen dataclass cost 410.)"""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Event:
    """A valid event. ``features is None`` means a label event."""

    id: str
    ts: float
    features: dict[str, FeatureValue] | None
    label: Label | None
    missing: tuple[str, ...]
    source: Source
    raw: bytes


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that will be dead-lettered, with the original bytes."""

    reason: Reason
    detail: str
    source: Source
    raw: bytes
    key: bytes | None = None


class InvalidEvent(StreamhealError, ValueError):
    """Raised by :func:`validate` (the producer side) for an event that would be rejected.

    ``reason`` is the machine-readable dead-letter reason the worker would give it.

    Examples
    --------
    >>> try:
    ...     validate({"id": "e1", "ts": 0, "features": {"x": [1, 2]}})
    ... except InvalidEvent as err:
    ...     print(err.reason)
    bad_feature_value
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        detail = _short(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode(
    raw: bytes,
    source: Source,
    max_bytes: int | None = None,
    key: bytes | None = None,
    limits: EventsConfig = _DEFAULT_LIMITS,
) -> Event | Rejection:
    """Turn one record value into an :class:`Event`, or a :class:`Rejection` saying why not.

    ``limits`` bound the event (``max_bytes`` overrides its ``max_bytes``). Never raises:
    whatever the bytes hold, the answer is an Event or a Rejection (a poison record must
    not stop the worker, let alone on every restart).
    """
    if max_bytes is None:
        max_bytes = limits.max_bytes
    if raw is None:
        return Rejection(Reason.NOT_JSON, "record has no value (tombstone)", source, b"", key)
    if type(raw) is not bytes:
        raw = bytes(raw)
    if len(raw) > max_bytes:
        return Rejection(
            Reason.TOO_LARGE, f"{len(raw)} bytes > limit of {max_bytes}", source, raw, key
        )
    try:
        obj = loads(raw)
    except RecursionError:
        return Rejection(Reason.TOO_DEEP, "JSON nested too deeply to parse", source, raw, key)
    except ValueError as err:
        return Rejection(Reason.NOT_JSON, _short(f"not valid JSON: {err}"), source, raw, key)
    except Exception as err:  # a parser failure no reason above names: still a dead letter
        return Rejection(Reason.INVALID, _short(f"{type(err).__name__}: {err}"), source, raw, key)
    if compiled is not None:  # most events, as _check takes them, in one C call (_loops.c)
        plain = compiled.plain_event(
            obj, limits.max_id_length, limits.max_features, limits.max_feature_name_length, MAX_TS
        )
        if plain is not None:
            return Event(plain[0], plain[1], plain[2], plain[3], (), source, raw)
    try:
        event_id, ts, features, label, missing = _check(obj, limits)
    except InvalidEvent as err:
        return Rejection(err.reason, err.detail, source, raw, key)
    except Exception as err:
        return Rejection(Reason.INVALID, _short(f"{type(err).__name__}: {err}"), source, raw, key)
    return Event(event_id, ts, features, label, missing, source, raw)


def validate(obj: Any, limits: EventsConfig = _DEFAULT_LIMITS) -> None:
    """Raise :class:`InvalidEvent` if ``obj`` (a decoded event) would be dead-lettered."""
    _check(obj, limits)


def loads(raw: bytes) -> Any:
    """Parse JSON like the worker does (bare NaN/Infinity accepted as missing values).

    orjson refuses two things Python's ``json`` module writes or reads: the bare literals
    ``NaN`` and ``Infinity``, and numbers beyond a double's range (``1e400``). Both mean an
    infinite or undefined value, which is a missing one here, so whatever orjson refuses
    is read again by the stdlib parser (strict UTF-8, integers beyond 64 bits as the
    nearest float, as orjson reads them). The verdict on a record thus depends on the
    record, not on whether the bytes ``NaN`` happen to appear somewhere in it.
    Raises ``RecursionError`` for nesting past either parser's depth limit, ValueError
    for anything else that is not JSON.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        if "depth limit" in str(err):
            raise RecursionError(str(err)) from None
        refused = err
    try:
        obj = json.loads(raw.decode("utf-8"), parse_int=_int_like_orjson)
    except UnicodeDecodeError:
        raise refused from None
    except ValueError:  # refused by both: orjson's message says where
        raise refused from None
    # The stdlib parser takes what orjson refuses: lone surrogates ("\ud800"), which no
    # UTF-8 output can carry. Refuse them here.
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone UTF-16 surrogate") from None
    return obj


def _int_like_orjson(digits: str) -> int | float:
    """An integer literal as orjson reads it: an int within 64 bits, else a float."""
    if len(digits) > 20:  # past 64 bits whatever the digits (and past int()'s 4,300)
        return float(digits)
    value = int(digits)
    return value if _INT_RANGE[0] <= value < _INT_RANGE[1] else float(digits)


def _check(
    obj: Any, limits: EventsConfig
) -> tuple[str, float, dict[str, FeatureValue] | None, Label | None, tuple]:
    if not isinstance(obj, dict):
        raise InvalidEvent(
            Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}"
        )
    event_id = obj.get("id")
    if event_id is None:
        raise InvalidEvent(Reason.MISSING_ID, "field 'id' is required")
    if type(event_id) is not str or not event_id:
        raise InvalidEvent(
            Reason.BAD_ID, f"'id' must be a non-empty string, got {_preview(event_id)}"
        )
    if len(event_id) > limits.max_id_length:
        raise InvalidEvent(
            Reason.BAD_ID,
            f"'id' is {len(event_id)} characters long, limit is {limits.max_id_length}",
        )
    ts = obj.get("ts")
    # Comparing with MAX_TS first keeps a 400-digit integer from overflowing isfinite().
    if type(ts) not in (float, int) or not -MAX_TS < ts < MAX_TS or not math.isfinite(ts):
        hint = " (milliseconds? send seconds)" if type(ts) in (float, int) and ts > 0 else ""
        raise InvalidEvent(
            Reason.BAD_TS,
            f"'ts' must be a finite number of seconds since the epoch below {MAX_TS:.0e}, "
            f"got {_preview(ts)}{hint}",
        )
    label = obj.get("label")
    if type(label) is int and not _INT_RANGE[0] <= label < _INT_RANGE[1]:
        raise InvalidEvent(Reason.BAD_LABEL, "'label' is an integer beyond 64 bits")
    if label is not None and type(label) not in (int, str, bool):
        raise InvalidEvent(
            Reason.BAD_LABEL,
            f"'label' must be an integer, string or boolean, got {_preview(label)}",
        )
    raw_features = obj.get("features")
    if raw_features is None:
        if label is None:
            raise InvalidEvent(
                Reason.NO_FEATURES_OR_LABEL, "an event needs 'features', 'label' or both"
            )
        return event_id, float(ts), None, label, ()
    if not isinstance(raw_features, dict):
        raise InvalidEvent(
            Reason.BAD_FEATURES,
            f"'features' must be an object, got {type(raw_features).__name__}",
        )
    if len(raw_features) > limits.max_features:
        raise InvalidEvent(
            Reason.TOO_MANY_FEATURES,
            f"{len(raw_features)} features, limit is {limits.max_features}",
        )
    if _finite_floats(raw_features, limits.max_feature_name_length):
        return event_id, float(ts), raw_features, label, ()
    features, missing = _checked_features(raw_features, limits)
    return event_id, float(ts), features, label, missing


_FLOAT_ONLY = {float}
# The last names _finite_floats found valid, with the length limit they were checked
# against: a stream's events mostly share one layout, so its names are checked once.
_valid_names: tuple[tuple[str, ...], int] = ((), 0)


def _finite_floats(raw_features: dict[str, Any], longest: int) -> bool:
    """True when every value is a finite float and every name has 1 to ``longest``
    characters: what :func:`_checked_features` would take as it is, missing nothing. A few
    C-level passes, where the careful loop costs ~0.2 µs per feature (most events are
    all floats).

    >>> _finite_floats({"a": 1.5, "b": -0.0}, 64), _finite_floats({"a": 1.5, "b": 2}, 64)
    (True, False)
    >>> _finite_floats({"a": float("nan")}, 64), _finite_floats({"": 1.0}, 64)
    (False, False)
    """
    global _valid_names
    if compiled is not None:  # the same test in one C pass (detectors/_loops.c)
        return compiled.finite_floats(raw_features, longest)
    values = raw_features.values()
    if not (
        raw_features
        and set(map(type, values)) == _FLOAT_ONLY
        # A NaN or an infinity makes the sum non-finite (so, rarely, do huge finite
        # values: they take the careful path, which accepts them).
        and math.isfinite(sum(values))
    ):
        return False
    names = tuple(raw_features)
    if _valid_names != (names, longest):
        if not (min(map(len, names)) > 0 and max(map(len, names)) <= longest):
            return False
        _valid_names = (names, longest)
    return True


def _checked_features(
    raw_features: dict[str, Any], limits: EventsConfig
) -> tuple[dict[str, FeatureValue], tuple[str, ...]]:
    """The features to score (NaN, infinities and nulls left out) and the missing names;
    raises :class:`InvalidEvent` for a bad name or value."""
    features: dict[str, FeatureValue] = {}
    missing: list[str] = []
    longest = limits.max_feature_name_length
    for name, value in raw_features.items():
        if not 0 < len(name) <= longest:
            raise InvalidEvent(
                Reason.BAD_FEATURE_NAME,
                f"a feature name must have 1 to {longest} characters, got {len(name)}: "
                f"{name[:40]!r}",
            )
        kind = type(value)
        if kind is float:
            if value - value == 0.0:  # finite; NaN and ±inf fail this cheaply
                features[name] = value
            else:
                missing.append(name)
        elif kind is str:
            features[name] = value
        elif kind is int:
            if not _INT_RANGE[0] <= value < _INT_RANGE[1]:
                raise InvalidEvent(
                    Reason.BAD_FEATURE_VALUE, f"feature {name!r}: integer beyond 64 bits"
                )
            features[name] = value
        elif value is None:
            missing.append(name)
        else:
            raise InvalidEvent(
                Reason.BAD_FEATURE_VALUE,
                f"feature {name!r} must be a number, string or null, got {_preview(value)}",
            )
    return features, tuple(missing)


_REPR = reprlib.Repr()  # Python 3.11: limits are attributes, not arguments
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40


def _preview(value: Any) -> str:
    """A bounded repr: a 1,000-deep value or a 400-digit integer cannot blow it up."""
    return _REPR.repr(value)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def encode(event: dict[str, Any]) -> bytes:
    """Serialize an event dict (numpy scalars welcome; NaN becomes ``null``)."""
    return orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY)


def json_schema() -> dict[str, Any]:
    """The event schema as JSON Schema (also shipped as ``streamheal/schema/event.schema.json``)."""
    text = resources.files("streamheal").joinpath("schema/event.schema.json").read_text("utf-8")
    return orjson.loads(text)
