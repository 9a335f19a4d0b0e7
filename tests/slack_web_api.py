"""A local HTTP server that answers like Slack's Web API, as slack_sdk's own tests do.

It speaks ``chat.postMessage``, ``chat.update``, ``conversations.history``,
``conversations.replies`` (with message metadata) and incoming webhooks (``/hooks/...``),
checks the bot token, and can be switched to answer 503 (Slack down) or 429 with
``Retry-After`` (rate limited) to see slack_sdk's retry handlers and the notifier cope.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

TOKEN = "xoxb-streamheal-test"
CHANNEL = "C0STREAM"


@dataclass
class SlackWebApi:
    """State and switches of the fake; read it from the test thread (under ``lock``)."""

    down: bool = False  # every Web API call answers 503
    rate_limited: int = 0  # the next N calls answer 429 with Retry-After
    retry_after: int = 1
    messages: list[dict[str, Any]] = field(default_factory=list)  # accepted posts
    updates: list[dict[str, Any]] = field(default_factory=list)
    webhook: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, int]] = field(default_factory=list)  # (method, HTTP status)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/T000/B000/secret"

    def env(self) -> dict[str, str]:
        return {"SLACK_BOT_TOKEN": TOKEN, "SLACK_CHANNEL": CHANNEL, "SLACK_API_URL": self.base_url}

    def posted(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def top_level(self) -> list[dict[str, Any]]:
        return [m for m in self.posted() if not m.get("thread_ts")]

    # ------------------------------------------------------------------ answers
    def answer(self, method: str, args: dict[str, Any], token: str) -> tuple[int, dict, dict]:
        with self.lock:
            if self.down:
                return self._log(method, 503, {"ok": False, "error": "service_unavailable"})
            if self.rate_limited > 0:
                self.rate_limited -= 1
                return self._log(
                    method,
                    429,
                    {"ok": False, "error": "ratelimited"},
                    {"Retry-After": str(self.retry_after)},
                )
            if token != TOKEN:
                return self._log(method, 200, {"ok": False, "error": "invalid_auth"})
            handler = getattr(self, "_" + method.replace(".", "_"), None)
            if handler is None:
                return self._log(method, 200, {"ok": False, "error": "unknown_method"})
            return self._log(method, 200, handler(args))

    def _log(self, method: str, status: int, body: dict, headers: dict | None = None):
        self.calls.append((method, status))
        return status, body, headers or {}

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        ts = f"{time.time():.6f}"
        while any(m["ts"] == ts for m in self.messages):  # unique, as Slack's are
            ts = f"{float(ts) + 0.000001:.6f}"
        message = {
            "ts": ts,
            "channel": args.get("channel"),
            "text": args.get("text"),
            "blocks": _json_arg(args.get("blocks")) or [],
            "thread_ts": args.get("thread_ts"),
            "metadata": _json_arg(args.get("metadata")),
        }
        self.messages.append(message)
        return {"ok": True, "channel": CHANNEL, "ts": ts, "message": message}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        update = {
            "channel": args.get("channel"),
            "ts": args.get("ts"),
            "text": args.get("text"),
            "blocks": _json_arg(args.get("blocks")) or [],
        }
        self.updates.append(update)
        return {"ok": True, "channel": update["channel"], "ts": update["ts"]}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        oldest = float(args.get("oldest") or 0)
        found = [m for m in self.messages if not m["thread_ts"] and float(m["ts"]) >= oldest]
        return {"ok": True, "messages": [self._shown(m, args) for m in reversed(found)]}

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        root = args.get("ts")
        found = [m for m in self.messages if m["ts"] == root or m["thread_ts"] == root]
        return {"ok": True, "messages": [self._shown(m, args) for m in found]}

    @staticmethod
    def _shown(message: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in message.items() if k != "metadata"}
        if str(args.get("include_all_metadata")).lower() in ("1", "true") and message["metadata"]:
            shown["metadata"] = message["metadata"]
        return shown


def _json_arg(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class _Handler(BaseHTTPRequestHandler):
    api: SlackWebApi
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self._api(url.path, {k: v[0] for k, v in parse_qs(url.query).items()})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path.startswith("/hooks/"):
            self._webhook(body)
            return
        if "json" in (self.headers.get("Content-Type") or ""):
            args = json.loads(body or b"{}")
        else:
            args = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        args.update({k: v[0] for k, v in parse_qs(url.query).items()})
        self._api(url.path, args)

    def _api(self, path: str, args: dict[str, Any]) -> None:
        method = path.removeprefix("/api/")
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        status, body, headers = self.api.answer(method, args, token)
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _webhook(self, body: bytes) -> None:
        api = self.api
        with api.lock:
            if api.down:
                api.calls.append(("webhook", 503))
                self._send(503, b"service_unavailable", "text/plain")
                return
            api.webhook.append(json.loads(body))
            api.calls.append(("webhook", 200))
        self._send(200, b"ok", "text/plain")

    def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def slack_web_api() -> Iterator[SlackWebApi]:
    """A running fake on a free port, shut down on exit."""
    api = SlackWebApi()
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    api.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
