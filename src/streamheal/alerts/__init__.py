"""On-call: alerts-topic records grouped and tuned into few notifications (Slack or console).

:class:`AlertBook` (pure) groups and tunes; :class:`Notifier` runs it on the alerts topic
apart from the workers; the sinks deliver; silences hold notifications back.
"""

from streamheal.alerts.book import Alert, AlertBook, Notification
from streamheal.alerts.console import ConsoleSink
from streamheal.alerts.identity import Identity
from streamheal.alerts.notifier import EmbeddedNotifier, Notifier
from streamheal.alerts.silences import Silence, Silences
from streamheal.alerts.slack import SlackWebhookSink, SlackWebSink, sink_from_env

__all__ = [
    "Alert",
    "AlertBook",
    "ConsoleSink",
    "EmbeddedNotifier",
    "Identity",
    "Notification",
    "Notifier",
    "Silence",
    "Silences",
    "SlackWebSink",
    "SlackWebhookSink",
    "sink_from_env",
]
