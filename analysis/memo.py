"""Remember a derived table for the last object it was derived from.

A device's metrics ask for the same derived table (the rank's CPU nesting, the comm kernels'
ready times, the collective rows) once for the whole selection and once per step. Keeping only
the result for the last object asked about makes those calls free while holding at most one
rank's or device's worth of memory; identity, not equality, says whether it is the same object.
"""

from __future__ import annotations

from functools import wraps
from typing import Callable, TypeVar

T = TypeVar("T")


def keep_last(key: Callable = lambda arg: arg) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a one-argument function so that it reruns only when ``key(arg)`` is a different
    object from the last call's."""

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        last: list = [None, None]  # [key object, result]; the object is kept so its id stays its own

        @wraps(fn)
        def wrapper(arg) -> T:
            k = key(arg)
            if last[0] is not k:
                last[0], last[1] = None, None   # never pair a new key with an old result
                last[1] = fn(arg)
                last[0] = k
            return last[1]

        return wrapper

    return decorate
