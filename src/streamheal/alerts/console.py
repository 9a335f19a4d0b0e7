"""The console sink: the same notifications as text, when no Slack credentials are set.

>>> import io
>>> from streamheal.alerts.blocks import Message
>>> out = io.StringIO()
>>> sink = ConsoleSink(out)
>>> first = sink.post(Message("[WARNING] m: covariate drift on x", []))
>>> _ = sink.post(Message("resolved", []), thread=first)
>>> print(out.getvalue().strip())
── notification 1 ──
[WARNING] m: covariate drift on x
── notification 2 (reply to 1) ──
resolved
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from streamheal.alerts.blocks import Message
from streamheal.alerts.sink import Receipt


class ConsoleSink:
    """Prints each notification; replies name the message they answer."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._count = 0
        self._lock = threading.Lock()

    def post(self, message: Message, thread: Receipt | None = None) -> Receipt:
        with self._lock:
            self._count += 1
            number = str(self._count)
            reply = f" (reply to {thread['ts']})" if thread else ""
            stream = self._stream or sys.stdout
            print(f"── notification {number}{reply} ──\n{message.text}", file=stream, flush=True)
        return {"sink": self.name, "channel": "console", "ts": number}

    def find(self, key: str, since: float, thread: Receipt | None = None) -> Receipt | None:
        return None  # a console keeps no history to look in

    def update(self, channel: str, ts: str, message: Message) -> None:
        with self._lock:
            print(
                f"── notification {ts} updated ──\n{message.text}", file=self._stream or sys.stdout
            )
