"""What a notification says: Slack Block Kit blocks and the same content as plain text.

A new alert message has a **header** (severity, model, kind), a **section** (what drifted,
for a group one line per alert sorted by severity and effect size), **fields** for the
strongest alert (what drifted, statistic against threshold, reference vs current,
accuracy realized vs estimated, since when, partitions, model version, action taken), a
**context** line (alert id, where it was confirmed, links to Grafana and the runbook) and
**buttons** (Silence 1h, Roll back, Promote challenger). Replies (resolved, still firing,
policy actions) are a section and a context line. Block Kit limits are kept: header
<= 150 characters, section text <= 3000, <= 10 fields, <= 50 blocks, button values <= 2000.

>>> from streamheal.alerts.book import Alert, Notification
>>> from streamheal.alerts.identity import Identity
>>> alert = Alert(Identity("m", "covariate", "feature", "x"), 4, state="firing", episode=1,
...               seen=[0, 1, 2], severity="warning")
>>> message = render(Notification("k1", "firing", [alert.alert_id], 0.0), [alert], Links())
>>> message.blocks[0]["text"]["text"]
':warning: WARNING · m · covariate drift on x'
>>> message.text.splitlines()[0]
'[WARNING] m: covariate drift on x'
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamheal.alerts.book import Alert, Notification

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
VALUE_MAX = 2000
LISTED_MAX = 20  # alerts listed by name in one message; the rest are counted
SILENCE_FOR = "1h"
ACTION_SILENCE = "silence_1h"
ACTION_ROLLBACK = "rollback"
ACTION_PROMOTE = "promote_challenger"
METADATA_EVENT = "streamheal_notification"
_ICON = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


@dataclass(frozen=True)
class Links:
    """Links and names every message carries (from ``alerts.*`` and ``topics.*``)."""

    grafana_url: str = ""
    runbook_url: str = ""
    events_topic: str = "streamheal.events"
    alerts_topic: str = "streamheal.alerts"
    model_kind: str = ""  # e.g. "logistic_regression", shown beside the model name


@dataclass(frozen=True)
class Message:
    """One rendered notification: fallback text, blocks, and Slack message metadata
    (carrying the idempotency key, so a sent message can be found again)."""

    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)


def render(notification: Notification, members: list[Alert], links: Links) -> Message:
    """The message for ``notification`` about ``members`` (in the notification's order)."""
    metadata = {
        "event_type": METADATA_EVENT,
        "event_payload": {
            "key": notification.key,
            "kind": notification.kind,
            "alerts": ",".join(notification.refs)[:VALUE_MAX],
        },
    }
    if notification.kind == "firing":
        blocks, text = _firing(notification, members, links)
    else:
        blocks, text = _reply(notification, members, links)
    return Message(text, blocks[:50], metadata)


# ---------------------------------------------------------------------- new message
def _firing(
    notification: Notification, members: list[Alert], links: Links
) -> tuple[list[dict[str, Any]], str]:
    top = members[0]
    level = max((a.severity for a in members), key=_severity_rank)
    model = top.identity.model + (f" ({links.model_kind})" if links.model_kind else "")
    title = _title(members)
    header = f"{_ICON.get(level, '')} {level.upper()} · {model} · {title}".strip()
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(header, HEADER_MAX), "emoji": True},
        }
    ]
    listing = _listing(members)
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": listing}})
    fields = _fields(top, links)
    blocks.append(
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _cut(f"*{name}*\n{value}", FIELD_MAX)}
                for name, value in fields
            ][:10],
        }
    )
    blocks.append({"type": "context", "elements": [_mrkdwn(_context(top, links))]})
    blocks.append(_buttons(notification, members))
    text_lines = [f"[{level.upper()}] {model}: {title}", _plain(listing)]
    text_lines += [f"  {name}: {_plain(value)}" for name, value in fields]
    text_lines.append("  " + _plain(_context(top, links)))
    return blocks, "\n".join(text_lines)


def _title(members: list[Alert]) -> str:
    top = members[0]
    if len(members) == 1:
        identity = top.identity
        if identity.kind in ("model_change", "notice", "control"):
            return identity.describe()
        return f"{identity.kind} drift on {identity.feature or identity.signal}"
    features = [a.identity.feature for a in members if a.identity.feature]
    kind = top.identity.kind
    if len(features) == len(members):
        return f"{kind} drift on {len(members)} features"
    return f"{len(members)} {kind} alerts"


