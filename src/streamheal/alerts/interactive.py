"""Acting from Slack: the buttons of an alert message, behind a verified HTTP endpoint.

``streamheal notify --interactive-port P`` serves Slack's interactivity Request URL (any
path, e.g. ``https://ops.example.com/slack/actions``). Each request is checked with
slack_sdk's :class:`~slack_sdk.signature.SignatureVerifier` (HMAC-SHA256 over
``v0:timestamp:body`` with ``SLACK_SIGNING_SECRET``, timestamps more than 5 minutes off
refused against replay); unsigned, badly signed and stale requests get 401 and are counted
(``streamheal_interactive_requests_total{outcome="refused"}``).

A verified click is answered at once (Slack wants an answer within 3 s) and then carried
out on a worker thread:

- **Silence 1h**: a silence of the message's alerts on the control topic;
- **Roll back**: the registry's champion goes back to the previous version and a
  ``rollback`` command on the control topic tells every running worker, exactly as
  ``streamheal registry rollback`` does;
- **Promote challenger**: the registry version under the ``challenger`` alias is promoted
  and announced the same way (the challenger a worker trains in memory after a fork is
  promoted by the policy itself; this button promotes one someone registered).

Then the message is updated (``chat.update``): its buttons give way to a line such as
"Rolled back to v7 by @ann".
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import orjson
from slack_sdk.signature import SignatureVerifier

from streamheal.alerts.blocks import (
    ACTION_PROMOTE,
    ACTION_ROLLBACK,
    ACTION_SILENCE,
    Message,
    resolution_blocks,
)
from streamheal.alerts.control import publish_silence
from streamheal.alerts.silences import SilenceError, Silences, describe_window, new_silence
from streamheal.alerts.sink import DeliveryFailed, Sink
from streamheal.config import Config
from streamheal.errors import StreamhealError
from streamheal.kafka import control
from streamheal.metrics import NotifierMetrics
from streamheal.registry import CHAMPION, RegistryError, open_registry

log = logging.getLogger("streamheal.interactive")

CHALLENGER = "challenger"  # the registry alias "Promote challenger" promotes
MAX_BODY_BYTES = 64 * 1024
SILENCE_SECONDS = 3600.0
QUEUE_SIZE = 100


class ClickError(StreamhealError, RuntimeError):
    """A click that could not be carried out (the message says why)."""


class ClickActions:
    """What each button does. Publishing and the registry are injectable for tests.

    Parameters
    ----------
    config
        Kafka, topics and registry settings.
    silences
        The running notifier's silences: a new one applies there at once (it also goes
        to the control topic for every other reader).
    """

    def __init__(
        self,
        config: Config,
        silences: Silences | None = None,
        publish_command: Callable[..., None] = control.publish,
    ) -> None:
        self.config = config
        self.silences = silences
        self._publish_command = publish_command

    def perform(self, action_id: str, value: str, who: str) -> str:
        """Carry out one click; return what to show in place of the buttons."""
        if action_id == ACTION_SILENCE:
            return self._silence(value, who)
        if action_id == ACTION_ROLLBACK:
            return self._rollback(value, who)
        if action_id == ACTION_PROMOTE:
            return self._promote(value, who)
        raise ClickError(f"unknown action {action_id!r}")

    def _silence(self, value: str, who: str) -> str:
        try:
            fields = orjson.loads(value)
            silence = new_silence(
                str(fields["silence"]),
                SILENCE_SECONDS,
                by=f"slack:{who}",
                comment=f"Silence 1h from Slack (notification {fields.get('n', '?')})",
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, SilenceError) as err:
            raise ClickError(f"bad silence button value: {err}") from None
        publish_silence(self.config, silence)
        if self.silences is not None:
            self.silences.add(silence)
        return (
            f":no_bell: Silenced for 1h by @{who} (silence `{silence.id}`, "
            f"{describe_window(silence)})"
        )

    def _rollback(self, value: str, who: str) -> str:
        registry = open_registry(self.config.registry)
        try:
            state = registry.rollback()
        except RegistryError as err:
            raise ClickError(f"rollback refused by the registry: {err}") from None
        version = state.aliases[CHAMPION]
        self._publish_command(
            self.config, "rollback", version, _reason(value, "rolled back"), f"slack:{who}"
        )
        return f":leftwards_arrow_with_hook: Rolled back to v{version} by @{who}"

    def _promote(self, value: str, who: str) -> str:
        registry = open_registry(self.config.registry)
        version = registry.alias(CHALLENGER)
        if version is None:
            raise ClickError(f"no challenger to promote: the registry has no {CHALLENGER!r} alias")
        try:
            registry.load_bytes(version)  # refuse a corrupt model before announcing it
            registry.promote(version)
        except RegistryError as err:
            raise ClickError(f"promotion refused by the registry: {err}") from None
        self._publish_command(
            self.config, "promote", version, _reason(value, "promoted"), f"slack:{who}"
        )
        return f":arrow_up: Promoted challenger v{version} by @{who}"


def _reason(value: str, verb: str) -> str:
    try:
        key = orjson.loads(value).get("n", "?")
    except (orjson.JSONDecodeError, AttributeError):
        key = "?"
    return f"{verb} from Slack (notification {key})"


class InteractiveEndpoint:
    """The HTTP endpoint Slack posts button clicks to (see the module docstring).

    Parameters
    ----------
    actions
        What the buttons do.
    signing_secret
        ``SLACK_SIGNING_SECRET``.
    sink
        Updates the clicked message (``chat.update``); None leaves it as it is.
    metrics
        Counts accepted, refused and failed requests.
    verifier
        A ready verifier (tests pass one with their own clock).
    """

    def __init__(
        self,
        actions: ClickActions,
        signing_secret: str,
        sink: Sink | None,
        metrics: NotifierMetrics,
        address: str = "0.0.0.0",
        port: int = 0,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        self.actions = actions
        self.sink = sink
        self.metrics = metrics
        self.verifier = verifier or SignatureVerifier(signing_secret)
        self.address, self.port = address, port
        self._work: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._server: ThreadingHTTPServer | None = None
        self._worker = threading.Thread(target=self._carry_out, name="slack-clicks", daemon=True)

    def start(self) -> int:
        endpoint = self

        class Handler(_Handler):
            owner = endpoint

        self._server = ThreadingHTTPServer((self.address, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        threading.Thread(
            target=self._server.serve_forever, name=f"slack-endpoint-{self.port}", daemon=True
        ).start()
        self._worker.start()
        log.info("slack interactivity endpoint on port %d", self.port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._worker.is_alive():
            self._work.put(None)
            self._worker.join(30)

    # ------------------------------------------------------------------ requests
    def accept(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Check one request; queue a verified click; return (HTTP status, body)."""
        try:
            valid = self.verifier.is_valid(
                body,
                headers.get("x-slack-request-timestamp"),
                headers.get("x-slack-signature"),
            )
        except ValueError:  # a timestamp that is not a number
            valid = False
        if not valid:
            self.metrics.refused_click("missing, bad or stale signature")
            return 401, b"invalid signature\n"
        try:
            payload = orjson.loads(parse_qs(body.decode())["payload"][0])
        except (KeyError, IndexError, UnicodeDecodeError, orjson.JSONDecodeError):
            self.metrics.clicks.labels("failed").inc()
            return 400, b"expected a form with a JSON payload\n"
        if payload.get("type") != "block_actions" or not payload.get("actions"):
            return 200, b""  # something else Slack sends (e.g. a view); nothing to do
        try:
            self._work.put_nowait(payload)
        except queue.Full:
            self.metrics.clicks.labels("failed").inc()
            return 503, b"busy\n"
        return 200, b""

    def _carry_out(self) -> None:
        while (payload := self._work.get()) is not None:
            action = payload["actions"][0]
            user = payload.get("user") or {}
            who = str(user.get("username") or user.get("name") or user.get("id") or "someone")
            try:
                outcome = self.actions.perform(
                    str(action.get("action_id")), str(action.get("value", "")), who[:80]
                )
                self.metrics.clicks.labels("accepted").inc()
            except (ClickError, RuntimeError, OSError) as err:
                outcome = f":x: {action.get('text', {}).get('text', 'Action')} failed: {err}"
                self.metrics.clicks.labels("failed").inc()
            log.warning("slack button %s by %s: %s", action.get("action_id"), who, outcome)
            self._update(payload, outcome)

    def _update(self, payload: dict[str, Any], outcome: str) -> None:
        message = payload.get("message") or {}
        channel = (payload.get("channel") or {}).get("id")
        if self.sink is None or not channel or not message.get("ts"):
            return
        blocks = resolution_blocks(message.get("blocks") or [], outcome)
        text = f"{message.get('text', '')}\n{outcome}".strip()
        try:
            self.sink.update(channel, message["ts"], Message(text, blocks))
        except DeliveryFailed as err:
            log.warning("could not update the clicked message: %s", err)


class _Handler(BaseHTTPRequestHandler):
    owner: InteractiveEndpoint
    server_version = "streamheal"

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._answer(413, b"too large\n")
            return
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._answer(*self.owner.accept(body, headers))

    def do_GET(self) -> None:
        self._answer(405, b"POST Slack interactivity payloads here\n")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("slack endpoint: " + format, *args)
