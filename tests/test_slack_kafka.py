"""Slack end to end with a real worker on the real broker: a Slack outage never touches
scoring and loses nothing; a signed button click rolls the running workers back."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from slack_sdk.signature import SignatureVerifier

from streamheal import models
from streamheal.alerts.blocks import Links, render
from streamheal.alerts.book import AlertBook
from streamheal.alerts.interactive import ClickActions, InteractiveEndpoint
from streamheal.alerts.silences import Silences
from streamheal.config import Config
from streamheal.metrics import NotifierMetrics, sample_value
from streamheal.registry import Registry
from streamheal.scenarios import SCENARIOS, breast_cancer
from tests.conftest import (
    SMALL_DETECTORS,
    drift,
    notifier_config,
    produce,
    read_all,
    read_topic,
    running_notifier,
    running_worker,
    wait_for,
    web_sink,
)
from tests.slack_web_api import CHANNEL, slack_web_api

pytestmark = pytest.mark.kafka

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def test_with_slack_down_for_the_whole_run_nothing_is_lost_and_everything_arrives_once_after(
    config: Config,
) -> None:
    config = notifier_config(config).replace(detectors=SMALL_DETECTORS)
    scenario = breast_cancer(events=2400, drift_at=1200, label_delay=10, seed=3)
    produce(config, scenario.events)
    bootstrap = config.kafka.bootstrap_servers
    with slack_web_api() as api:
        api.down = True
        with running_notifier(config, web_sink(api)) as notifier:
            with running_worker(config) as worker:
                # Scoring does not wait for Slack: the worker gets through the whole stream.
                wait_for(
                    lambda: worker.stats.consumed == len(scenario.events),
                    timeout=120,
                    what="the worker through the stream while Slack is down",
                )
            alerts = [orjson.loads(m.value()) for m in read_all(bootstrap, config.topics.alerts)]
            drifts = [r for r in alerts if r["type"] == "drift"]
            assert any(r["status"] == "firing" and r["feature"] == "mean radius" for r in drifts)
            failures = notifier.metrics.failures.labels("slack")
            wait_for(lambda: failures._value.get() >= 2, what="the notifier failing to send")
            assert api.posted() == []
            # Every drift record reached the notifier; none is lost while Slack is down.
            wait_for(
                lambda: (
                    sample_value(
                        notifier.metrics.registry, "streamheal_notifier_records_total", type="drift"
                    )
                    == len(drifts)
                ),
                what="every drift record read",
            )
            waiting = {i for n in notifier.book.outbox for i in n.alert_ids}
            assert waiting, "notifications wait in the outbox"
            api.down = False
            wait_for(lambda: notifier.book.outbox == [], timeout=60, what="delivery after")
            book = notifier.book
            announced = {a.alert_id for a in book.alerts.values() if a.root is not None}
        posted = api.posted()
    refs = [
        ref
        for message in posted
        if not message["thread_ts"]
        for ref in message["metadata"]["event_payload"]["alerts"].split(",")
    ]
    assert len(refs) == len(set(refs)), "an alert was announced twice"
    assert {ref.split("#")[0] for ref in refs} == announced
    assert waiting <= announced
    radius = [a for a in book.alerts.values() if a.identity.feature == "mean radius"]
    assert radius and radius[0].partitions == "2/2"
    # Its state changes are on the alerts topic, the record of truth.
    records = [orjson.loads(m.value()) for m in read_all(bootstrap, config.topics.alerts)]
    states = {
        r["state"] for r in records if r["type"] == "alert" and r["alert_id"] == radius[0].alert_id
    }
    assert {"pending", "firing"} <= states


def click(port: int, payload: dict[str, Any], secret: str | None, age: float = 0.0) -> int:
    """POST a button payload as Slack does, signed with ``secret`` (unsigned if None)."""
    body = urlencode({"payload": json.dumps(payload)})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if secret is not None:
        timestamp = str(int(time.time() - age))
        headers["X-Slack-Request-Timestamp"] = timestamp
        headers["X-Slack-Signature"] = SignatureVerifier(secret).generate_signature(
            timestamp=timestamp, body=body
        )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/slack/actions", data=body.encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_a_signed_click_rolls_the_running_workers_back_and_forged_ones_get_401(
    config: Config, tmp_path: Path
) -> None:
    config = notifier_config(config).replace(registry={"path": str(tmp_path / "registry")})
    registry = Registry(tmp_path / "registry", config.registry.model_name)
    fresh = models.dumps(models.build_model(config.model, seed=1))
    first = registry.register(fresh, cause="first")
    second = registry.register(fresh, cause="second")
    registry.promote(first)
    registry.promote(second)  # champion v2, previous v1
    bootstrap = config.kafka.bootstrap_servers
    metrics = NotifierMetrics()
    silences = Silences()
    with slack_web_api() as api, running_worker(config):
        produce(config, SCENARIOS["stationary"](events=300, seed=2).events)
        read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= 300)
        # The alert message the on-call clicks in.
        book = AlertBook(config.alerts, config.registry.model_name, partitions=2)
        book.apply(drift(kind="concept", signal="error", feature=None, detector="adwin"), 1.0)
        (notification,) = book.due(now=100.0)[1]
        message = render(notification, book.members(notification), Links())
        sink = web_sink(api)
        receipt = sink.post(message)
        endpoint = InteractiveEndpoint(
            ClickActions(config, silences), SECRET, sink, metrics, "127.0.0.1", 0
        )
        port = endpoint.start()
        try:
            buttons = {e["action_id"]: e for e in message.blocks[-1]["elements"]}

            def payload(action_id: str) -> dict[str, Any]:
                return {
                    "type": "block_actions",
                    "user": {"id": "U42", "username": "ann"},
                    "channel": {"id": CHANNEL},
                    "message": {
                        "ts": receipt["ts"],
                        "text": message.text,
                        "blocks": message.blocks,
                    },
                    "actions": [buttons[action_id]],
                }

            assert click(port, payload("rollback"), None) == 401
            assert click(port, payload("rollback"), "not-the-secret") == 401
            assert click(port, payload("rollback"), SECRET, age=600) == 401  # replayed
            assert click(port, payload("rollback"), SECRET) == 200
            wait_for(lambda: api.updates, what="the message updated")
            installs = read_topic(
                bootstrap,
                config.topics.alerts,
                lambda m: sum(orjson.loads(x.value()).get("action") == "install" for x in m) == 2,
            )
            assert click(port, payload("silence_1h"), SECRET) == 200
            wait_for(lambda: len(api.updates) == 2, what="the silence confirmed")
        finally:
            endpoint.close()
    rolled_back, silenced = api.updates
    assert "Rolled back to v1 by @ann" in rolled_back["text"]
    assert rolled_back["ts"] == receipt["ts"] and rolled_back["channel"] == CHANNEL
    assert all(b["type"] != "actions" for b in rolled_back["blocks"])  # buttons gave way
    assert registry.alias("champion") == first
    actions = [orjson.loads(m.value()) for m in installs]
    install = [a for a in actions if a.get("action") == "install"]
    assert {a["model_version"] for a in install} == {first} and "slack:ann" in install[0]["message"]
    commands = [orjson.loads(m.value()) for m in read_all(bootstrap, config.topics.control, 1)]
    assert {"command": "rollback", "version": first, "by": "slack:ann"}.items() <= commands[
        0
    ].items()
    assert "Silenced for 1h by @ann" in silenced["text"]
    (silence,) = silences.by_id.values()
    assert silence.matches({"alert": notification.alert_ids[0]}, now=time.time())
    assert any(c.get("type") == "silence" for c in commands)
    refused = sample_value(
        metrics.registry, "streamheal_interactive_requests_total", outcome="refused"
    )
    accepted = sample_value(
        metrics.registry, "streamheal_interactive_requests_total", outcome="accepted"
    )
    assert (refused, accepted) == (3.0, 2.0)


def test_with_slack_configured_streamheal_run_notifies_from_an_embedded_thread(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = notifier_config(config).replace(
        detectors=SMALL_DETECTORS,
        metrics={"port": 0, "address": "127.0.0.1"},
        alerts={"embedded_notifier": True},  # the fixture turns it off for other tests
    )
    scenario = breast_cancer(events=2400, drift_at=1200, label_delay=10, seed=3)
    produce(config, scenario.events)
    with slack_web_api() as api:
        for name, value in api.env().items():
            monkeypatch.setenv(name, value)
        with running_worker(config) as worker:
            wait_for(lambda: api.top_level(), timeout=120, what="a message from the worker")
            wait_for(
                lambda: (
                    sample_value(
                        worker.metrics.registry,
                        "streamheal_notifications_total",
                        sink="slack",
                        kind="firing",
                    )
                    is not None
                ),
                what="the delivery in the worker's own metrics",
            )
        texts = [m["text"] for m in api.top_level()]
    assert any("mean radius" in text and "2/2" in text for text in texts)
