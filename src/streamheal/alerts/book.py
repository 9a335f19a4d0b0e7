"""Alert grouping and tuning: alerts-topic records in, alert state changes and notifications out.

The :class:`AlertBook` is pure (no I/O, no clock of its own), so the notifier, the demo and
the tests drive the same code. It reads what the workers write on the alerts topic:

- ``drift`` records (``firing`` / ``resolved``, one per partition and detector) become
  :class:`Alert` objects keyed by :class:`~streamheal.alerts.identity.Identity` — the
  partition and the detector are attributes, so one drift in 3 of 4 partitions is one
  alert that says "3/4 partitions";
- ``action`` records join the alert that caused them (their ``cause`` is its drift key);
  model changes without a drift cause, guard ``notice`` records and ``control_refused``
  records become one-shot alerts.

Each alert moves **pending → firing → resolved**:

- *pending* from its first firing record, for ``alerts.group_window_seconds``: every
  alert of the same kind that starts within that window joins the same group, and the
  group becomes **one** notification (12 features drifting together are one message,
  sorted by effect size). An alert that is quiet again when its window closes (every
  partition resolved) never wakes anyone;
- *firing* once its group closes; a firing alert is reminded in its thread every
  ``alerts.repeat_interval_seconds``; actions the policy takes later are posted there;
- *resolved* once no partition has fired for ``alerts.resolve_hold_seconds`` (hysteresis
  across partitions: one partition clearing while another fires changes nothing).

Silences (:mod:`streamheal.alerts.silences`) hold notifications back, never state changes.

Every state change is returned as an ``alert`` record for the alerts topic (the record of
truth), and every notification as a ``notification`` record before it is sent; a restarted
notifier rebuilds the book from those records (:meth:`AlertBook.restore`).

Examples
--------
>>> from streamheal.config import AlertsConfig
>>> book = AlertBook(AlertsConfig(group_window_seconds=30), "m", partitions=4)
>>> drift = {"type": "drift", "status": "firing", "kind": "covariate", "signal": "feature",
...          "feature": "x", "detector": "cusum", "statistic": 9.0, "threshold": 3.0}
>>> for partition in range(3):
...     _ = book.apply({**drift, "partition": partition}, at=100.0 + partition)
>>> _, notifications = book.due(now=131.0)
>>> [(n.kind, len(n.alert_ids)) for n in notifications]
[('firing', 1)]
>>> alert = book.members(notifications[0])[0]
>>> alert.state, alert.partitions
('firing', '3/4')
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from streamheal.alerts.identity import Identity, parse_drift_key
from streamheal.alerts.severity import accuracy_drop, rank, severity, strength
from streamheal.alerts.silences import Silence, Silences, is_silence_record
from streamheal.config import AlertsConfig

AlertState = Literal["inactive", "pending", "firing", "resolved"]
NotificationKind = Literal["firing", "resolved", "repeat", "update"]
ALERT = "alert"
NOTIFICATION = "notification"
# Model changes worth a reply in the alert's thread when they come after its message.
MODEL_CHANGES = ("reset", "fork", "promote", "discard", "rollback", "install", "restore")
MAX_ACTIONS = 20
MAX_SUMMARY_KEYS = 20
_EVIDENCE_KEYS = (
    "detector",
    "statistic",
    "p_value",
    "threshold",
    "started_index",
    "confirmed_index",
    "offset",
    "partition",
    "model_version",
    "estimated_accuracy",
    "realized_accuracy",
)


@dataclass
class Alert:
    """One alert (an identity) and its current episode; JSON round-trips via
    :meth:`snapshot` / :meth:`from_snapshot`."""

    identity: Identity
    partitions_total: int
    oneshot: bool = False
    episode: int = 0
    state: AlertState = "inactive"
    seq: int = 0  # state changes so far (over all episodes)
    # "partition/detector" -> compact evidence of the records firing right now
    firing: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[int] = field(default_factory=list)  # partitions that fired this episode
    evidence: dict[str, Any] | None = None  # the strongest record of the episode
    severity: str = "info"
    started_at: float | None = None
    changed_at: float = 0.0
    quiet_since: float | None = None
    group: str | None = None
    group_closes_at: float | None = None
    root: str | None = None  # key of the notification that announced this episode
    notified_at: float | None = None  # last announcement or reminder of this episode
    last_announced_at: float | None = None  # over episodes (one-shot repeat suppression)
    resolved_sent: bool = False
    suppressed: bool = False
    silenced_by: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    updates: list[str] = field(default_factory=list)  # actions not yet posted in the thread
    first_record: dict[str, Any] | None = None  # alerts-topic partition/offset

    @property
    def alert_id(self) -> str:
        return self.identity.alert_id

    @property
    def ref(self) -> str:
        """``<alert id>#<episode>``: names one episode in messages and records."""
        return f"{self.alert_id}#{self.episode}"

    @property
    def firing_partitions(self) -> list[int]:
        return sorted({int(slot.split("/")[0]) for slot in self.firing if slot[0] != "-"})

    @property
    def partitions(self) -> str:
        """``"3/4"``: partitions firing now (or that fired, once quiet) of all."""
        shown = self.firing_partitions or self.seen
        return f"{len(shown)}/{self.partitions_total}"

    @property
    def strength(self) -> float:
        return (self.evidence or {}).get("strength", 1.0)

    def labels(self) -> dict[str, str]:
        return {**self.identity.labels(), "severity": self.severity, "alert": self.alert_id}

    def snapshot(self) -> dict[str, Any]:
        state = asdict(self)
        state["identity"] = self.identity.to_record()
        state["alert_id"] = self.alert_id
        state["partitions"] = self.partitions
        return state

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> Alert:
        fields = {k: v for k, v in state.items() if k in cls.__dataclass_fields__}
        fields["identity"] = Identity.from_record(state["identity"])
        return cls(**fields)


