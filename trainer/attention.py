"""Varlen sliding-window causal attention over a packed document stream (docs/trainer.md, "Attention").

One predicate defines who sees whom: query position i sees key j when

    j ≤ i  and  i − j ≤ W  and  doc(i) = doc(j)

with documents taken from the loader's ``cu_seqlens`` (trailing padding entries make empty
documents) and W in positions of the stream attended over. Paired-head layers attend over a 2T
stream whose slot s belongs to token s // 2, so doc(s) = doc(s // 2) and W counts stream slots.

Three backends evaluate the same predicate:
- ``fa3``: FlashAttention-3 varlen (window_size=(W, 0)), used on CUDA when its distribution is
  installed, as in the record;
- ``flex``: flex_attention with a BlockMask rebuilt every forward from the documents (CUDA default);
- ``dense``: a boolean (L, L) mask and scaled_dot_product_attention (CPU; fine for short streams).
"""

from __future__ import annotations

import importlib
import importlib.metadata

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

BLOCK_SIZE = 128
FA3_DISTRIBUTIONS = ("flash_attn_3", "flash-attn-3")
BACKENDS = ("fa3", "flex", "dense")


def _fa3_installed() -> bool:
    """Whether a FlashAttention-3 distribution is installed (checked by metadata, not by importing)."""
    for name in FA3_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


# Resolved at import, so nothing below does I/O inside a compiled forward.
FA3_INSTALLED = _fa3_installed()
_fa3_varlen = importlib.import_module("flash_attn_interface").flash_attn_varlen_func if FA3_INSTALLED else None
# flex_attention is only fast compiled; inside an already compiled model Dynamo inlines this wrapper.
_compiled_flex = torch.compile(flex_attention, dynamic=False)


def default_backend(device: torch.device) -> str:
    if device.type == "cuda":
        return "fa3" if FA3_INSTALLED else "flex"
    return "dense"


