import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamheal.config import EventsConfig
from streamheal.events import (
    Event,
    InvalidEvent,
    Reason,
    Rejection,
    Source,
    _checked_features,
    _finite_floats,
    decode,
    json_schema,
)
from streamheal.events import validate as validate_event

SRC = Source("events", 3, 41)


def reason_of(raw: bytes, max_bytes: int = 65536) -> Reason:
    result = decode(raw, SRC, max_bytes)
    assert isinstance(result, Rejection), result
    assert result.raw == raw and result.source == SRC
    return result.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", Reason.NOT_JSON),
        (b"\xff\xfe", Reason.NOT_JSON),
        (b"[1, 2]", Reason.NOT_AN_OBJECT),
        (b'{"ts": 1, "features": {}}', Reason.MISSING_ID),
        (b'{"id": 7, "ts": 1, "features": {}}', Reason.BAD_ID),
        (b'{"id": "", "ts": 1, "features": {}}', Reason.BAD_ID),
        (b'{"id": "a", "features": {}}', Reason.BAD_TS),
        (b'{"id": "a", "ts": "noon", "features": {}}', Reason.BAD_TS),
        (b'{"id": "a", "ts": 1, "features": [1, 2]}', Reason.BAD_FEATURES),
        (b'{"id": "a", "ts": 1, "features": {"x": [1]}}', Reason.BAD_FEATURE_VALUE),
        (b'{"id": "a", "ts": 1, "features": {"x": {"y": 1}}}', Reason.BAD_FEATURE_VALUE),
        (b'{"id": "a", "ts": 1, "features": {"x": true}}', Reason.BAD_FEATURE_VALUE),
        (b'{"id": "a", "ts": 1, "label": 1.5}', Reason.BAD_LABEL),
        (b'{"id": "a", "ts": 1, "label": [1]}', Reason.BAD_LABEL),
        (b'{"id": "a", "ts": 1}', Reason.NO_FEATURES_OR_LABEL),
    ],
)
def test_each_bad_record_is_rejected_with_its_reason(raw: bytes, reason: Reason) -> None:
    assert reason_of(raw) == reason


def test_a_record_over_the_size_limit_is_rejected_before_parsing() -> None:
    raw = orjson.dumps({"id": "a", "ts": 1, "features": {"x": "y" * 200}})
    assert reason_of(raw, max_bytes=100) == Reason.TOO_LARGE


@pytest.mark.parametrize("missing", ["null", "NaN", "Infinity", "-Infinity"])
def test_null_nan_and_infinity_are_missing_values_not_errors(missing: str) -> None:
    raw = f'{{"id": "a", "ts": 1.0, "features": {{"x": {missing}, "y": 2}}}}'.encode()
    event = decode(raw, SRC)
    assert isinstance(event, Event)
    assert event.features == {"y": 2}
    assert event.missing == ("x",)


@pytest.mark.parametrize(
    ("value", "features", "missing"),
    [
        (b"1e400", {}, ("x",)),  # beyond a double: infinite, so missing (as Infinity)
        (b"-1" + b"0" * 400, {}, ("x",)),
        (b"1" + b"0" * 5000, {}, ("x",)),  # past int()'s digit limit too
        (b"1180591620717411303424", {"x": 1.1805916207174113e21}, ()),  # 2**70: a float
        (b"18446744073709551615", {"x": 18446744073709551615}, ()),  # the largest u64
        (b"2.5", {"x": 2.5}, ()),
    ],
)
def test_a_records_verdict_does_not_depend_on_unrelated_bytes(
    value: bytes, features: dict, missing: tuple
) -> None:
    # orjson refuses bare NaN, and the stdlib parser reads what orjson refuses: the same
    # number must come out whether or not "NaN" appears elsewhere in the record (in a
    # value, or only in a string).
    for extra, also_missing in ((b"", ()), (b', "pad": NaN', ("pad",)), (b', "s": "NaN"', ())):
        raw = b'{"id": "a", "ts": 1.0, "features": {"x": ' + value + extra + b"}}"
        event = decode(raw, SRC)
        assert isinstance(event, Event), (raw, event)
        assert {k: v for k, v in event.features.items() if k != "s"} == features
        assert event.missing == missing + also_missing


