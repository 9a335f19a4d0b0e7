"""The Slack sinks through slack_sdk against a local server that speaks the Web API."""

from __future__ import annotations

import io
import logging

import pytest

from streamheal.alerts.blocks import Links, render
from streamheal.alerts.book import AlertBook
from streamheal.alerts.console import ConsoleSink
from streamheal.alerts.sink import DeliveryFailed
from streamheal.alerts.slack import SlackWebhookSink, SlackWebSink, sink_from_env
from streamheal.config import AlertsConfig, ConfigError
from tests.conftest import drift
from tests.slack_web_api import CHANNEL, TOKEN, slack_web_api


def a_message(features: int = 1):
    book = AlertBook(AlertsConfig(), "streamheal", partitions=4)
    for i in range(features):
        for partition in range(4):
            book.apply(drift(feature=f"f{i}", partition=partition), at=100.0)
    (notification,) = book.due(now=1000.0)[1]
    return notification, render(notification, book.members(notification), Links("http://g/d"))


def test_the_web_api_sink_posts_the_blocks_and_replies_in_the_thread() -> None:
    notification, message = a_message()
    with slack_web_api() as api:
        sink = sink_from_env(api.env())
        receipt = sink.post(message)
        reply = sink.post(message, thread=receipt)
        (first, second) = api.posted()
    assert isinstance(sink, SlackWebSink) and receipt["channel"] == CHANNEL
    assert first["blocks"] == message.blocks and first["text"] == message.text
    assert first["metadata"]["event_payload"]["key"] == notification.key
    assert second["thread_ts"] == receipt["ts"] and reply["ts"] != receipt["ts"]


def test_a_429_with_retry_after_is_retried_and_succeeds() -> None:
    _, message = a_message()
    with slack_web_api() as api:
        api.rate_limited, api.retry_after = 1, 1
        receipt = SlackWebSink(TOKEN, CHANNEL, api.base_url).post(message)
        calls = list(api.calls)
    assert calls == [("chat.postMessage", 429), ("chat.postMessage", 200)]
    assert receipt["ts"]


def test_slack_down_is_a_delivery_failure_after_the_retries() -> None:
    _, message = a_message()
    with slack_web_api() as api:
        api.down = True
        with pytest.raises(DeliveryFailed, match="503"):
            SlackWebSink(TOKEN, CHANNEL, api.base_url).post(message)
        assert [status for _, status in api.calls] == [503, 503, 503]  # 1 + 2 retries


def test_a_message_posted_before_a_crash_is_found_by_its_idempotency_key() -> None:
    notification, message = a_message()
    with slack_web_api() as api:
        sink = SlackWebSink(TOKEN, CHANNEL, api.base_url)
        assert sink.find(notification.key, since=0.0) is None
        receipt = sink.post(message)
        assert sink.find(notification.key, since=0.0) == receipt
        assert sink.find("another-key", since=0.0) is None


def test_the_webhook_sink_posts_and_never_shows_its_url(caplog: pytest.LogCaptureFixture) -> None:
    _, message = a_message(features=12)
    caplog.set_level(logging.DEBUG)
    with slack_web_api() as api:
        sink = sink_from_env({"SLACK_WEBHOOK_URL": api.webhook_url})
        assert isinstance(sink, SlackWebhookSink)
        sink.post(message)
        api.down = True
        with pytest.raises(DeliveryFailed) as failure:
            sink.post(message)
        (posted,) = api.webhook
    assert posted["blocks"] == message.blocks
    assert "secret" not in str(failure.value) and "secret" not in repr(sink)
    assert "secret" not in caplog.text and TOKEN not in caplog.text


def test_the_console_sink_prints_the_same_content_when_no_credentials_are_set() -> None:
    _, message = a_message(features=12)
    assert isinstance(sink_from_env({}), ConsoleSink)
    out = io.StringIO()
    ConsoleSink(out).post(message)
    text = out.getvalue()
    assert "covariate drift on 12 features" in text and "4/4" in text


def test_a_bot_token_without_a_channel_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SLACK_CHANNEL"):
        sink_from_env({"SLACK_BOT_TOKEN": TOKEN})
