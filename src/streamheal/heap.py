"""Keep the cyclic garbage collector off the objects that live for a whole run.

CPython's collector scans every tracked container object of the process at each full
(oldest-generation) collection, and one comes due whenever the objects that survived
into that generation have grown by a quarter. A worker starts with about 140,000 such
objects that never die (the modules, classes and functions of pandas, scipy, River and
confluent-kafka), and its Engines keep objects alive from batch to batch (label-join
entries, windows), so it pays for scans of its own start-up heap, over and over: in the
broker benchmark, 2.4 s of full collections in twelve worker runs of 30,000 events, about
6% of the worker's time. ``gc.freeze()`` moves every object alive at that moment into a
permanent generation the collector never scans (the practice CPython documents for
long-running servers); objects freed by reference counting are freed as before, so the
only cost is that a reference cycle among frozen objects is not reclaimed until
:func:`unfreeze`.

>>> with frozen_heap():
...     pass
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0  # nested or concurrent runs (the benchmark, tests) unfreeze at the last exit


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect, then freeze everything alive, for the duration of the block; the last
    block to exit (they may nest, or run in threads) gives the objects back to the
    collector."""
    global _holders
    with _lock:
        _holders += 1
        gc.collect()  # garbage is not frozen: it would stay until unfreeze
        gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if not _holders:
                gc.unfreeze()
