"""The contract every notification sink keeps (Slack Web API, Slack webhook, console).

A sink posts a rendered :class:`~streamheal.alerts.blocks.Message`, as a new message or as
a reply in the thread of an earlier one, and returns a receipt (where it went). It raises
:class:`DeliveryFailed` when the message was not accepted; the notifier then keeps it and
tries again later, in order. Before re-sending a notification that may have been posted
just before a crash, the notifier asks :meth:`Sink.find` whether it is already there.
"""

from __future__ import annotations

from typing import Any, Protocol

from streamheal.alerts.blocks import Message
from streamheal.errors import StreamhealError

Receipt = dict[str, Any]  # {"sink": ..., "channel": ..., "ts": ...}


class DeliveryFailed(StreamhealError, RuntimeError):
    """The sink did not accept the message (it will be retried)."""


class Sink(Protocol):
    name: str

    def post(self, message: Message, thread: Receipt | None = None) -> Receipt:
        """Post ``message`` (a reply in ``thread`` when given); raise DeliveryFailed."""
        ...

    def find(self, key: str, since: float, thread: Receipt | None = None) -> Receipt | None:
        """The receipt of a message carrying idempotency ``key`` posted after ``since``, or
        None (also when the sink cannot tell)."""
        ...

    def update(self, channel: str, ts: str, message: Message) -> None:
        """Replace a posted message (after a button click); raise DeliveryFailed."""
        ...