def _listing(members: list[Alert]) -> str:
    if len(members) == 1:
        alert = members[0]
        since = _clock(alert.started_at)
        return _cut(
            f"*{alert.identity.describe()}* in *{alert.partitions}* partitions since {since}"
            + (f" — {alert.evidence.get('message')}" if _oneshot_message(alert) else ""),
            SECTION_MAX,
        )
    lines = []
    for alert in members[:LISTED_MAX]:
        name = alert.identity.feature or alert.identity.signal
        lines.append(
            f"• *{name}* — {_statistic(alert.evidence or {})} · {alert.partitions} partitions"
            f" · {alert.severity}"
        )
    if len(members) > LISTED_MAX:
        lines.append(f"… and {len(members) - LISTED_MAX} more")
    head = f"{len(members)} alerts started together (sorted by severity and effect size):"
    return _cut("\n".join([head, *lines]), SECTION_MAX)


def _oneshot_message(alert: Alert) -> bool:
    return alert.oneshot and bool((alert.evidence or {}).get("message"))


def _fields(alert: Alert, links: Links) -> list[tuple[str, str]]:
    evidence = alert.evidence or {}
    identity = alert.identity
    detectors = sorted({slot.split("/", 1)[1] for slot in alert.firing}) or [
        evidence.get("detector") or "-"
    ]
    what = f"{identity.kind} / {identity.signal}"
    if identity.feature:
        what += f" / `{identity.feature}`"
    partitions = alert.firing_partitions or alert.seen
    fields = [
        ("What drifted", f"{what} ({', '.join(detectors)})"),
        ("Statistic vs threshold", _statistic(evidence)),
        ("Reference → current", _summaries(evidence)),
        ("Accuracy realized / estimated", _accuracy(evidence)),
        ("Since", _since(alert)),
        ("Partitions", f"{alert.partitions} ({', '.join(map(str, partitions)) or '-'})"),
        ("Model version", _versions(alert)),
        ("Action taken", _actions(alert)),
    ]
    if alert.oneshot:
        fields = [f for f in fields if f[0] in ("Since", "Partitions", "Model version")]
    return fields


def _statistic(evidence: dict[str, Any]) -> str:
    detector = evidence.get("detector") or "-"
    statistic, threshold = evidence.get("statistic"), evidence.get("threshold")
    p_value = evidence.get("p_value")
    times = f" ({evidence['strength']:.3g}× past threshold)" if evidence.get("strength") else ""
    if p_value is not None:
        return f"{detector} {_num(statistic)}, p = {_num(p_value)} < {_num(threshold)}{times}"
    if statistic is None:
        return "-"
    return f"{detector} {_num(statistic)} > {_num(threshold)}{times}"


def _summaries(evidence: dict[str, Any]) -> str:
    reference, current = evidence.get("reference") or {}, evidence.get("current") or {}
    if not reference and not current:
        return "-"
    if "mean" in reference or "mean" in current:
        return f"{_moments(reference)} → {_moments(current)}"
    keys = [k for k in reference if k != "n"][:4] or [k for k in current if k != "n"][:4]
    return ", ".join(f"{k} {_num(reference.get(k))} → {_num(current.get(k))}" for k in keys)


def _moments(summary: dict[str, Any]) -> str:
    if "mean" not in summary:
        return "-"
    return f"mean {_num(summary['mean'])} ± {_num(summary.get('std'))} (n={summary.get('n', '?')})"


def _accuracy(evidence: dict[str, Any]) -> str:
    realized, estimated = evidence.get("realized_accuracy"), evidence.get("estimated_accuracy")
    drop = evidence.get("accuracy_drop")
    text = f"{_num(realized, 3)} / {_num(estimated, 3)}"
    if drop is not None and drop > 0:
        text += f" (down {drop * 100:.1f} pts)"
    return text


def _since(alert: Alert) -> str:
    evidence = alert.evidence or {}
    parts = [_clock(alert.started_at)]
    if evidence.get("started_index") is not None:
        parts.append(
            f"event {evidence['started_index']}, confirmed at {evidence.get('confirmed_index')}"
        )
    return " · ".join(parts)


def _versions(alert: Alert) -> str:
    versions = sorted(
        {e.get("model_version") for e in alert.firing.values() if e.get("model_version")}
        or {(alert.evidence or {}).get("model_version")} - {None}
    )
    return ", ".join(f"v{v}" for v in versions) or "-"