@dataclass
class Notification:
    """One message to send: a new alert message (``firing``, a group of alerts of one
    kind) or a reply in an announced alert's thread (``resolved``, ``repeat``,
    ``update``). ``key`` is its idempotency key: one per alert state change."""

    key: str
    kind: NotificationKind
    alert_ids: list[str]
    created_at: float
    root: str | None = None  # replies: the key of the message they answer
    lines: list[str] = field(default_factory=list)  # update: what the policy did
    refs: list[str] = field(default_factory=list)  # <alert id>#<episode> of the members

    def to_record(self) -> dict[str, Any]:
        return {"type": NOTIFICATION, "status": "due", **asdict(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Notification:
        return cls(**{k: v for k, v in record.items() if k in cls.__dataclass_fields__})


@dataclass
class _Group:
    key: str
    kind: str
    closes_at: float
    members: list[str] = field(default_factory=list)


class AlertBook:
    """Grouping, tuning and silencing of alerts-topic records (see the module docstring).

    Parameters
    ----------
    cfg
        ``alerts.*``: windows, hold, repeat interval, severity thresholds.
    model
        The model name in every identity (``registry.model_name``).
    partitions
        Partitions of the events topic: the denominator of "3/4 partitions".
    silences
        The silences in force (config and control topic); shared with whoever adds to it.
    """

    def __init__(
        self,
        cfg: AlertsConfig,
        model: str,
        partitions: int,
        silences: Silences | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.partitions = partitions
        self.silences = silences if silences is not None else Silences()
        self.alerts: dict[str, Alert] = {}
        self.outbox: list[Notification] = []  # announced, not yet delivered, in order
        self.threads: dict[str, dict[str, Any]] = {}  # firing notification key -> receipt
        self.applied: dict[int, int] = {}  # alerts-topic partition -> last offset applied
        self._groups: dict[str, _Group] = {}

    # ------------------------------------------------------------------ input
    def apply(
        self, record: dict[str, Any], at: float, source: tuple[int, int] | None = None
    ) -> list[dict[str, Any]]:
        """Take one alerts-topic record written at ``at`` (seconds) from ``source``
        (alerts-topic partition, offset); return the ``alert`` records of what changed.
        A record at or below an offset already applied (before a restart) changes nothing."""
        if source is not None:
            partition, offset = source
            if offset <= self.applied.get(partition, -1):
                return []
            self.applied[partition] = offset
        kind = record.get("type")
        if kind == "drift":
            return self._drift(record, at, source)
        if kind == "action":
            return self._action(record, at, source)
        if kind == "notice":
            identity = Identity(
                self.model, "notice", str(record.get("notice")), record.get("feature")
            )
            return self._oneshot(identity, record, at, source)
        if kind == "control_refused":
            preview = str(record.get("record", "")).encode()
            if is_silence_record(preview):
                return []  # a silence, read by workers that predate skipping them: not news
            return self._oneshot(Identity(self.model, "control", "refused"), record, at, source)
        return []

    def _drift(
        self, record: dict[str, Any], at: float, source: tuple[int, int] | None
    ) -> list[dict[str, Any]]:
        identity = Identity(
            self.model, str(record["kind"]), str(record["signal"]), record.get("feature")
        )
        alert = self._alert(identity)
        partition = record.get("partition")
        slot = f"{'-' if partition is None else partition}/{record.get('detector')}"
        if record.get("status") == "firing":
            if slot in alert.firing:
                return []  # a re-delivered record, or a re-declaration after a restart
            if alert.state in ("inactive", "resolved"):
                self._new_episode(alert, at, source)
                change = "pending"
            else:
                change = f"firing in partition {partition} ({record.get('detector')})"
            alert.firing[slot] = self._evidence(record, at)
            if partition is not None and partition not in alert.seen:
                alert.seen = sorted([*alert.seen, int(partition)])
            alert.quiet_since = None
            self._rate(alert)
        else:
            if slot not in alert.firing:
                return []
            del alert.firing[slot]
            if not alert.firing:
                alert.quiet_since = at
            change = f"resolved in partition {partition} ({record.get('detector')})"
        return [self._changed(alert, change, at, source)]

    def _action(
        self, record: dict[str, Any], at: float, source: tuple[int, int] | None
    ) -> list[dict[str, Any]]:
        name = str(record.get("action"))
        alert = self._cause(str(record.get("cause", "")))
        if alert is None or alert.state == "inactive":
            identity = Identity(self.model, "model_change", name)
            return self._oneshot(identity, record, at, source)
        entry = {
            "action": name,
            "partition": record.get("partition"),
            "model_version": record.get("model_version"),
            "message": str(record.get("message", name))[:300],
            "at": at,
        }
        alert.actions = [*alert.actions, entry][-MAX_ACTIONS:]
        if name in MODEL_CHANGES and alert.root is not None:
            where = f"partition {entry['partition']}: " if entry["partition"] is not None else ""
            alert.updates = [*alert.updates, where + entry["message"]][-MAX_ACTIONS:]
        return [
            self._changed(alert, f"action {name} in partition {entry['partition']}", at, source)
        ]

    def _cause(self, cause: str) -> Alert | None:
        """The alert an action's cause names: a drift key, ``after <drift key>`` (rollback),
        or ``warning: ...`` (a fork on the concept detector's warning)."""
        cause = cause.removeprefix("after ")
        if cause.startswith("warning:"):
            identity = Identity(self.model, "concept", "error")
        else:
            parsed = parse_drift_key(cause)
            if parsed is None:
                return None
            identity = Identity(self.model, parsed[0], parsed[1], parsed[2])
        return self.alerts.get(identity.alert_id)

    def _oneshot(
        self,
        identity: Identity,
        record: dict[str, Any],
        at: float,
        source: tuple[int, int] | None,
    ) -> list[dict[str, Any]]:
        alert = self._alert(identity, oneshot=True)
        partition = record.get("partition")
        if alert.state != "pending":
            self._new_episode(alert, at, source)
            last = alert.last_announced_at
            alert.suppressed = last is not None and at - last < self.cfg.repeat_interval_seconds
            alert.evidence = {
                "message": str(record.get("message") or record.get("reason") or "")[:500],
                "model_version": record.get("model_version"),
                "strength": 1.0,
                "at": at,
            }
            alert.severity = severity(identity.kind, 1.0, None, self.cfg, identity.signal)
            change = "pending"
        else:
            change = f"again in partition {partition}"
        if partition is not None and partition not in alert.seen:
            alert.seen = sorted([*alert.seen, int(partition)])
        return [self._changed(alert, change, at, source)]

    # ------------------------------------------------------------------ time
    def due(
        self, now: float, flush_groups: bool = False
    ) -> tuple[list[dict[str, Any]], list[Notification]]:
        """Close the group windows that ended (all of them with ``flush_groups``), resolve,
        remind, post updates; return the ``notification`` records (first) and ``alert``
        records to write, and the new notifications (also appended to :attr:`outbox`)."""
        changes: list[dict[str, Any]] = []
        created: list[Notification] = []
        for group in sorted(self._groups.values(), key=lambda g: (g.closes_at, g.key)):
            if group.closes_at <= now or flush_groups:
                del self._groups[group.key]
                created += self._close(group, now, changes)
        self._resolve(now, changes, created)
        self._announce_unsilenced(now, changes, created)
        self._remind(now, changes, created)
        self._post_updates(now, changes, created)
        records = [n.to_record() for n in created] + changes
        return records, created

    def _close(self, group: _Group, now: float, changes: list) -> list[Notification]:
        announce = []
        for alert_id in group.members:
            alert = self.alerts[alert_id]
            if alert.state != "pending" or alert.group != group.key:
                continue
            alert.group = alert.group_closes_at = None
            if alert.oneshot:
                # A one-shot has no end to announce: it is over once told (or held back).
                alert.state, alert.resolved_sent = "resolved", True
                if alert.suppressed:
                    changes.append(self._changed(alert, "repeat within the interval", now))
                    continue
            elif not alert.firing:
                alert.state = "resolved"
                changes.append(self._changed(alert, "resolved within its group window", now))
                continue
            else:
                alert.state = "firing"
            silence = self._silence(alert, now)
            if silence is not None:
                alert.silenced_by = silence.id
                changes.append(self._changed(alert, f"silenced by {silence.id}", now))
                continue
            announce.append(alert)
        if not announce:
            return []
        return [self._notify("firing", announce, now, changes)]

    def _resolve(self, now: float, changes: list, created: list) -> None:
        by_root: dict[str, list[Alert]] = {}
        for alert in self.alerts.values():
            if alert.state != "firing" or alert.oneshot or alert.quiet_since is None:
                continue
            if now - alert.quiet_since < self.cfg.resolve_hold_seconds:
                continue
            alert.state = "resolved"
            changes.append(self._changed(alert, "resolved", now))
            if alert.root is not None and self._silence(alert, now) is None:
                by_root.setdefault(alert.root, []).append(alert)
        for root, members in by_root.items():
            created.append(self._notify("resolved", members, now, changes, root))

    def _announce_unsilenced(self, now: float, changes: list, created: list) -> None:
        """Firing alerts never announced (their silence ran out): announce them now."""
        by_kind: dict[str, list[Alert]] = {}
        for alert in self.alerts.values():
            unannounced = alert.state == "firing" and alert.root is None and not alert.oneshot
            if unannounced and self._silence(alert, now) is None:
                by_kind.setdefault(alert.identity.kind, []).append(alert)
        for members in by_kind.values():
            created.append(self._notify("firing", members, now, changes))

    def _remind(self, now: float, changes: list, created: list) -> None:
        by_root: dict[str, list[Alert]] = {}
        interval = self.cfg.repeat_interval_seconds
        for alert in self.alerts.values():
            if alert.state != "firing" or alert.root is None or alert.notified_at is None:
                continue
            if now - alert.notified_at >= interval and self._silence(alert, now) is None:
                by_root.setdefault(alert.root, []).append(alert)
        for root, members in by_root.items():
            created.append(self._notify("repeat", members, now, changes, root))

    def _post_updates(self, now: float, changes: list, created: list) -> None:
        by_root: dict[str, list[Alert]] = {}
        for alert in self.alerts.values():
            if alert.updates and alert.root is not None:
                by_root.setdefault(alert.root, []).append(alert)
        for root, members in by_root.items():
            lines = [line for alert in members for line in alert.updates]
            for alert in members:
                alert.updates = []
            created.append(self._notify("update", members, now, changes, root, lines))

    def _notify(
        self,
        kind: NotificationKind,
        members: list[Alert],
        now: float,
        changes: list,
        root: str | None = None,
        lines: list[str] | None = None,
    ) -> Notification:
        members = sorted(members, key=lambda a: (-rank(a.severity), -a.strength, a.alert_id))
        for alert in members:
            alert.seq += 1
        stamp = sorted(f"{a.ref}:{a.seq}" for a in members)
        key = hashlib.sha256(orjson.dumps([kind, stamp, root])).hexdigest()[:20]
        notification = Notification(
            key,
            kind,
            [a.alert_id for a in members],
            now,
            root,
            lines or [],
            [a.ref for a in members],
        )
        for alert in members:
            if kind == "firing":
                alert.root = key
                alert.silenced_by = None
            if kind in ("firing", "repeat"):
                alert.notified_at = alert.last_announced_at = now
            if kind == "resolved":
                alert.resolved_sent = True
            changes.append(self._record(alert, f"{kind} notification {key}", now))
        self.outbox.append(notification)
        return notification

    # ------------------------------------------------------------------ delivery
    def delivered(self, notification: Notification, receipt: dict[str, Any]) -> dict[str, Any]:
        """The sink accepted ``notification``: drop it from the outbox, remember where a new
        message went (its thread takes the replies); return the ``notification`` record."""
        self.outbox = [n for n in self.outbox if n.key != notification.key]
        if notification.kind == "firing":
            self.threads[notification.key] = receipt
        return {
            "type": NOTIFICATION,
            "status": "delivered",
            "key": notification.key,
            "kind": notification.kind,
            "receipt": receipt,
        }

    def thread(self, notification: Notification) -> dict[str, Any] | None:
        """Where a reply goes: the receipt of the message it answers (None if none)."""
        return self.threads.get(notification.root) if notification.root else None

    def members(self, notification: Notification) -> list[Alert]:
        return [self.alerts[i] for i in notification.alert_ids if i in self.alerts]

    # ------------------------------------------------------------------ restore
    def restore(self, records: Iterable[dict[str, Any]]) -> None:
        """Rebuild from the notifier's own records (``alert`` and ``notification``), read
        in order from the alerts topic: the latest state of every alert, open groups, the
        notifications announced but never delivered (the outbox) and message threads."""
        due: dict[str, Notification] = {}
        for record in records:
            if record.get("type") == ALERT:
                alert = Alert.from_snapshot(record["alert"])
                self.alerts[alert.alert_id] = alert
                source = record.get("input")
                if source is not None:
                    partition, offset = int(source[0]), int(source[1])
                    self.applied[partition] = max(self.applied.get(partition, -1), offset)
            elif record.get("type") == NOTIFICATION:
                if record.get("status") == "due":
                    due[record["key"]] = Notification.from_record(record)
                elif record.get("status") == "delivered":
                    due.pop(record["key"], None)
                    if record.get("kind") == "firing":
                        self.threads[record["key"]] = record["receipt"]
        self.outbox = list(due.values())
        self._groups = {}
        for alert in self.alerts.values():
            if alert.state == "pending" and alert.group is not None:
                group = self._groups.setdefault(
                    alert.group,
                    _Group(alert.group, alert.identity.kind, alert.group_closes_at or 0.0),
                )
                group.members.append(alert.alert_id)

    # ------------------------------------------------------------------ helpers
    def counts(self) -> dict[tuple[str, str], int]:
        """Alerts by (state, severity), pending and firing only."""
        out: dict[tuple[str, str], int] = {}
        for alert in self.alerts.values():
            if alert.state in ("pending", "firing"):
                key = (alert.state, alert.severity)
                out[key] = out.get(key, 0) + 1
        return out

    def pending_inputs(self) -> Iterator[Alert]:
        """Alerts whose input records are not settled yet (in a group window, or in an
        undelivered notification)."""
        waiting = {i for n in self.outbox for i in n.alert_ids}
        for alert in self.alerts.values():
            if alert.state == "pending" or alert.alert_id in waiting:
                yield alert

    def _alert(self, identity: Identity, oneshot: bool = False) -> Alert:
        alert = self.alerts.get(identity.alert_id)
        if alert is None:
            alert = self.alerts[identity.alert_id] = Alert(identity, self.partitions, oneshot)
        return alert

    def _new_episode(self, alert: Alert, at: float, source: tuple[int, int] | None) -> None:
        alert.episode += 1
        alert.state = "pending"
        alert.firing, alert.seen, alert.actions, alert.updates = {}, [], [], []
        alert.evidence = None
        alert.started_at, alert.quiet_since = at, None
        alert.root = alert.notified_at = alert.silenced_by = None
        alert.resolved_sent = alert.suppressed = False
        alert.partitions_total = self.partitions
        alert.first_record = (
            None if source is None else {"partition": source[0], "offset": source[1]}
        )
        group = self._open_group(alert.identity.kind, at)
        group.members.append(alert.alert_id)
        alert.group, alert.group_closes_at = group.key, group.closes_at

    def _open_group(self, kind: str, at: float) -> _Group:
        for group in self._groups.values():
            if group.kind == kind and at < group.closes_at:
                return group
        key = f"{kind}@{at:.3f}"
        group = self._groups[key] = _Group(key, kind, at + self.cfg.group_window_seconds)
        return group

    def _evidence(self, record: dict[str, Any], at: float) -> dict[str, Any]:
        evidence = {k: record.get(k) for k in _EVIDENCE_KEYS}
        for side in ("reference", "current"):
            summary = record.get(side) or {}
            evidence[side] = dict(list(summary.items())[:MAX_SUMMARY_KEYS])
        evidence["strength"] = round(strength(record), 3)
        evidence["accuracy_drop"] = accuracy_drop(record)
        evidence["at"] = at
        return evidence

    def _rate(self, alert: Alert) -> None:
        """The episode's strongest evidence, and the severity it gives."""
        for evidence in alert.firing.values():
            if alert.evidence is None or evidence["strength"] > alert.evidence["strength"]:
                alert.evidence = evidence
        drops = [
            e["accuracy_drop"] for e in alert.firing.values() if e["accuracy_drop"] is not None
        ]
        identity = alert.identity
        level = severity(
            identity.kind, alert.strength, max(drops) if drops else None, self.cfg, identity.signal
        )
        if rank(level) > rank(alert.severity) or alert.seq == 0 or alert.state == "pending":
            alert.severity = level

    def _silence(self, alert: Alert, now: float) -> Silence | None:
        return self.silences.match(alert.labels(), now)

    def _changed(
        self, alert: Alert, change: str, at: float, source: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        alert.seq += 1
        return self._record(alert, change, at, source)

    def _record(
        self, alert: Alert, change: str, at: float, source: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        alert.changed_at = at
        return {
            "type": ALERT,
            "alert_id": alert.alert_id,
            "episode": alert.episode,
            "state": alert.state,
            "change": change,
            "severity": alert.severity,
            "partitions": alert.partitions,
            "describe": alert.identity.describe(),
            "input": list(source) if source is not None else None,
            "alert": alert.snapshot(),
        }
