"""Wire formats: the JSON records the worker writes (predictions; drifts, actions and
notices on the alerts topic), dead-letter headers, and their encoding.

The domain classes (:class:`~streamheal.engine.Prediction`,
:class:`~streamheal.detectors.suite.Drift`, :class:`~streamheal.policy.Action`,
:class:`~streamheal.guards.Notice`) say what happened; this module alone says how it
looks on a topic, so a change of format is a change here. Replay's ``report.json`` uses
the same records.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamheal.detectors.suite import Drift
from streamheal.engine import Prediction
from streamheal.events import Rejection
from streamheal.guards import Notice
from streamheal.policy import Action

# Dead letters keep the original bytes as the record value and say why in headers,
# like Kafka Connect's dead-letter queue with context headers enabled.
DLQ_REASON = "streamheal.reason"
DLQ_DETAIL = "streamheal.detail"
DLQ_TOPIC = "streamheal.source.topic"
DLQ_PARTITION = "streamheal.source.partition"
DLQ_OFFSET = "streamheal.source.offset"


def prediction_record(output: Prediction) -> dict[str, Any]:
    """A value on the predictions topic (keyed by the event id)."""
    source = output.source
    return {
        "id": output.id,
        "ts": output.ts,
        "index": output.index,
        "prediction": output.prediction,
        "probabilities": output.probabilities,
        "model_version": output.model_version,
        "partition": source.partition,
        "offset": source.offset,
        "missing": output.missing,
    }


def drift_record(output: Drift) -> dict[str, Any]:
    """A drift declared or resolved (alerts topic, ``type: drift``); the detector's
    extra evidence is flattened into the record."""
    record = {"type": "drift", "key": output.key}
    record.update({k: v for k, v in vars(output).items() if k != "extra"})
    record.update(output.extra)
    return record


def action_record(output: Action) -> dict[str, Any]:
    """A change of model (alerts topic, ``type: action``); a snapshot's model bytes go to
    the registry, not into the record."""
    record = {"type": "action", **{k: v for k, v in vars(output).items() if k != "model"}}
    record["message"] = output.message
    return record


def notice_record(output: Notice) -> dict[str, Any]:
    """A guard that stepped in (alerts topic, ``type: notice``)."""
    return {"type": "notice", **vars(output)}


def record_of(output: Prediction | Drift | Action | Notice) -> dict[str, Any]:
    """The record of any Engine output but a dead letter (see :func:`dead_letter`)."""
    return _RECORDS[type(output)](output)


_RECORDS: dict[type, Any] = {
    Prediction: prediction_record,
    Drift: drift_record,
    Action: action_record,
    Notice: notice_record,
}


def encode(record: dict[str, Any]) -> bytes:
    # Class labels may be ints; JSON object keys must be strings.
    return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)


def prediction(output: Prediction) -> bytes:
    return encode(prediction_record(output))


def drift(output: Drift) -> bytes:
    return encode(drift_record(output))


DLQ_TRUNCATED = "streamheal.truncated"
# A dead letter's value is the original record; one too big for a producer (whose default
# limit is 1 MB, as the broker's) is cut here, with its full size in a header: the whole
# record stays on its source topic at the offset the headers name.
DLQ_MAX_VALUE_BYTES = 512 * 1024
DLQ_MAX_KEY_BYTES = 16 * 1024


def dead_letter(rejection: Rejection) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """The dead-letter record: (key, value, headers)."""
    source = rejection.source
    raw = rejection.raw
    headers = [
        (DLQ_REASON, rejection.reason.value.encode()),
        (DLQ_DETAIL, rejection.detail.encode("utf-8", "replace")),
        (DLQ_TOPIC, source.topic.encode()),
        (DLQ_PARTITION, str(source.partition).encode()),
        (DLQ_OFFSET, str(source.offset).encode()),
    ]
    if len(raw) > DLQ_MAX_VALUE_BYTES:
        headers.append((DLQ_TRUNCATED, str(len(raw)).encode()))
        raw = raw[:DLQ_MAX_VALUE_BYTES]
    key = rejection.key
    if key is not None and len(key) > DLQ_MAX_KEY_BYTES:
        key = key[:DLQ_MAX_KEY_BYTES]
    return key, raw, headers


def header_map(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers of a consumed record as a str dict (for readers of the DLQ)."""
    return {k: v.decode() for k, v in headers or []}
