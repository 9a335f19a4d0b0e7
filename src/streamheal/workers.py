"""``streamheal run --workers N``: N worker processes on one machine, one consumer group.

One Python process uses one core, so scaling out on a machine means processes. Each child
is a plain ``streamheal run`` with its own ``worker.id`` (``<id or hostname>-<i>``: its
transactional id and static group membership) and, when metrics are served, its own port
(``metrics.port + i``). SIGINT/SIGTERM are passed on to every child; the supervisor exits
with the first non-zero exit code of a child (0 when all stopped cleanly). A child that
stops unasked (it crashed, was killed, or gave up) stops the others too (SIGTERM: each
commits and checkpoints) and the supervisor exits with that child's code: a dead child is
not restarted here, that is the job of systemd, Kubernetes or docker-compose, which only
see the exit code if the supervisor exits.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from streamheal.config import Config, ConfigError

log = logging.getLogger("streamheal.workers")

MAX_WORKERS = 64  # processes on one machine; more partitions want more machines


def child_environment(config: Config, index: int) -> dict[str, str]:
    """The environment overrides that make child ``index`` a distinct worker."""
    base = config.worker.id or socket.gethostname()
    env = {"STREAMHEAL_WORKER__ID": f"{base}-{index}"}
    metrics = getattr(config, "metrics", None)
    port = getattr(metrics, "port", 0) if metrics is not None else 0
    if port:
        env["STREAMHEAL_METRICS__PORT"] = str(port + index)
    if index > 0:  # one embedded Slack notifier is enough (more would fence each other)
        env["STREAMHEAL_ALERTS__EMBEDDED_NOTIFIER"] = "false"
    return env


def run_workers(count: int, config: Config, config_args: Sequence[str]) -> int:
    """Start ``count`` workers, forward stop signals, return the first failure's code."""
    port = config.metrics.port
    if port and port + count - 1 > 65535:
        raise ConfigError(
            f"metrics.port ({port}): {count} workers serve metrics on {port}..{port + count - 1}, "
            "past the last TCP port (65535); choose a lower port"
        )
    children: list[subprocess.Popen] = []
    for index in range(count):
        env = {**os.environ, **child_environment(config, index)}
        command = [sys.executable, "-m", "streamheal.cli", "run", *config_args]
        children.append(subprocess.Popen(command, env=env))
        log.info("worker %s started (pid %d)", env["STREAMHEAL_WORKER__ID"], children[-1].pid)

    forwarded: set[int] = set()

    stopping_since: list[float] = []
    # A child gets this long to finish its batch and commit once asked to stop; then it is
    # killed (its open transaction aborts; its partitions' next owner restores them).
    grace = config.worker.transaction_timeout_seconds + 30

    def forward(signum: int, _frame: object = None) -> None:
        forwarded.add(signum)
        stopping_since.append(time.monotonic())
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)
                # A stopped child (SIGSTOP, a debugger) would hold the signal pending
                # forever: let it run, so it can stop cleanly.
                child.send_signal(signal.SIGCONT)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    first_failure = 0
    running = list(children)
    while running:
        for child in list(running):
            code = child.poll()
            if code is None:
                continue
            running.remove(child)
            if code < 0 and -code not in forwarded:
                code = 128 - code  # killed by signal N: the shell's 128 + N, e.g. 137
            if -code in forwarded:
                # Stopped by the signal passed on to it, before its own handler was in place
                # (still starting): it stopped as asked, nothing was in flight.
                code = 0
            if code != 0 and not first_failure:
                first_failure = code
                log.error("worker pid %d exited with %d", child.pid, code)
            if not forwarded and running:
                # Stopped unasked: the set is no longer what was started. The others stop
                # cleanly and the supervisor exits, so whatever restarts it sees the code.
                log.error("worker pid %d stopped unasked: stopping the others", child.pid)
                forward(signal.SIGTERM)
        if stopping_since and running and time.monotonic() - stopping_since[0] > grace:
            for child in running:
                log.error("worker pid %d still running %.0fs after stop: killed", child.pid, grace)
                child.kill()
                child.wait()
            first_failure = first_failure or 128 + signal.SIGKILL
            running = []
        time.sleep(0.2)
    return first_failure
