"""Alert grouping and tuning, without Kafka: the AlertBook on drift, action and notice
records as the workers write them."""

from __future__ import annotations

from typing import Any

import pytest

from streamheal.alerts.blocks import Links, render
from streamheal.alerts.book import AlertBook
from streamheal.alerts.silences import Silence, Silences, parse_matchers
from streamheal.config import AlertsConfig
from tests.conftest import action, drift

CFG = AlertsConfig(group_window_seconds=30, resolve_hold_seconds=60, repeat_interval_seconds=3600)


def book(cfg: AlertsConfig = CFG, silences: Silences | None = None) -> AlertBook:
    return AlertBook(cfg, "streamheal", partitions=4, silences=silences)


def test_a_drift_confirmed_in_four_partitions_is_one_notification_saying_4_of_4() -> None:
    alerts = book()
    offset = 0
    for partition in range(4):
        alerts.apply(drift(partition=partition), at=100.0 + partition, source=(partition, offset))
        alerts.apply(
            action("snapshot", "covariate:feature:mean radius:cusum", partition),
            at=100.5 + partition,
            source=(partition, offset + 1),
        )
    assert alerts.due(now=129.0)[1] == []  # the group window is still open
    records, notifications = alerts.due(now=131.0)
    assert [n.kind for n in notifications] == ["firing"]
    (alert,) = alerts.members(notifications[0])
    assert alert.state == "firing" and alert.partitions == "4/4"
    assert [a["action"] for a in alert.actions] == ["snapshot"] * 4
    assert records[0]["type"] == "notification" and records[0]["status"] == "due"
    assert {r["state"] for r in records if r["type"] == "alert"} == {"firing"}
    text = render(notifications[0], [alert], Links()).text
    assert "4/4" in text and "snapshot ×4 (v1)" in text


def test_twelve_features_drifting_together_are_one_message_sorted_by_effect_size() -> None:
    alerts = book()
    features = [f"f{i:02d}" for i in range(12)]
    for i, name in enumerate(features):
        alerts.apply(drift(feature=name, statistic=20.0 + 10 * i), at=100.0 + i)
    _, notifications = alerts.due(now=140.0)
    assert len(notifications) == 1
    members = alerts.members(notifications[0])
    assert [a.identity.feature for a in members] == features[::-1]  # strongest first
    message = render(notifications[0], members, Links())
    assert "covariate drift on 12 features" in message.blocks[0]["text"]["text"]


def test_alerts_of_another_kind_or_outside_the_window_are_separate_messages() -> None:
    alerts = book()
    alerts.apply(drift(feature="a"), at=100.0)
    alerts.apply(drift(feature=None, kind="prior", signal="label", detector="chi2"), at=101.0)
    alerts.apply(drift(feature="b"), at=140.0)  # after the first covariate window closed
    _, notifications = alerts.due(now=200.0)
    grouped = sorted(
        sorted(a.identity.feature or "-" for a in alerts.members(n)) for n in notifications
    )
    assert grouped == [["-"], ["a"], ["b"]]


def test_resolved_goes_in_the_thread_after_every_partition_cleared_for_the_hold() -> None:
    alerts = book()
    for partition in (0, 1):
        alerts.apply(drift(partition=partition), at=100.0)
    (firing,) = alerts.due(now=131.0)[1]
    alerts.delivered(firing, {"sink": "t", "channel": "C1", "ts": "1.1"})
    alerts.apply(drift(partition=0, status="resolved"), at=200.0)
    assert alerts.due(now=400.0)[1] == []  # partition 1 still fires: nothing changes
    alerts.apply(drift(partition=1, status="resolved"), at=410.0)
    assert alerts.due(now=450.0)[1] == []  # quiet, but not for the hold yet
    (resolved,) = alerts.due(now=471.0)[1]
    assert resolved.kind == "resolved" and resolved.root == firing.key
    assert alerts.thread(resolved) == {"sink": "t", "channel": "C1", "ts": "1.1"}
    assert alerts.members(resolved)[0].state == "resolved"


def test_a_partition_refiring_within_the_hold_keeps_the_episode() -> None:
    alerts = book()
    alerts.apply(drift(partition=0), at=100.0)
    (firing,) = alerts.due(now=131.0)[1]
    alerts.apply(drift(partition=0, status="resolved"), at=150.0)
    alerts.apply(drift(partition=2), at=170.0)
    assert alerts.due(now=1000.0)[1] == []
    alert = alerts.members(firing)[0]
    assert alert.episode == 1 and alert.state == "firing" and alert.partitions == "1/4"


def test_a_blip_resolved_within_its_group_window_wakes_nobody() -> None:
    alerts = book()
    alerts.apply(drift(), at=100.0)
    alerts.apply(drift(status="resolved"), at=110.0)
    records, notifications = alerts.due(now=131.0)
    assert notifications == []
    assert records[-1]["state"] == "resolved"


