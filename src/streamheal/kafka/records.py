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


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    source = rejection.source
    return [
        (DLQ_REASON, rejection.reason.value.encode()),
        (DLQ_DETAIL, rejection.detail.encode()),
        (DLQ_TOPIC, source.topic.encode()),
        (DLQ_PARTITION, str(source.partition).encode()),
        (DLQ_OFFSET, str(source.offset).encode()),
    ]


def header_map(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers of a consumed record as a str dict (for readers of the DLQ)."""
    return {k: v.decode() for k, v in headers or []}
