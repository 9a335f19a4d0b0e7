"""streamheal: a self-healing online-learning worker on Kafka, and its offline tools.

The names below are the public surface; everything else may change between releases.
They are imported on first use, so ``import streamheal`` (and the command line) stays
fast and loads neither River nor Kafka's client until they are needed.

>>> import streamheal
>>> isinstance(streamheal.__version__, str)
True
>>> streamheal.Config().engine.mode
'per_event'
>>> issubclass(streamheal.ConfigError, streamheal.StreamhealError)
True
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from streamheal.errors import StreamhealError


def _version() -> str:
    try:
        return metadata.version("streamheal")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

# Public name -> the module that defines it (imported lazily by __getattr__).
_EXPORTS = {
    "Config": "streamheal.config",
    "load_config": "streamheal.config",
    "ConfigError": "streamheal.config",
    "Engine": "streamheal.engine",
    "compare": "streamheal.compare",
    # The notebook API; its replay function is streamheal.notebook.replay (the name
    # streamheal.replay is the module that drives Kafka topics and files).
    "ReplayResult": "streamheal.notebook",
    "grid": "streamheal.notebook",
    "scenario_frame": "streamheal.notebook",
    "InvalidEvent": "streamheal.events",
    "RegistryError": "streamheal.registry",
    "CheckpointError": "streamheal.state.checkpoint",
    "BrokerUnavailable": "streamheal.kafka.connect",
    "WorkerError": "streamheal.kafka.worker",
    "LocalKafkaError": "streamheal.dev.local_broker",
}

__all__ = ["StreamhealError", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamheal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
