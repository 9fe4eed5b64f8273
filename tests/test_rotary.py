"""Half-truncated rotary embeddings and the YaRN window extension (docs/trainer.md, "Rotary and YaRN" and "The schedule")."""

import math

import pytest
import torch

from speedtrace.trainer.rotary import Yarn, rotate, yarn_frequencies


def _by_hand(x, position, freqs):
    """Rotate pair (2j, 2j+1) of x by position·freqs[j]; the rest of x stays."""
    out = list(x)
    for j, w in enumerate(freqs):
        c, s = math.cos(position * w), math.sin(position * w)
        out[2 * j] = c * x[2 * j] + s * x[2 * j + 1]
        out[2 * j + 1] = c * x[2 * j + 1] - s * x[2 * j]
    return out


def test_pair_convention_and_stationary_half():
    # head_dim 8: 2 frequencies 1 and 1/1024 on pairs (0,1), (2,3); dims 4..7 stationary.
    yarn = Yarn(8, max_seq_len=8, table_dtype=torch.float32)
    x = torch.arange(1.0, 9.0)
    xs = x.expand(6, 1, 8).clone()           # the same vector at positions 0..5
    out = yarn.rotary(xs)
    for p in range(6):
        want = _by_hand(x.tolist(), p, [1.0, 1 / 1024])
        assert out[p, 0].tolist() == pytest.approx(want, abs=1e-5)
    assert torch.equal(out[:, 0, 4:], xs[:, 0, 4:])


def test_frequencies_of_a_128_dim_head():
    yarn = Yarn(128, max_seq_len=4, table_dtype=torch.float32)
    f = yarn.angular_freq
    assert f.shape == (128,)
    assert f[0].item() == 1.0 and f[1].item() == 1.0                 # one frequency per pair
    assert f[62].item() == pytest.approx(1 / 1024) and f[63].item() == pytest.approx(1 / 1024)
    assert f[2].item() == pytest.approx(1024 ** (-1 / 31))
    assert torch.all(f[64:] == 0)
    assert yarn.cos.shape == (8, 128)        # 2·max_seq_len rows


def test_tables_default_to_bf16():
    yarn = Yarn(16, max_seq_len=4)
    assert yarn.cos.dtype == torch.bfloat16 and yarn.sin.dtype == torch.bfloat16


def test_paired_table_uses_positions_2t_and_2t_plus_1():
    yarn = Yarn(8, max_seq_len=8, paired=True, table_dtype=torch.float32)
    x = torch.arange(1.0, 17.0)
    out = yarn.rotary(x.expand(4, 1, 16).clone())
    for t in range(4):
        assert out[t, 0, :8].tolist() == pytest.approx(_by_hand(x[:8].tolist(), 2 * t, [1.0, 1 / 1024]), abs=1e-5)
        assert out[t, 0, 8:].tolist() == pytest.approx(_by_hand(x[8:].tolist(), 2 * t + 1, [1.0, 1 / 1024]), abs=1e-5)


def test_attn_scale_sequence_of_the_speedrun():
    # 0.1 · (1 + 0.2·ln(new/old)) at each long-window change: 384→896→1408→1664 tokens.
    yarn = Yarn(128, max_seq_len=4)
    assert yarn.attn_scale == 0.1
    for (old, new), want in zip([(384, 896), (896, 1408), (1408, 1664)], [0.11695, 0.12752, 0.13178]):
        yarn.extend_window(old, new)
        assert round(yarn.attn_scale, 5) == want


def test_yarn_frequency_update_by_hand():
    # head_dim 128, window 384 -> 896; r = 384/896 = 3/7.
    freq = torch.tensor([1.0, 1024 ** (-10 / 31), 1 / 1024, 0.0])
    new = yarn_frequencies(freq, 384, 896)
    r = 3 / 7
    # ω = 1 turns 384/2π ≈ 61 times per window (> 32): kept.
    assert new[0].item() == pytest.approx(1.0)
    # ω = 1024^(-10/31) ≈ 0.10689: 384·ω/2π ≈ 6.5326 turns -> weight (6.537 - 1)/31.
    w = 1024 ** (-10 / 31)
    weight = (384 * w / (2 * math.pi) - 1) / 31
    assert new[1].item() == pytest.approx(w * (r + weight * (1 - r)), rel=1e-6)
    assert new[1].item() == pytest.approx(w * 0.530555, rel=1e-5)
    # ω = 1/1024: far below one turn: fully interpolated.
    assert new[2].item() == pytest.approx(r / 1024)
    assert new[3].item() == 0.0


def test_extend_rebuilds_tables_and_reset_restores():
    yarn = Yarn(8, max_seq_len=64, table_dtype=torch.float32)
    before = yarn.cos.clone()
    table = yarn.cos
    yarn.extend_window(16, 48)
    assert yarn.cos is table                  # rewritten in place (compiled graphs keep the buffer)
    slow = (1 / 1024) * (16 / 48)             # the low frequency is interpolated by old/new
    assert yarn.cos[100, 2].item() == pytest.approx(math.cos(100 * slow), abs=1e-6)
    # ω = 1 turns 16/2π ≈ 2.5 times per old window: partly interpolated
    fast = 1 / 3 + (16 / (2 * math.pi) - 1) / 31 * (2 / 3)
    assert yarn.cos[100, 0].item() == pytest.approx(math.cos(100 * fast), abs=1e-4)
    assert yarn.sin[100, 1].item() == pytest.approx(-math.sin(100 * fast), abs=1e-4)
    yarn.reset()
    assert torch.equal(yarn.cos, before) and yarn.attn_scale == 0.1


def test_rotate_rejects_nothing_but_too_long_inputs():
    yarn = Yarn(8, max_seq_len=2)
    with pytest.raises(ValueError):
        yarn.rotary(torch.zeros(5, 1, 8))
    assert rotate(torch.zeros(3, 2, 8), yarn.cos, yarn.sin).shape == (3, 2, 8)
