"""Freezing what is alive now out of the garbage collector's reach, for as long as a block runs.

A process that starts once and then serves (a service, a load generator) holds most of its objects
from start to end: modules, the app, pools, pre-drawn documents. A full collection walks all of
them, and while it does the event loop holds every request due. Frozen (`gc.freeze`), they are no
longer walked, and a collection's pause is what the work itself made since. A process that froze
objects itself keeps its own arrangement: nothing is frozen or thawed then.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["frozen_heap"]


@contextmanager
def frozen_heap(*, collect: bool = False) -> Iterator[bool]:
    """Freeze what is alive (after a full collection, with ``collect``) and thaw it on exit; yields
    whether it froze (False when something was frozen already, and it then leaves both alone)."""
    freezing = gc.get_freeze_count() == 0
    if freezing:
        if collect:
            gc.collect()
        gc.freeze()
    try:
        yield freezing
    finally:
        if freezing:
            gc.unfreeze()
