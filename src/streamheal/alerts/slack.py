"""Slack sinks: the Web API (bot token + channel, threads) or an incoming webhook.

Credentials come only from the environment and are never logged:

- ``SLACK_BOT_TOKEN`` and ``SLACK_CHANNEL``: :class:`SlackWebSink` (``chat.postMessage``,
  replies in the alert's thread via ``thread_ts``, ``chat.update`` after a button click);
- ``SLACK_WEBHOOK_URL``: :class:`SlackWebhookSink` (no threads: replies are new messages
  that name the alert, and buttons cannot update what they came from);
- ``SLACK_API_URL``: the Web API base URL (slack_sdk's ``base_url``), so a local server can
  stand in for Slack.

Both clients retry with slack_sdk's handlers: rate limits (HTTP 429, waiting the
``Retry-After`` the server asks for), server errors (500, 503) and connection errors. A
message that still fails raises :class:`~streamheal.alerts.sink.DeliveryFailed`, and the
notifier tries again later.

Every message carries Slack message metadata with its idempotency key, so after a crash
the notifier can ask the channel (``conversations.history`` / ``conversations.replies``)
whether a message it may have posted is there before posting it again.

>>> sink_from_env({}).name
'console'
>>> sink_from_env({"SLACK_WEBHOOK_URL": "http://127.0.0.1:9/hook"}).name
'slack-webhook'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    RetryHandler,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from streamheal.alerts.blocks import METADATA_EVENT, Message
from streamheal.alerts.console import ConsoleSink
from streamheal.alerts.sink import DeliveryFailed, Receipt, Sink
from streamheal.config import ConfigError

TOKEN_ENV = "SLACK_BOT_TOKEN"
CHANNEL_ENV = "SLACK_CHANNEL"
WEBHOOK_ENV = "SLACK_WEBHOOK_URL"
API_URL_ENV = "SLACK_API_URL"
SIGNING_SECRET_ENV = "SLACK_SIGNING_SECRET"
TIMEOUT_SECONDS = 10
# slack_sdk formats its DEBUG lines (the webhook URL is a secret) only when its logger's own
# level allows DEBUG: a logger of ours pinned at INFO keeps secrets out of any log.
_QUIET = logging.getLogger("streamheal.slack.client")
_QUIET.setLevel(logging.INFO)


def retry_handlers() -> list[RetryHandler]:
    """Rate limits (Retry-After), server errors and connection errors, a few times each."""
    return [
        RateLimitErrorRetryHandler(max_retry_count=3),
        ServerErrorRetryHandler(max_retry_count=2),
        ConnectionErrorRetryHandler(max_retry_count=2),
    ]


def slack_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether Slack credentials are set (a bot token or a webhook URL)."""
    env = os.environ if env is None else env
    return bool(env.get(TOKEN_ENV) or env.get(WEBHOOK_ENV))


def sink_from_env(env: Mapping[str, str] | None = None) -> Sink:
    """The Web API sink, else the webhook sink, else the console sink."""
    env = os.environ if env is None else env
    token, channel = env.get(TOKEN_ENV, ""), env.get(CHANNEL_ENV, "")
    if token:
        if not channel:
            raise ConfigError(f"{TOKEN_ENV} is set but {CHANNEL_ENV} is not: which channel?")
        return SlackWebSink(token, channel, env.get(API_URL_ENV) or None)
    if env.get(WEBHOOK_ENV):
        return SlackWebhookSink(env[WEBHOOK_ENV])
    return ConsoleSink()


