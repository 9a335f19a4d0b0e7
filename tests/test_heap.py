"""The worker's frozen start-up heap (streamheal.heap): frozen while any run holds it,
given back to the garbage collector when the last one ends, garbage never frozen."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from streamheal import heap
from streamheal.heap import frozen_heap


class _Node:
    """A reference cycle: only the cyclic collector reclaims it."""

    def __init__(self) -> None:
        self.me = self


def test_the_heap_stays_frozen_until_the_last_holder_leaves_and_garbage_is_not_frozen() -> None:
    if heap._holders:  # a worker thread of another test still runs
        pytest.skip("another run holds the frozen heap")
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage  # a cycle, unreachable: the collection before the freeze takes it
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gone() is None
        outer = gc.get_freeze_count()
        assert outer > 1000  # the imports, at least
        entered, leave = threading.Event(), threading.Event()

        def hold() -> None:
            with frozen_heap():
                entered.set()
                leave.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert entered.wait(30)
        with frozen_heap():  # nested in this thread too
            pass
        assert gc.get_freeze_count() >= outer  # still frozen: two holders left
        leave.set()
        holder.join(30)
        assert gc.get_freeze_count() >= outer  # the outer block still holds it
    assert gc.get_freeze_count() == 0
