"""Wire formats of what the worker writes: prediction values and dead-letter headers."""

from __future__ import annotations

import orjson

from streamheal.detectors.suite import Drift
from streamheal.engine import Prediction
from streamheal.events import Rejection

# Dead letters keep the original bytes as the record value and say why in headers,
# like Kafka Connect's dead-letter queue with context headers enabled.
DLQ_REASON = "streamheal.reason"
DLQ_DETAIL = "streamheal.detail"
DLQ_TOPIC = "streamheal.source.topic"
DLQ_PARTITION = "streamheal.source.partition"
DLQ_OFFSET = "streamheal.source.offset"


def prediction(output: Prediction) -> bytes:
    # Class labels may be ints; JSON object keys must be strings.
    return orjson.dumps(output.to_record(), option=orjson.OPT_NON_STR_KEYS)


def drift(output: Drift) -> bytes:
    return orjson.dumps(output.to_record(), option=orjson.OPT_NON_STR_KEYS)


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
