"""Which GPU events are select_backward work, and whether dedicated or fused (metrics.md).

``aten::select_backward`` scatters a gradient into a zero tensor: in eager mode a fill and a
copy kernel; under Inductor either a kernel of its own (only data movement fused in) or part of
a kernel that does real work. Dedicated kernels are overhead PR #233 targets; fused ones cost
nothing of their own, so they are counted but not timed.
"""

from __future__ import annotations

import re

import numpy as np

NONE, DEDICATED, FUSED = 0, 1, 2

# select_backward, but not index_select_backward / masked_select_backward.
_SELECT_BACKWARD = re.compile(r"(?<!index_)(?<!masked_)select_backward")
_INDUCTOR = re.compile(r"^triton_[a-z]+_fused_(.*?)(?:_\d+)?$")
# Op names that only move data; longest first so that e.g. `_unsafe_view` goes before `view`.
DATA_MOVEMENT = (
    "_unsafe_view", "slice_backward", "zeros_like", "new_zeros", "_to_copy", "unsqueeze",
    "transpose", "squeeze", "permute", "expand", "clone", "zeros", "slice", "stack", "view",
    "fill", "copy", "cat", "add",
)
EAGER_OP = "aten::select_backward"


def mentions(name: str) -> bool:
    """Whether a kernel or op name contains a (non index_/masked_) ``select_backward``."""
    return bool(_SELECT_BACKWARD.search(name))


def kind_of_name(name: str) -> int:
    """DEDICATED or FUSED for a name that mentions select_backward (NONE otherwise).

    Inductor names ``triton_<kind>_fused_<ops>_<n>`` are dedicated when nothing but
    select_backward and data movement is fused in; any other name (an eager kernel, the aten op
    itself) is dedicated.
    """
    if not mentions(name):
        return NONE
    m = _INDUCTOR.match(name)
    if not m:
        return DEDICATED
    ops = _SELECT_BACKWARD.sub("", m.group(1))
    for op in DATA_MOVEMENT:
        ops = ops.replace(op, "")
    return DEDICATED if ops.strip("_") == "" else FUSED


def classify(names: list[str], event_name: np.ndarray, op_name: np.ndarray,
             under_eager: np.ndarray) -> np.ndarray:
    """Kind per GPU event from its name code, the name code of the innermost CPU op around its
    launch (-1: none) and whether ``aten::select_backward`` was open on the launch's thread."""
    by_code = np.array([kind_of_name(n) for n in names], dtype=np.int8) if names else np.zeros(0, np.int8)
    kind = by_code[event_name] if len(by_code) else np.zeros(len(event_name), np.int8)
    from_op = np.where(op_name >= 0, by_code[np.maximum(op_name, 0)] if len(by_code) else 0, NONE)
    kind = np.where(kind == NONE, from_op, kind)
    return np.where((kind == NONE) & under_eager, DEDICATED, kind).astype(np.int8)
