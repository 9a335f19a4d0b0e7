"""A real single-node Apache Kafka 4.x (KRaft, broker+controller) from the Maven Central jars.

No Docker and no tarball: the broker's jars are resolved with ``mvn
dependency:copy-dependencies`` on a throw-away POM into a cache folder outside the
repository (``local_kafka.home``), the storage is formatted with ``StorageTool``,
and ``kafka.Kafka`` runs on 127.0.0.1. ``up`` is idempotent; ``down`` stops exactly
the process recorded in the pid file.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from streamheal.config import LocalKafkaConfig
from streamheal.errors import StreamhealError

# Kafka's server logs through slf4j 1.x; this binding sends it to log4j2 (otherwise: silence).
_SLF4J_BINDING = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.streamheal</groupId>
  <artifactId>kafka-server-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>{b_group}</groupId><artifactId>{b_artifact}</artifactId><version>{b_version}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class LocalKafkaError(StreamhealError, RuntimeError):
    """The local broker could not be prepared, started or stopped."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    log_file: Path


class LocalKafka:
    """Manage one local broker; its files live under ``home`` (jars shared per version)."""

    def __init__(self, cfg: LocalKafkaConfig) -> None:
        self.cfg = cfg
        self.home = Path(cfg.home).expanduser()
        self.libs = self.home / f"kafka-{cfg.version}" / "libs"
        self.node_dir = self.home / f"node-{cfg.port}"
        self.data_dir = self.node_dir / "data"
        self.pid_file = self.node_dir / "broker.pid"
        self.log_file = self.node_dir / "broker.log"
        self.bootstrap = f"127.0.0.1:{cfg.port}"

    # ------------------------------------------------------------------ verbs
    def up(self, timeout: float = 90.0) -> BrokerStatus:
        """Start the broker unless it already runs; return once an AdminClient sees it."""
        if self.status().running:
            self._wait_ready(timeout)
            return self.status()
        for port in (self.cfg.port, self.cfg.controller_port):
            if _port_in_use(port):
                raise LocalKafkaError(
                    f"port {port} is taken by another process (not the broker recorded in "
                    f"{self.pid_file}); stop it or set local_kafka.port / controller_port"
                )
        self.ensure_jars()
        self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format_storage()
        self.node_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [
                    "java",
                    f"-Xmx{self.cfg.heap}",
                    f"-Xms{self.cfg.heap}",
                    "-XX:+UseG1GC",
                    f"-Dlog4j2.configurationFile={self.node_dir / 'log4j2.properties'}",
                    "-cp",
                    f"{self.libs}/*",
                    "kafka.Kafka",
                    str(self.node_dir / "server.properties"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the shell that ran `up`
            )
        self.pid_file.write_text(str(process.pid))
        self._wait_ready(timeout, process)
        return self.status()

    def down(self, purge: bool = False, timeout: float = 30.0) -> None:
        """Stop the recorded broker (SIGTERM, then SIGKILL); ``purge`` deletes its data."""
        pid = self._live_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._live_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self._live_pid() is not None:
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        if purge:
            import shutil

            shutil.rmtree(self.node_dir, ignore_errors=True)

    def status(self) -> BrokerStatus:
        pid = self._live_pid()
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.log_file)

    def ensure_jars(self) -> None:
        """Resolve the broker's jars from Maven Central once; later calls are instant."""
        marker = self.libs / ".complete"
        if marker.exists():
            return
        pom_dir = self.libs.parent
        pom_dir.mkdir(parents=True, exist_ok=True)
        group, artifact, version = _SLF4J_BINDING
        (pom_dir / "pom.xml").write_text(
            _POM.format(
                version=self.cfg.version, b_group=group, b_artifact=artifact, b_version=version
            )
        )
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.libs}",
                "-DincludeScope=runtime",
            ],
            cwd=pom_dir,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise LocalKafkaError(
                f"mvn could not resolve org.apache.kafka:kafka_2.13:{self.cfg.version}:\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        marker.touch()

    # --------------------------------------------------------------- internals
    def _write_config(self) -> None:
        self.node_dir.mkdir(parents=True, exist_ok=True)
        port, cport = self.cfg.port, self.cfg.controller_port
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            # The default 128 MB cleaner buffer can crash a broker with a small heap.
            "log.cleaner.dedupe.buffer.size": "2097152",
        }
        text = "".join(f"{k}={v}\n" for k, v in properties.items())
        (self.node_dir / "server.properties").write_text(text)
        (self.node_dir / "log4j2.properties").write_text(_LOG4J2)

    def _format_storage(self) -> None:
        cluster_id = _cluster_id()
        result = subprocess.run(
            [
                "java",
                "-cp",
                f"{self.libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(self.node_dir / "server.properties"),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise LocalKafkaError(
                f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}"
            )

    def _wait_ready(self, timeout: float, process: subprocess.Popen | None = None) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise LocalKafkaError(
                    f"broker exited with code {process.returncode}; last log lines:\n"
                    + self._log_tail()
                )
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:
                pass
            time.sleep(0.25)
        raise LocalKafkaError(f"broker not reachable at {self.bootstrap} after {timeout:.0f}s")

    def _live_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        # Guard against pid reuse: only a kafka.Kafka process counts as ours.
        return pid if b"kafka.Kafka" in cmdline else None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _cluster_id() -> str:
    """Kafka's Uuid text form: url-safe base64 of 16 random bytes, unpadded. Like Kafka's
    own ``Uuid.randomUuid``, never one starting with '-': the storage tool would read it
    as an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text
