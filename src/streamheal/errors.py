"""The one base of every error streamheal raises for a condition of its own.

Each area keeps its specific class (``ConfigError``, ``RegistryError``,
``BrokerUnavailable``, ...), so callers catch exactly what they handle; each also keeps
the built-in base it always had (``ValueError`` for bad input, ``RuntimeError`` for a
failure at run time), so existing ``except ValueError`` clauses still work. Catch
:class:`StreamhealError` to handle any of them at once.

>>> from streamheal import ConfigError, StreamhealError, load_config
>>> try:
...     load_config(None, env={"STREAMHEAL_ENGINE__MODE": "fast"})
... except StreamhealError as err:
...     print(type(err).__name__, "-", err)
ConfigError - engine.mode: expected one of 'per_event', 'mini_batch', got 'fast'
"""

from __future__ import annotations


class StreamhealError(Exception):
    """Base class of the errors streamheal raises for its own conditions.

    Examples
    --------
    >>> from streamheal.registry import RegistryError
    >>> issubclass(RegistryError, StreamhealError), issubclass(RegistryError, RuntimeError)
    (True, True)
    """


class NotDelivered(StreamhealError, RuntimeError):
    """A record the broker did not acknowledge in time (a control command, a silence, an
    alert record written outside the worker)."""