def test_nesting_past_the_parsers_depth_is_too_deep_with_or_without_nan() -> None:
    for extra in (b"", b', "pad": NaN'):
        raw = b'{"id": "a", "ts": 1.0, "features": {"x": 1.0' + extra + b'}, "y": '
        raw += b"[" * 5000 + b"]" * 5000 + b"}"
        assert reason_of(raw) == Reason.TOO_DEEP


def test_python_json_dumps_output_with_nan_is_accepted() -> None:
    raw = json.dumps({"id": "a", "ts": 1.0, "features": {"x": math.nan, "c": "red"}}).encode()
    event = decode(raw, SRC)
    assert isinstance(event, Event) and event.features == {"c": "red"}


def test_label_event_and_feature_event_with_label() -> None:
    label_event = decode(b'{"id": "a", "ts": 2, "label": "spam"}', SRC)
    assert isinstance(label_event, Event)
    assert label_event.features is None and label_event.label == "spam"
    both = decode(b'{"id": "a", "ts": 2, "features": {"x": 1}, "label": 0}', SRC)
    assert isinstance(both, Event) and both.label == 0 and both.features == {"x": 1}


def test_validate_raises_for_the_producer_side() -> None:
    with pytest.raises(InvalidEvent) as err:
        validate_event({"id": "a", "ts": 1, "features": {"x": object()}})
    assert err.value.reason == Reason.BAD_FEATURE_VALUE


def test_shipped_json_schema_examples_decode_as_valid_events() -> None:
    schema = json_schema()
    assert schema["required"] == ["id", "ts"]
    for example in schema["examples"]:
        assert isinstance(decode(orjson.dumps(example), SRC), Event)


@given(st.binary(max_size=300))
def test_decode_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    assert isinstance(decode(raw, SRC), Event | Rejection)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from(["id", "ts", "features", "label", "x"]), json_values))
def test_decode_never_raises_on_arbitrary_json_objects(obj: dict) -> None:
    raw = json.dumps(obj).encode()
    result = decode(raw, SRC)
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Event) and result.features is not None:
        for value in result.features.values():
            assert isinstance(value, str) or math.isfinite(value)


feature_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e308, max_value=1e308),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
feature_names = st.one_of(st.text(max_size=6), st.text(min_size=60, max_size=70))


@given(st.dictionaries(feature_names, feature_values, max_size=8), st.integers(1, 64))
def test_the_all_floats_fast_path_takes_exactly_what_the_careful_check_keeps_as_is(
    features: dict, longest: int
) -> None:
    # decode skips the per-feature loop when every value is a finite float and every name
    # fits; the loop must then keep every value as it is and miss nothing.
    limits = EventsConfig(max_feature_name_length=longest)
    for _ in range(2):  # the second time through, the names are known valid
        if _finite_floats(features, longest):
            kept, missing = _checked_features(features, limits)
            assert kept == features and list(kept) == list(features) and missing == ()
    try:
        kept, missing = _checked_features(features, limits)
    except InvalidEvent:
        assert not _finite_floats(features, longest)
        return
    if missing or kept != features or not all(type(v) is float for v in kept.values()):
        assert not _finite_floats(features, longest)


class _Fancy(float):
    """A float subclass: not an exact float for either path."""


_floats_only = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e307, max_value=1.7e308),  # finite values whose sum overflows
)


@settings(max_examples=300)
@given(
    st.one_of(
        st.dictionaries(feature_names, _floats_only, min_size=1, max_size=8),
        st.dictionaries(
            feature_names,
            st.one_of(feature_values, _floats_only, st.builds(_Fancy, st.floats(-5, 5))),
            max_size=8,
        ),
    ),
    st.integers(1, 64),
)
def test_the_compiled_all_floats_check_decides_as_the_python_one(
    features: dict, longest: int
) -> None:
    import streamheal.events as events

    compiled = events.compiled
    if compiled is None:
        pytest.skip("built without the C extension")
    fast = _finite_floats(features, longest)
    events.compiled = None
    try:
        assert _finite_floats(features, longest) == fast
    finally:
        events.compiled = compiled