def test_a_silence_holds_the_message_back_until_it_ends() -> None:
    silences = Silences()
    silences.add(Silence("s1", parse_matchers("kind=covariate"), 0.0, 500.0))
    alerts = book(silences=silences)
    alerts.apply(drift(), at=100.0)
    records, notifications = alerts.due(now=131.0)
    assert notifications == [] and "silenced by s1" in records[-1]["change"]
    assert alerts.due(now=499.0)[1] == []
    (late,) = alerts.due(now=501.0)[1]
    assert late.kind == "firing"


def test_a_long_firing_alert_is_reminded_in_its_thread_each_repeat_interval() -> None:
    alerts = book()
    alerts.apply(drift(), at=100.0)
    (firing,) = alerts.due(now=131.0)[1]
    assert alerts.due(now=131.0 + 3599)[1] == []
    (repeat,) = alerts.due(now=131.0 + 3600)[1]
    assert repeat.kind == "repeat" and repeat.root == firing.key
    assert alerts.due(now=131.0 + 3601)[1] == []


def test_a_model_change_after_the_message_is_a_reply_in_its_thread() -> None:
    alerts = book()
    alerts.apply(drift(kind="concept", signal="error", feature=None, detector="adwin"), at=100.0)
    (firing,) = alerts.due(now=131.0)[1]
    alerts.apply(action("fork", "concept:error:-:adwin", 0), at=140.0)
    alerts.apply(action("promote", "concept:error:-:adwin", 0, version=2), at=300.0)
    (update,) = alerts.due(now=301.0)[1]
    assert update.kind == "update" and update.root == firing.key
    assert any("v2" in line for line in update.lines)


def test_guard_notices_and_installs_are_one_shot_alerts_grouped_across_partitions() -> None:
    alerts = book()
    for partition in range(4):
        install = action("install", "promote v7 by ann", partition, version=7)
        alerts.apply(install, at=100.0)
        notice = {
            "type": "notice",
            "notice": "outlier_clipped",
            "feature": "x",
            "index": 1,
            "message": "clipped",
            "detail": {},
            "partition": partition,
        }
        alerts.apply(notice, at=100.0)
    notifications = alerts.due(now=131.0)[1]
    kinds = sorted(alerts.members(n)[0].identity.kind for n in notifications)
    assert kinds == ["model_change", "notice"]
    assert all(alerts.members(n)[0].partitions == "4/4" for n in notifications)
    # The same notice again within the repeat interval: recorded, not sent.
    alerts.apply({**notice, "partition": 0}, at=200.0)
    assert alerts.due(now=300.0)[1] == []


def test_severity_ranks_a_concept_drift_that_hurt_accuracy_above_a_harmless_covariate_one() -> None:
    alerts = book()
    alerts.apply(drift(), at=100.0)
    concept = drift(kind="concept", signal="error", feature=None, detector="adwin")
    concept["reference"], concept["current"] = {"error_rate": 0.05}, {"error_rate": 0.25}
    alerts.apply(concept, at=100.0)
    severities = {a.identity.kind: a.severity for a in alerts.alerts.values()}
    assert severities == {"covariate": "info", "concept": "critical"}


def test_the_book_rebuilt_from_its_records_continues_where_it_was() -> None:
    alerts = book()
    written: list[dict[str, Any]] = []
    for partition in range(3):
        written += alerts.apply(drift(partition=partition), at=100.0, source=(partition, 10))
    records, (firing,) = alerts.due(now=131.0)
    written += records
    # Crash before the sink's answer: the notification is still due after the restart.
    again = book()
    again.restore(written)
    assert [n.key for n in again.outbox] == [firing.key]
    assert again.alerts[firing.alert_ids[0]].partitions == "3/4"
    # Inputs already applied are skipped when the uncommitted records are read again.
    assert again.apply(drift(partition=0, status="resolved"), at=150.0, source=(0, 10)) == []
    delivered = again.delivered(again.outbox[0], {"sink": "t", "channel": "C", "ts": "9"})
    third = book()
    third.restore([*written, delivered])
    assert third.outbox == [] and third.threads[firing.key]["ts"] == "9"


@pytest.mark.parametrize("count", [1, 12, 80])
def test_messages_keep_within_block_kit_limits(count: int) -> None:
    alerts = book()
    for i in range(count):
        alerts.apply(drift(feature=f"feature number {i} " + "x" * 60, statistic=30.0 + i), at=100.0)
    (notification,) = alerts.due(now=200.0)[1]
    message = render(notification, alerts.members(notification), Links("http://g", "http://r"))
    blocks = message.blocks
    assert len(blocks) <= 50
    assert len(blocks[0]["text"]["text"]) <= 150
    for block in blocks:
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= 3000
            assert len(block.get("fields", [])) <= 10
        if block["type"] == "actions":
            assert all(len(e["value"]) <= 2000 for e in block["elements"])
    assert {e["action_id"] for e in blocks[-1]["elements"]} == {
        "silence_1h",
        "rollback",
        "promote_challenger",
    }
