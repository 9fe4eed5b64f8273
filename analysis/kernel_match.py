"""Pairing kernels across a before/after diff: renamed Inductor kernels and absorbed eager ones.

Inductor names a generated kernel ``triton_<kind>_fused_<ops>_<n>``: ``<ops>`` is the sorted set
of the aten ops it fuses joined by ``_``, and ``<n>`` a counter that changes whenever the graph
does. A change that fuses one more op into a kernel therefore renames it; ``pair_renamed``
recognises such pairs by the overlap of their op-name sets, and ``absorbed_into`` recognises an
eager kernel whose op now appears in a fused one, so that both read as one change.

How ``<ops>`` is split into op names (op names contain underscores themselves):

1. At each position, the longest name of ``COMPOUND_OPS`` that matches and ends at ``_`` or at
   the end is one op; so is a dunder (``__lshift__``).
2. Otherwise the op is one word, with its leading underscores (``_foo``).
3. The ops are sorted, so private ops (leading ``_``) come before public ones: a ``__`` after a
   public op marks that op as in-place (``copy__div`` is ``copy_`` then ``div``).
4. In-place ops count as their out-of-place name (``copy_`` and ``lerp_`` are ``copy`` and
   ``lerp``), as an eager launching op ``aten::lerp_`` does.
Compound names not listed split into words on both sides alike, so pairing still works; an
absorbed op that is not listed must then appear as all of its words.

Keys may carry a launch configuration (``name<<<grid, block>>>``, see ``kernels``): the ops come
from the name part, and among equally good pairs those of one configuration pair first.
"""

from __future__ import annotations

import re

from speedtrace.analysis.kernels import split_key

KINDS = ("poi", "red", "per", "tem", "for")
JACCARD_MIN = 0.6

_FUSED = re.compile(r"^triton_(poi|red|per|tem|for)_fused_(.+?)(?:_\d+)?$")
_DUNDER = re.compile(r"__[a-z0-9]+__(?=_|$)")
_WORD = re.compile(r"_*[^_]+")

# aten op names with underscores that Inductor kernel names carry (seen in the record-233
# traces, plus common ones). Longest first so that a name wins over its own prefix.
COMPOUND_OPS = tuple(sorted({
    "_fused_rms_norm", "_fused_rms_norm_backward", "_scaled_mm", "_to_copy", "_unsafe_view",
    "_softmax", "_softmax_backward_data", "_log_softmax", "_log_softmax_backward_data",
    "_foreach_add", "_foreach_mul", "_foreach_lerp", "_foreach_copy",
    "as_strided", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "clamp_min",
    "clamp_max", "embedding_dense_backward", "flex_attention", "flex_attention_backward",
    "index_put", "index_select", "index_add", "index_select_backward", "lift_fresh",
    "linalg_vector_norm", "masked_fill", "masked_select_backward", "native_dropout",
    "native_layer_norm", "native_layer_norm_backward", "new_empty", "new_ones", "new_zeros",
    "nll_loss_forward", "nll_loss_backward", "ones_like", "zeros_like", "empty_like",
    "full_like", "scalar_tensor", "scatter_add", "scatter_reduce", "select_backward",
    "sigmoid_backward", "slice_backward", "tanh_backward", "gelu_backward", "silu_backward",
    "threshold_backward", "native_batch_norm", "upsample_nearest2d", "constant_pad_nd",
}, key=lambda s: (-len(s), s)))


def fused_kind(key: str) -> str | None:
    """The Inductor kind (``poi``, ``red``, ``per``, ``tem``, ``for``) of a fused kernel name."""
    m = _FUSED.match(split_key(key)[0])
    return m.group(1) if m else None


def op_name(op: str) -> str:
    """An op as it appears in a fused kernel name: no ``aten::`` prefix, no overload, in-place
    ``_`` dropped (``aten::lerp_`` -> ``lerp``)."""
    name = op.split("::", 1)[1] if "::" in op else op
    name = name.split(".", 1)[0]
    if name.endswith("_") and not name.endswith("__") and len(name) > 1:
        name = name[:-1]
    return name