class SlackWebSink:
    """Posts with ``chat.postMessage`` to one channel; replies go in threads.

    Parameters
    ----------
    token
        A bot token (``xoxb-...``) with ``chat:write`` (and ``channels:history`` or
        ``groups:history`` for the duplicate check after a crash).
    channel
        Channel id or name.
    base_url
        The Web API base URL (default Slack's).
    """

    name = "slack"

    def __init__(self, token: str, channel: str, base_url: str | None = None) -> None:
        options: dict[str, Any] = {}
        if base_url:
            options["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
        self.channel = channel
        self.client = WebClient(
            token=token,
            timeout=TIMEOUT_SECONDS,
            retry_handlers=retry_handlers(),
            logger=_QUIET,
            **options,
        )

    def __repr__(self) -> str:  # never the token
        return f"SlackWebSink(channel={self.channel!r})"

    def post(self, message: Message, thread: Receipt | None = None) -> Receipt:
        try:
            response = self.client.chat_postMessage(
                channel=thread["channel"] if thread else self.channel,
                text=message.text,
                blocks=message.blocks,
                thread_ts=thread["ts"] if thread else None,
                metadata=message.metadata or None,
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as err:
            raise DeliveryFailed(f"chat.postMessage: {_api_error(err)}") from None
        except Exception as err:  # connection refused, timeout, reset: retried later
            raise DeliveryFailed(f"chat.postMessage: {type(err).__name__}: {err}") from None
        return {"sink": self.name, "channel": response["channel"], "ts": response["ts"]}

    def find(self, key: str, since: float, thread: Receipt | None = None) -> Receipt | None:
        try:
            if thread:
                response = self.client.conversations_replies(
                    channel=thread["channel"],
                    ts=thread["ts"],
                    include_all_metadata=True,
                    limit=200,
                )
                channel = thread["channel"]
            else:
                response = self.client.conversations_history(
                    channel=self.channel,
                    oldest=f"{since - 60:.6f}",
                    include_all_metadata=True,
                    limit=200,
                )
                channel = response.get("channel") or self.channel
        except Exception:
            return None  # cannot tell: post again (at-least-once)
        for item in response.get("messages") or []:
            metadata = item.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == METADATA_EVENT and payload.get("key") == key:
                return {"sink": self.name, "channel": channel, "ts": item["ts"]}
        return None

    def update(self, channel: str, ts: str, message: Message) -> None:
        try:
            self.client.chat_update(
                channel=channel, ts=ts, text=message.text, blocks=message.blocks
            )
        except SlackApiError as err:
            raise DeliveryFailed(f"chat.update: {_api_error(err)}") from None
        except Exception as err:
            raise DeliveryFailed(f"chat.update: {type(err).__name__}: {err}") from None


class SlackWebhookSink:
    """Posts to an incoming webhook (one fixed channel, no threads, no updates)."""

    name = "slack-webhook"

    def __init__(self, url: str) -> None:
        self._url = url
        self.client = WebhookClient(
            url, timeout=TIMEOUT_SECONDS, retry_handlers=retry_handlers(), logger=_QUIET
        )

    def __repr__(self) -> str:  # the URL is the secret
        return "SlackWebhookSink(<url hidden>)"

    def post(self, message: Message, thread: Receipt | None = None) -> Receipt:
        try:
            response = self.client.send(text=message.text, blocks=message.blocks)
        except Exception as err:
            raise DeliveryFailed(self._hide(f"webhook: {type(err).__name__}: {err}")) from None
        if response.status_code != 200:
            raise DeliveryFailed(
                self._hide(f"webhook: HTTP {response.status_code}: {response.body[:200]}")
            )
        return {"sink": self.name, "channel": "webhook", "ts": ""}

    def find(self, key: str, since: float, thread: Receipt | None = None) -> Receipt | None:
        return None  # a webhook cannot read the channel back

    def update(self, channel: str, ts: str, message: Message) -> None:
        raise DeliveryFailed("a webhook cannot update a posted message")

    def _hide(self, text: str) -> str:
        return text.replace(self._url, f"<{WEBHOOK_ENV}>")


def _api_error(err: SlackApiError) -> str:
    response = err.response
    status = getattr(response, "status_code", "?")
    error = response.get("error") if hasattr(response, "get") else None
    return f"HTTP {status}, {error or 'error'}"