def _actions(alert: Alert) -> str:
    if not alert.actions:
        return "none yet"
    counts: dict[tuple[str, Any], int] = {}
    for action in alert.actions:
        key = (action["action"], action.get("model_version"))
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(
        f"{name} ×{n} (v{version})" if version else f"{name} ×{n}"
        for (name, version), n in counts.items()
    )


def _context(alert: Alert, links: Links) -> str:
    evidence = alert.evidence or {}
    parts = [f"alert `{alert.ref}`"]
    if evidence.get("partition") is not None and evidence.get("offset") is not None:
        parts.append(
            f"confirmed at `{links.events_topic}/{evidence['partition']}@{evidence['offset']}`"
        )
    if alert.first_record:
        first = alert.first_record
        parts.append(f"record `{links.alerts_topic}/{first['partition']}@{first['offset']}`")
    if links.grafana_url:
        parts.append(f"<{links.grafana_url}|Grafana>")
    if links.runbook_url:
        parts.append(f"<{links.runbook_url}|Runbook>")
    return " · ".join(parts)


def _buttons(notification: Notification, members: list[Alert]) -> dict[str, Any]:
    ids = [a.alert_id for a in members]
    matcher = f"alert={ids[0]}" if len(ids) == 1 else f'alert=~"{"|".join(ids)}"'
    silence_value = orjson.dumps({"n": notification.key, "silence": matcher}).decode()
    if len(silence_value) > VALUE_MAX:  # very large groups: silence the kind instead
        kind = members[0].identity.kind
        silence_value = orjson.dumps({"n": notification.key, "silence": f"kind={kind}"}).decode()
    plain = orjson.dumps({"n": notification.key}).decode()
    return {
        "type": "actions",
        "block_id": "streamheal_actions",
        "elements": [
            _button("Silence 1h", ACTION_SILENCE, silence_value),
            _button(
                "Roll back",
                ACTION_ROLLBACK,
                plain,
                "danger",
                ("Roll back the model?", "Every worker goes back to the previous champion."),
            ),
            _button(
                "Promote challenger",
                ACTION_PROMOTE,
                plain,
                "primary",
                ("Promote the challenger?", "Every worker serves the registry's challenger."),
            ),
        ],
    }


def _button(
    text: str,
    action_id: str,
    value: str,
    style: str | None = None,
    confirm: tuple[str, str] | None = None,
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    }
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = {
            "title": {"type": "plain_text", "text": confirm[0]},
            "text": {"type": "mrkdwn", "text": confirm[1]},
            "confirm": {"type": "plain_text", "text": "Yes"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        }
    return button


# ---------------------------------------------------------------------- replies
def _reply(
    notification: Notification, members: list[Alert], links: Links
) -> tuple[list[dict[str, Any]], str]:
    now = notification.created_at
    if notification.kind == "resolved":
        lines = [
            f":white_check_mark: Resolved: {a.identity.describe()} — fired for "
            f"{_duration(now - (a.started_at or now))}, in {len(a.seen)}/{a.partitions_total} "
            f"partitions at most; realized accuracy "
            f"{_num((a.evidence or {}).get('realized_accuracy'), 3)}"
            for a in members
        ]
    elif notification.kind == "repeat":
        lines = [
            f":repeat: Still firing: {a.identity.describe()} — for "
            f"{_duration(now - (a.started_at or now))}, now in {a.partitions} partitions"
            for a in members
        ]
    else:
        lines = [f":hammer_and_wrench: {line}" for line in notification.lines]
    text = _cut("\n".join(lines), SECTION_MAX)
    refs = ", ".join(f"`{r}`" for r in notification.refs)
    context = f"alerts {refs}" + (f" · <{links.grafana_url}|Grafana>" if links.grafana_url else "")
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "context", "elements": [_mrkdwn(_cut(context, SECTION_MAX))]},
    ]
    return blocks, _plain(text) + "\n  " + _plain(context)


def resolution_blocks(blocks: list[dict[str, Any]], outcome: str) -> list[dict[str, Any]]:
    """A posted message's blocks after a button did its work: the buttons give way to a
    context line saying what happened (``chat.update``)."""
    kept = [b for b in blocks if b.get("type") != "actions"]
    return [*kept, {"type": "context", "elements": [_mrkdwn(_cut(outcome, SECTION_MAX))]}]


# ---------------------------------------------------------------------- helpers
def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _severity_rank(name: str) -> int:
    return ("info", "warning", "critical").index(name) if name in _ICON else -1


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _clock(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str) -> str:
    """mrkdwn to plain text for the console and notification previews."""
    for mark in ("*", "`"):
        text = text.replace(mark, "")
    return text