def _tokens(ops: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(ops):
        if (ops[i] == "_" and out and not out[-1].startswith("_") and not out[-1].endswith("_")
                and not _DUNDER.match(ops, i)):
            out[-1] += "_"  # rule 3: the in-place marker of the op before
            i += 1
            continue
        m = _DUNDER.match(ops, i)
        token = m.group(0) if m else None
        if token is None:
            for name in COMPOUND_OPS:
                if ops.startswith(name, i) and (i + len(name) == len(ops) or ops[i + len(name)] == "_"):
                    token = name
                    break
        if token is None:
            w = _WORD.match(ops, i)
            if w is None:  # only underscores left
                break
            token = w.group(0)
        out.append(token)
        i += len(token)
        if i < len(ops) and ops[i] == "_":
            i += 1  # the separator
    return out


def fused_ops(key: str) -> frozenset[str]:
    """The op names fused into an Inductor kernel (empty for any other name)."""
    m = _FUSED.match(split_key(key)[0])
    if not m:
        return frozenset()
    return frozenset(op_name(t) for t in _tokens(m.group(2)))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a ∩ b| / |a ∪ b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def pair_renamed(removed: list[str], added: list[str], threshold: float = JACCARD_MIN) -> list[tuple[str, str, float]]:
    """(before key, after key, Jaccard) for removed and added Inductor kernels of one kind whose
    op-name sets overlap by at least ``threshold``: greedily, highest Jaccard first (ties: one
    launch configuration on both sides first, then by name), each key used once."""
    candidates = []
    for r in removed:
        kind_r, ops_r = fused_kind(r), fused_ops(r)
        if kind_r is None:
            continue
        for a in added:
            if fused_kind(a) != kind_r:
                continue
            j = jaccard(ops_r, fused_ops(a))
            if j >= threshold:
                candidates.append((-j, split_key(r)[1] != split_key(a)[1], r, a))
    candidates.sort()
    used_r, used_a, pairs = set(), set(), []
    for neg_j, _, r, a in candidates:
        if r in used_r or a in used_a:
            continue
        used_r.add(r)
        used_a.add(a)
        pairs.append((r, a, -neg_j))
    return pairs


def contains_op(ops: frozenset[str], op: str) -> bool:
    """Whether the op name ``op`` is among ``ops`` (all of its words, for a compound name the
    tokenizer does not know)."""
    if op in ops:
        return True
    if op in COMPOUND_OPS or "_" not in op.strip("_"):
        return False
    words = set(_tokens(op))
    return bool(words) and words <= ops


def absorbed_into(launch_ops: dict[str, set[str]], hosts: list[tuple[str, frozenset[str]]],
                  phases_before: dict[str, set] | None = None,
                  phases_after: dict[str, set] | None = None) -> dict[str, str]:
    """Which host kernel absorbed each eager kernel.

    ``launch_ops``: removed eager kernel key -> the aten ops that launched it (``aten::lerp_``).
    ``hosts``: (after key, the op names new in it), in order of preference. An eager kernel is
    absorbed by the first host one of whose new ops is one of its launching ops and, when the
    phases of launches are given (kernel key -> phase names), that ran in a phase the eager kernel
    ran in: fusion keeps work where it was, so a generic op such as ``add`` is not matched to a
    new kernel elsewhere in the step.
    """
    out = {}
    for key in sorted(launch_ops):
        names = {op_name(op) for op in launch_ops[key]}
        for host, new_ops in hosts:
            if phases_before is not None and phases_after is not None and \
                    not phases_before.get(key, set()) & phases_after.get(host, set()):
                continue
            if any(contains_op(new_ops, n) for n in names):
                out[key] = host
                break
    return out
