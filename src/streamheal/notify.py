"""``streamheal notify`` and ``streamheal silence``: the commands around the notifier.

``notify`` runs one :class:`~streamheal.alerts.notifier.Notifier` until SIGINT/SIGTERM
(restarting it from the alerts topic after a failure), serves its metrics on
``alerts.notifier_port`` and, with ``--interactive-port``, Slack's button clicks.

``silence add|list|expire`` writes and reads silences on the control topic.
"""

from __future__ import annotations

import getpass
import logging
import os
import signal
import sys
import threading
import time

from streamheal.alerts.control import publish_expiry, publish_silence, read_silences
from streamheal.alerts.interactive import ClickActions, InteractiveEndpoint
from streamheal.alerts.notifier import Notifier, NotifierError, run_until_stopped
from streamheal.alerts.silences import (
    SilenceError,
    Silences,
    describe_window,
    new_silence,
    parse_duration,
)
from streamheal.alerts.slack import SIGNING_SECRET_ENV, SlackWebSink, sink_from_env
from streamheal.config import Config, ConfigError
from streamheal.kafka.connect import BrokerUnavailable, wait_for_cluster
from streamheal.metrics import MetricsServer, NotifierMetrics

log = logging.getLogger("streamheal.notify")

EXIT_UNAVAILABLE = 69


def run_notify(config: Config, interactive_port: int | None = None) -> int:
    """The ``notify`` command: 0 after SIGINT/SIGTERM, 69 without a broker, 1 if fenced."""
    sink = sink_from_env()  # a token without a channel is a ConfigError (exit 78)
    secret = os.environ.get(SIGNING_SECRET_ENV, "")
    if interactive_port is not None and not secret:
        raise ConfigError(f"--interactive-port needs {SIGNING_SECRET_ENV} in the environment")
    try:
        wait_for_cluster(config)
    except BrokerUnavailable as err:
        print(f"streamheal: {err}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    metrics = NotifierMetrics()
    silences = Silences.from_config(config.alerts.silences)
    current: list[Notifier] = []
    stopped = threading.Event()

    def stop(*_: object) -> None:
        stopped.set()
        for notifier in current:
            notifier.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    cfg = config.alerts
    server = MetricsServer(
        metrics.registry, cfg.notifier_address, cfg.notifier_port, ready=lambda: bool(current)
    )
    try:
        port = server.start()
        print(f"notify: metrics on http://127.0.0.1:{port}/metrics", flush=True)
    except OSError as err:  # a side channel: notifications matter more than its metrics
        log.error("notifier metrics not served on port %d: %s", cfg.notifier_port, err)
    endpoint = None
    if interactive_port is not None:
        endpoint = InteractiveEndpoint(
            ClickActions(config, silences),
            secret,
            sink if isinstance(sink, SlackWebSink) else None,
            metrics,
            cfg.notifier_address,
            interactive_port,
        )
        port = endpoint.start()
        print(f"notify: Slack interactivity endpoint on port {port}", flush=True)
    print(f"notify: {config.topics.alerts} -> {sink.name}", flush=True)

    def started(notifier: Notifier) -> None:
        current[:] = [notifier]
        if stopped.is_set():
            notifier.stop()

    try:
        run_until_stopped(
            lambda: Notifier(config, sink=sink, metrics=metrics, silences=silences),
            stopped,
            started,
        )
    except NotifierError as err:
        print(f"streamheal notify: {err}", file=sys.stderr)
        return 1
    finally:
        if endpoint is not None:
            endpoint.close()
        server.close()
    return 0


def silence_command(config: Config, verb: str, **options: str | None) -> int:
    """``silence add MATCHER --for D`` / ``list`` / ``expire ID``."""
    try:
        if verb == "add":
            silence = new_silence(
                options["matcher"] or "",
                parse_duration(options["duration"] or ""),
                by=options.get("by") or getpass.getuser(),
                comment=options.get("comment") or "",
            )
            publish_silence(config, silence)
            print(f"silence {silence.id} {silence.matcher_text} {describe_window(silence)}")
        elif verb == "list":
            now = time.time()
            current = read_silences(config).current(now)
            for silence in sorted(current, key=lambda s: s.ends_at):
                who = f" by {silence.by}" if silence.by else ""
                why = f" ({silence.comment})" if silence.comment else ""
                print(f"{silence.id}  {silence.matcher_text}  {describe_window(silence)}{who}{why}")
            if not current:
                print("no silences")
        else:
            publish_expiry(config, options["id"] or "", by=getpass.getuser())
            print(f"silence {options['id']} expired")
    except SilenceError as err:
        print(f"streamheal silence: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"streamheal silence: {err}", file=sys.stderr)
        return 1
    return 0
