"""One retrain at a time per lock file, and the trigger state the lock protects.

:class:`RetrainLock` is an ``flock`` taken without waiting: a trigger that finds it held
does not queue a second run behind the first, it skips (the run in progress serves it).
The kernel drops the lock when its holder dies, so a killed run never leaves it stuck.

:class:`TriggerState` is a small JSON file beside the lock (``<lock>.state.json``) that
every trigger reads and writes only while holding the lock: when the last run started
(drift alerts older than that were already served) and the last schedule slot dealt
with (see :meth:`~streamheal.cron.CronSchedule.due`). Because it is on disk,
a restarted scheduler catches up a slot it missed, and two services on one host agree.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "retrain.lock")
>>> first, second = RetrainLock(path), RetrainLock(path)
>>> first.acquire(), second.acquire()
(True, False)
>>> first.release(); second.acquire()
True
>>> second.release()
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import orjson

from streamheal.config import Config


class RetrainLock:
    """A non-blocking exclusive lock on ``path`` (created with its folder when missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._handle: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; False (at once) when someone does."""
        if self._handle is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")  # for whoever looks at a held lock
        handle.flush()
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def holder(self) -> str:
        """The pid the current holder wrote, for messages ("" when unknown)."""
        with contextlib.suppress(OSError):
            return self.path.read_text().strip()
        return ""

    def __enter__(self) -> RetrainLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


@dataclass
class TriggerState:
    """What the triggers remember between runs and restarts (seconds since the epoch)."""

    last_run_started_at: float | None = None
    last_slot: float | None = None  # the latest schedule slot dealt with
    schedule: str | None = None  # the expression `last_slot` belongs to

    @classmethod
    def load(cls, path: Path) -> TriggerState:
        """The saved state; a fresh one when the file is missing or unreadable (a lost
        state costs at most one extra run, never a skipped one)."""
        try:
            data = orjson.loads(path.read_bytes())
            return cls(**{k: data.get(k) for k in ("last_run_started_at", "last_slot", "schedule")})
        except (OSError, orjson.JSONDecodeError, TypeError, AttributeError):
            return cls()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps(asdict(self)))
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise


def lock_path(config: Config) -> Path:
    """``retrain.lock_path``, or the default beside the registry's model folder."""
    if config.retrain.lock_path:
        return Path(config.retrain.lock_path).expanduser()
    registry = config.registry
    return Path(registry.path).expanduser() / f"{registry.model_name}.retrain.lock"


def state_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".state.json")
