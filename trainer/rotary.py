"""Half-truncated rotary embeddings with YaRN window extension (docs/trainer.md, "Rotary and YaRN").

A head of ``head_dim`` dims rotates only its first half: ``head_dim // 4`` frequencies
(1/1024)^linspace(0, 1), each acting on one adjacent pair (2j, 2j+1); the second half is
stationary (frequency 0). When the long attention window grows, YaRN interpolates the low
frequencies (those that turn less than once per ``beta`` windows) towards old/new and keeps the high
ones, and raises the softmax scale logarithmically.

The tables hold 2·max_seq_len rows. A paired table (for paired-head layers) is twice as wide:
row t holds the angles of position 2t in its first half and of 2t+1 in its second half.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INITIAL_ATTN_SCALE = 0.1
YARN_ALPHA = 1.0
YARN_BETA = 32.0


def base_frequencies(head_dim: int, device=None) -> torch.Tensor:
    """(head_dim,) fp32 angular frequencies: head_dim//4 values, each twice, then head_dim//2 zeros."""
    freq = (1 / 1024) ** torch.linspace(0, 1, steps=head_dim // 4, dtype=torch.float32, device=device)
    freq = freq.repeat_interleave(2)
    return torch.cat([freq, freq.new_zeros(head_dim // 2)])


def yarn_frequencies(freq: torch.Tensor, old_window: int, new_window: int) -> torch.Tensor:
    """Frequencies after extending the window from old_window to new_window tokens.

    A frequency that completes at most ``YARN_ALPHA`` turns over the old window is scaled by
    old/new (interpolated), one with at least ``YARN_BETA`` turns is kept, linear in between.
    """
    rotations = old_window * freq / (2 * math.pi)
    ratio = old_window / new_window
    weight = torch.clamp((rotations - YARN_ALPHA) / (YARN_BETA - YARN_ALPHA), 0, 1)
    return freq * (ratio + weight * (1 - ratio))


def yarn_attn_scale(scale: float, old_window: int, new_window: int) -> float:
    """Softmax scale after a window change: scale·(1 + 0.2·ln(new/old))."""
    return scale * (1 + 0.2 * math.log(new_window / old_window))


def _angle_tables(freq: torch.Tensor, num_rows: int, paired: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, signed sin) fp32 tables; sin is negated on odd columns so that one multiply-add with
    the pair-swapped input gives the rotation (see ``rotate``)."""
    t = torch.arange(num_rows, dtype=torch.float32, device=freq.device)
    if paired:
        theta = torch.cat([torch.outer(2 * t, freq), torch.outer(2 * t + 1, freq)], dim=-1)
    else:
        theta = torch.outer(t, freq)
    sin = theta.sin()
    sin[..., 1::2] *= -1
    return theta.cos(), sin


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x (T, H, W) by per-row tables (≥ T rows, W columns).

    out[2j] = cos·x[2j] + sin·x[2j+1] and out[2j+1] = cos·x[2j+1] − sin·x[2j]; ``sin`` already
    carries the minus sign on odd columns.
    """
    T = x.size(0)
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return cos[:T, None, :] * x + sin[:T, None, :] * swapped


class Yarn(nn.Module):
    """Rotary tables and softmax scale of one attention variant (plain or paired)."""

    def __init__(self, head_dim: int, max_seq_len: int, paired: bool = False,
                 table_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.head_dim = head_dim
        self.num_rows = 2 * max_seq_len
        self.paired = paired
        width = 2 * head_dim if paired else head_dim
        self.angular_freq = nn.Buffer(torch.empty(head_dim, dtype=torch.float32), persistent=False)
        self.cos = nn.Buffer(torch.empty(self.num_rows, width, dtype=table_dtype), persistent=False)
        self.sin = nn.Buffer(torch.empty(self.num_rows, width, dtype=table_dtype), persistent=False)
        self.attn_scale = INITIAL_ATTN_SCALE
        self.reset()

    @torch.no_grad()
    def _set_frequencies(self, freq: torch.Tensor) -> None:
        # Tables are rewritten in place: a compiled model keeps pointing at the same buffers.
        self.angular_freq.copy_(freq)
        cos, sin = _angle_tables(self.angular_freq, self.num_rows, self.paired)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def reset(self) -> None:
        """Back to the initial frequencies and attn_scale 0.1."""
        self._set_frequencies(base_frequencies(self.head_dim, device=self.angular_freq.device))
        self.attn_scale = INITIAL_ATTN_SCALE

    def extend_window(self, old_window: int, new_window: int) -> None:
        """YaRN step for a long window going from old_window to new_window tokens."""
        self._set_frequencies(yarn_frequencies(self.angular_freq, old_window, new_window))
        self.attn_scale = yarn_attn_scale(self.attn_scale, old_window, new_window)

    def rotary(self, x: torch.Tensor) -> torch.Tensor:
        """x (T, H, head_dim), or (T, H, 2·head_dim) for a paired table."""
        if x.size(0) > self.num_rows:
            raise ValueError(f"rotary: {x.size(0)} positions exceed the {self.num_rows}-row table")
        return rotate(x, self.cos, self.sin)
