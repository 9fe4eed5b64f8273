"""The run-time stand-ins of benchmarks/anchor_trainer.py (the original trainer's harness), on CPU:
the FlashAttention-3 replacement against brute-force attention, the fp32 patch of the CE kernels,
and patched source that inspect (and so Triton's JIT) reads back."""

import inspect
import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import anchor_trainer as A  # noqa: E402


def _brute_attention(q, k, v, cu, window, scale):
    """Softmax attention with the FA3 varlen semantics, by loops: causal, i - j <= window, same document."""
    length = q.shape[0]
    doc = [max(d for d in range(len(cu)) if cu[d] <= i) for i in range(length)]
    out = torch.zeros_like(q)
    for i in range(length):
        keys = [j for j in range(i + 1) if i - j <= window and doc[j] == doc[i]]
        for h in range(q.shape[1]):
            s = torch.stack([q[i, h] @ k[j, h] for j in keys]) * scale
            p = torch.softmax(s, 0)
            out[i, h] = sum(p[n] * v[j, h] for n, j in enumerate(keys))
    return out


@pytest.mark.parametrize("paired", [False, True])
def test_varlen_stand_in_matches_brute_force(paired):
    # As the original calls FA3: q (L, H, D), cu_seqlens padded with T (doubled on a paired stream
    # of 2T slots), window (W, 0), causal.
    torch.manual_seed(3)
    cu = torch.tensor([0, 21, 90, 150, 160, 160], dtype=torch.int32)
    length, window = (320, 40) if paired else (160, 40)
    seqlens = 2 * cu if paired else cu
    q, k, v = (torch.randn(length, 2, 8) for _ in range(3))
    fn = A.make_varlen_attention()
    with warnings.catch_warnings(), torch.no_grad():   # flex_attention's CPU path warns; no backward here
        warnings.simplefilter("ignore")
        y = fn(q, k, v, cu_seqlens_q=seqlens, cu_seqlens_k=seqlens, max_seqlen_q=length, max_seqlen_k=length,
               causal=True, softmax_scale=0.3, window_size=(window, 0))
    assert y.shape == q.shape
    torch.testing.assert_close(y, _brute_attention(q, k, v, seqlens.tolist(), window, 0.3), atol=1e-5, rtol=1e-5)


KERNELS = '''import triton.language as tl

def fused_softcapped_entropy_fwd_kernel(
    logits_ptr, n_rows,
    A, B, C,
    BLOCK_SIZE: tl.constexpr
):
    return A * B / C

def fused_softcapped_entropy_bwd_kernel(
    grad_ptr, A, B, C,
    grad_s,
    BLOCK_SIZE: tl.constexpr
):
    return grad_s
'''


def test_ce_kernels_cast_their_float_arguments():
    patched = A.patch_ce_kernels(KERNELS)
    fwd, bwd = patched.split("def fused_softcapped_entropy_bwd_kernel")
    assert [line.strip() for line in fwd.splitlines() if "tl.cast" in line] == [
        "A = tl.cast(A, tl.float32)", "B = tl.cast(B, tl.float32)", "C = tl.cast(C, tl.float32)"]
    assert "grad_s = tl.cast(grad_s, tl.float32)" in bwd
    # the casts come first in the body, before the first statement of the original
    assert bwd.index("grad_s = tl.cast") < bwd.index("return grad_s")
    with pytest.raises(SystemExit, match="fused_softcapped_entropy_fwd_kernel"):
        A.patch_ce_kernels(KERNELS.replace("fwd_kernel", "forward"))


def test_patched_module_source_is_what_inspect_reads(tmp_path):
    # Triton's JIT takes a kernel's text from inspect: it must get the patched text, not the file.
    name = "anchor_patch_probe"
    module = A.module_from_source(name, "def f(x):\n    y = x * 2\n    return y\n",
                                  f"{tmp_path}/probe.py (patched in memory)")
    try:
        assert module.f(3) == 6
        assert "y = x * 2" in inspect.getsource(module.f)
    finally:
        sys.modules.pop(name, None)


def test_help_names_the_fetch_commands(capsys):
    with pytest.raises(SystemExit):
        A.main(["--help"])
    out = capsys.readouterr().out
    assert "git -C mng-record checkout 20dd1582" in out and "699e93c8" in out