_ABSENT = object()
_any_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)
_other_values = {
    "id": st.one_of(_any_scalar, st.just(_ABSENT)),
    "ts": st.one_of(_any_scalar, st.just(_ABSENT), st.sampled_from([1e11, -1e11, 10**11])),
    "label": st.one_of(
        _any_scalar,
        st.lists(st.integers(), max_size=1),
        st.sampled_from([2**63, -(2**63) - 1, 2**64 - 1, 2**64]),
    ),
    "features": st.one_of(
        _any_scalar,
        st.just(_ABSENT),
        st.just({}),
        st.dictionaries(feature_names, st.one_of(feature_values, _floats_only), max_size=5),
        st.lists(st.floats(), max_size=2),
    ),
}


@st.composite
def _events(draw: st.DrawFn) -> tuple[dict, EventsConfig]:
    """An event _check takes as it is, near the edges it draws (lengths at the limits, ts
    at the bound, labels at 64 bits, feature sums that overflow), then often one field
    with a value it refuses or takes otherwise."""
    limits = EventsConfig(
        max_id_length=draw(st.integers(1, 12)),
        max_features=draw(st.integers(1, 8)),
        max_feature_name_length=draw(st.integers(1, 12)),
    )
    longest = limits.max_feature_name_length
    names = (
        st.text(min_size=1, max_size=longest)
        | st.text(min_size=longest, max_size=longest + 1)
        | st.just("")
    )
    fields = {
        "id": draw(st.text(min_size=1, max_size=limits.max_id_length + 1)),
        "ts": draw(
            st.floats(min_value=-1.1e11, max_value=1.1e11)
            | st.integers(min_value=-(10**11) - 1, max_value=10**11 + 1)
            | st.sampled_from([99_999_999_999.9, -99_999_999_999, 1700e6])
        ),
        "label": draw(
            st.just(_ABSENT)
            | st.none()
            | st.booleans()
            | st.text(max_size=3)
            | st.integers(min_value=-(2**63), max_value=2**63 - 1)
            | st.sampled_from([2**63 - 1, -(2**63)])
        ),
        "features": draw(
            st.dictionaries(
                names,
                st.floats(-1e3, 1e3) | _floats_only,
                min_size=1,
                max_size=limits.max_features + 1,
            )
        ),
    }
    other = draw(st.sampled_from([None, None, *_other_values]))
    if other is not None:
        fields[other] = draw(_other_values[other])
    return {name: value for name, value in fields.items() if value is not _ABSENT}, limits


@settings(max_examples=1000)
@given(_events())
def test_the_compiled_plain_event_check_answers_as_check_or_not_at_all(
    event: tuple[dict, EventsConfig],
) -> None:
    import streamheal.events as events

    if events.compiled is None:
        pytest.skip("built without the C extension")
    obj, limits = event
    plain = events.compiled.plain_event(
        obj,
        limits.max_id_length,
        limits.max_features,
        limits.max_feature_name_length,
        events.MAX_TS,
    )
    try:
        checked = events._check(obj, limits)
    except InvalidEvent:
        checked = None
    if plain is not None:
        assert checked is not None and checked[4] == ()
        assert plain == checked[:4] and plain[2] is checked[2] and type(plain[1]) is float
        assert plain[3] is checked[3]


def test_a_plain_event_takes_the_compiled_path() -> None:
    import streamheal.events as events

    if events.compiled is None:
        pytest.skip("built without the C extension")
    for label in (None, 1, "spam", True):
        obj = {"id": "e1", "ts": 1_700_000_000, "features": {"x": 1.5}, "label": label}
        plain = events.compiled.plain_event(obj, 256, 1000, 256, events.MAX_TS)
        assert plain == ("e1", 1.7e9, {"x": 1.5}, label)
