"""Python's cyclic garbage collector kept out of the way of work that makes many objects and no garbage.

A full collection walks every tracked object, and the collector makes one each time the objects that
survived collections grow by a quarter: building 100,000 listing rows, or importing TensorFlow and
Keras (millions of objects), makes one after another, each slower than the last.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused_gc", "long_lived_imports"]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The collector paused for the block, then restored as it was (enabled again only if it was).

    For code that makes a listing's worth of acyclic objects (an index of 100,000 entries, its
    object graph, the reports): each full collection while they are made walks all of them
    again (BENCHMARKS.md D1 lists 100,000 tensors). Nothing cyclic is made inside, so nothing
    is collected later than it would have been.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def long_lived_imports() -> Iterator[None]:
    """Imports whose objects live as long as the process: the collector paused while they run, and what
    exists once they succeeded frozen (``gc.freeze``), so that no later collection walks it again.

    ``import tensorflow`` + ``import keras`` make one full collection after another (part of every repair's
    time, BENCHMARKS.md D7). Only pausing would move that cost to the first collections after the block,
    which walk every new object once per generation; freezing removes it. A frozen object that later becomes
    cyclic garbage is not freed (``gc.unfreeze`` hands them back).
    """
    with paused_gc():
        yield
        gc.freeze()