def document_ids(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """(length,) int32 document index of each position, from cumulative boundaries (0 first)."""
    positions = torch.arange(length, dtype=cu_seqlens.dtype, device=cu_seqlens.device)
    return (torch.searchsorted(cu_seqlens, positions, right=True) - 1).to(torch.int32)


def paired_stream_ids(docs: torch.Tensor) -> torch.Tensor:
    """Document ids of the 2T interleaved stream: slot s carries token s // 2."""
    return docs.repeat_interleave(2)


def visible(q_idx: torch.Tensor, kv_idx: torch.Tensor, docs: torch.Tensor, window: int) -> torch.Tensor:
    """The attention predicate, elementwise over broadcastable query and key positions."""
    return (kv_idx <= q_idx) & (q_idx - kv_idx <= window) & (docs[q_idx] == docs[kv_idx])


def dense_mask(docs: torch.Tensor, window: int) -> torch.Tensor:
    """(L, L) boolean mask, True where query row i may attend key column j."""
    idx = torch.arange(docs.numel(), device=docs.device)
    return visible(idx[:, None], idx[None, :], docs, window)


@torch.library.custom_op("speedtrace::materialize_ids", mutates_args=())
def materialize_ids(ids: torch.Tensor) -> torch.Tensor:
    """A copy of ``ids`` made by an opaque op.

    Inductor (torch 2.11) cannot lower a mask_mod that indexes a tensor computed inside the
    compiled graph with a still-flexible layout ("convert FlexibleLayout to FixedLayout first");
    an extern op's output always has a fixed layout, so the mask_mod reads this copy instead.
    """
    return ids.clone()


@materialize_ids.register_fake
def _(ids: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(ids)


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, indices) per row of a (n, n) block matrix, selected blocks first, as BlockMask wants."""
    as_int = blocks.to(torch.int32)
    count = as_int.sum(-1, dtype=torch.int32)
    order = torch.argsort(as_int, dim=-1, descending=True, stable=True).to(torch.int32)
    return count[None, None], order[None, None]


def block_mask(docs: torch.Tensor, window: int, block_size: int = BLOCK_SIZE) -> BlockMask:
    """flex_attention BlockMask of ``visible`` over a stream with document ids ``docs``.

    Block (i, j) is skipped when no pair can be visible, "full" when every pair is (the mask_mod
    is then not evaluated) and partial otherwise. Doc ids never decrease along the stream, so
    a block's documents are the range from its first to its last id. All tensor ops, no host sync:
    the mask follows the batch inside a compiled graph.
    """
    L = docs.numel()
    n = -(-L // block_size)
    padded = materialize_ids(torch.cat([docs, docs[-1:].expand(n * block_size - L)]))
    first = padded[::block_size]
    last = padded[block_size - 1::block_size]
    blk = torch.arange(n, device=docs.device)
    i, j = blk[:, None], blk[None, :]
    lo_i, hi_i = i * block_size, torch.clamp(i * block_size + block_size - 1, max=L - 1)
    lo_j, hi_j = j * block_size, torch.clamp(j * block_size + block_size - 1, max=L - 1)
    some = (lo_j <= hi_i) & (lo_i - hi_j <= window) & (last[None, :] >= first[:, None])
    every = (hi_j <= lo_i) & (hi_i - lo_j <= window) & (first[None, :] == last[:, None])
    partial = some & ~every

    def mask_mod(b, h, q_idx, kv_idx):
        # the padded ids keep indices of the last, partial block in range
        return visible(q_idx, kv_idx, padded, window)

    # The transposed (q-block) index lists only serve the backward; eval skips their O(n²) build.
    return BlockMask.from_kv_blocks(*_ordered(partial), *_ordered(every), BLOCK_SIZE=block_size,
                                    mask_mod=mask_mod, seq_lengths=(L, L),
                                    compute_q_blocks=torch.is_grad_enabled())


class DocumentMasks:
    """Per-forward attention context: the batch's documents and the masks built from them.

    One is made per forward pass; masks are built on first use and shared by every layer with the
    same (paired, window).
    """

    def __init__(self, cu_seqlens: torch.Tensor, num_tokens: int, max_seq_len: int, backend: str):
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose from {BACKENDS}")
        self.cu_seqlens = cu_seqlens
        self.num_tokens = num_tokens
        self.max_seq_len = max_seq_len
        self.backend = backend
        self._docs: dict[bool, torch.Tensor] = {}
        self._masks: dict[tuple[bool, int], object] = {}

    def docs(self, paired: bool) -> torch.Tensor:
        if paired not in self._docs:
            docs = document_ids(self.cu_seqlens, self.num_tokens)
            self._docs[paired] = paired_stream_ids(docs) if paired else docs
        return self._docs[paired]

    def mask(self, paired: bool, window: int):
        key = (paired, window)
        if key not in self._masks:
            docs = self.docs(paired)
            self._masks[key] = block_mask(docs, window) if self.backend == "flex" else dense_mask(docs, window)
        return self._masks[key]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masks: DocumentMasks, *,
           window: int, scale: float, paired: bool) -> torch.Tensor:
    """Attention of q, k, v (L, H, D) under ``visible``; L = T, or 2T for a paired stream."""
    if masks.backend == "fa3":
        cu = 2 * masks.cu_seqlens if paired else masks.cu_seqlens
        max_len = 2 * masks.max_seq_len if paired else masks.max_seq_len
        y = _fa3_varlen(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max_len,
                        max_seqlen_k=max_len, causal=True, softmax_scale=scale, window_size=(window, 0))
        return y[0] if isinstance(y, tuple) else y
    q4, k4, v4 = (t.transpose(0, 1)[None] for t in (q, k, v))
    mask = masks.mask(paired, window)
    if masks.backend == "flex":
        run = _compiled_flex if q.is_cuda else flex_attention
        y = run(q4, k4, v4, block_mask=mask, scale=scale)
    else:
        y = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, scale=scale)
    return y[0].transpose(0, 1)
