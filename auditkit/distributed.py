"""Multi-process work, in one room: ranks, launching and gathering.

Everything else asks this module to "compute these K units of work" (:func:`map_units`) and never checks a
rank itself. Unit k is a pure function of its index (it seeds itself from k), so the results do not depend
on how many processes share the work. Without a process group (the default), units run one after another
in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def map_units(fn: Callable[[int], T], count: int) -> list[T]:
    """``[fn(0), …, fn(count - 1)]``, in index order.

    ``fn(k)`` must depend only on ``k`` and on state every process shares (it seeds itself from ``k``), and
    return something picklable made of CPU tensors and plain values.
    """
    return [fn(k) for k in range(count)]
