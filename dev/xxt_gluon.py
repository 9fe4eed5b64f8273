"""a·aᵀ on the attention bank (40, 768, 768) written in Gluon, Triton's lower-level dialect.

Triton 3.6's ``tl.dot`` pipeline reaches ~70% of cuBLAS's per-tile rate at a reduction depth of
768 (dev/LOG.md, Kernels, third session), too little for the triangle of 21 of 36 tiles
to beat 0.8× bmm. Gluon exposes what that pipeline hides: persistent programs that walk a table
of lower-triangle tiles, TMA loads kept NUM_BUF - 1 steps ahead of the asynchronous warpgroup
MMAs across tile boundaries (the next tile's loads are in flight during this tile's epilogue),
and TMA stores of each tile and its mirror that complete while the next tile computes.

On the GPU machine (after `source dev/gpu_shim.sh`):

    python -P dev/xxt_gluon.py                          # check against bmm, time CONFIGS
    python -P dev/xxt_gluon.py --configs "64,4,0,1;64,5,0,1"   # chosen configurations

A configuration is "BLOCK_K,NUM_BUF,programs,IN_FLIGHT,PAIR,EPI" (see CONFIGS). Results are in
dev/LOG.md (Kernels, eighth session). Only IN_FLIGHT = 0 with PAIR = 1 has run on a GPU;
the rest compile for sm_90 with Triton 3.6 but are untimed.
"""
from __future__ import annotations

import sys
import time

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

BLOCK = 128


@gluon.jit
def _tile_at(tab, tile):
    """(first row of the matrix, block row, first block column) of table entry ``tile``."""
    code = gl.load(tab + tile)
    return code >> 6, (code >> 3) & 7, code & 7


@gluon.jit
def _my_share(n_tiles, K, BLOCK_K: gl.constexpr):
    """This program's tiles are pid, pid + nprog, ...: (pid, nprog, slabs a tile, tiles, steps)."""
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    k_steps = K // BLOCK_K
    my_tiles = (n_tiles - pid + nprog - 1) // nprog
    return pid, nprog, k_steps, my_tiles, my_tiles * k_steps


@gluon.jit
def _load_barriers(NUM_BUF: gl.constexpr):
    bars = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(NUM_BUF):
        mbarrier.init(bars.index(s), count=1)
    return bars


@gluon.jit
def _finish(bars, NUM_BUF: gl.constexpr):
    """Wait for the last stores; retire the barriers."""
    tma.store_wait(pendings=0)
    for s in gl.static_range(NUM_BUF):
        mbarrier.invalidate(bars.index(s))


@gluon.jit
def _issue_load(g, total, k_steps, tab, pid, nprog, a_desc, b_desc, bars, a_bufs, b_bufs,
                BLOCK: gl.constexpr, BLOCK_K: gl.constexpr, NUM_BUF: gl.constexpr):
    """Start the TMA loads of this program's flat step g (tile g // k_steps, slab g % k_steps)."""
    pred = g < total
    base, bi, bj = _tile_at(tab, pid + gl.minimum(g // k_steps, (total - 1) // k_steps) * nprog)
    k = (g % k_steps) * BLOCK_K
    slot = g % NUM_BUF
    bar = bars.index(slot)
    mbarrier.expect(bar, a_desc.block_type.nbytes + b_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(a_desc, [base + bi * BLOCK, k], bar, a_bufs.index(slot), pred)
    tma.async_copy_global_to_shared(b_desc, [base + bj * BLOCK, k], bar, b_bufs.index(slot), pred)


@gluon.jit
def _consume(g, total, k_steps, tab, pid, nprog, a_desc, bars, a_bufs, b_bufs, acc, use_acc,
             BLOCK: gl.constexpr, BLOCK_K: gl.constexpr, NUM_BUF: gl.constexpr, IN_FLIGHT: gl.constexpr):
    """Issue the MMA of flat step g once its slabs have landed, then the loads of step g + NUM_BUF - 1.

    IN_FLIGHT = 0 waits for the previous MMA before issuing this one; 1 issues this one first and
    then waits for the previous, so the tensor cores always have the next MMA queued. Either way the
    previous MMA is done before its slot (the one the next load fills) is reused.
    """
    slot = g % NUM_BUF
    mbarrier.wait(bars.index(slot), (g // NUM_BUF) & 1)
    if IN_FLIGHT == 0:
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    acc = warpgroup_mma(a_bufs.index(slot), b_bufs.index(slot).permute((1, 0)), acc, use_acc=use_acc,
                        is_async=True)
    if IN_FLIGHT == 1:
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc, ))
    _issue_load(g + NUM_BUF - 1, total, k_steps, tab, pid, nprog, a_desc, a_desc, bars, a_bufs, b_bufs,
                BLOCK, BLOCK_K, NUM_BUF)
    return acc


@gluon.jit
def gluon_xxt_kernel(a_desc, o_desc, tab, n_tiles, K, BLOCK_K: gl.constexpr, NUM_BUF: gl.constexpr,
                     IN_FLIGHT: gl.constexpr,
                     num_warps: gl.constexpr):
    BLOCK: gl.constexpr = o_desc.block_type.shape[0]
    dtype: gl.constexpr = a_desc.dtype
    pid, nprog, k_steps, my_tiles, total = _my_share(n_tiles, K, BLOCK_K)

    a_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK, BLOCK_K], a_desc.layout)
    b_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK, BLOCK_K], a_desc.layout)
    c_smem = gl.allocate_shared_memory(dtype, [BLOCK, BLOCK], o_desc.layout)
    ct_smem = gl.allocate_shared_memory(dtype, [BLOCK, BLOCK], o_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(NUM_BUF):
        mbarrier.init(bars.index(s), count=1)

    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, BLOCK, 16])
    acc = gl.zeros((BLOCK, BLOCK), dtype=gl.float32, layout=mma_layout)

    # Loads run NUM_BUF - 1 steps ahead of the MMAs, across tile boundaries.
    for ahead in gl.static_range(NUM_BUF - 1):
        _issue_load(ahead, total, k_steps, tab, pid, nprog, a_desc, a_desc, bars, a_bufs, b_bufs, BLOCK, BLOCK_K,
                    NUM_BUF)

    for t in range(my_tiles):
        base, bi, bj = _tile_at(tab + pid, t * nprog)
        # The first slab starts a fresh accumulator; acc is a pending-MMA token from here on.
        g = t * k_steps
        acc = _consume(g, total, k_steps, tab, pid, nprog, a_desc, bars, a_bufs, b_bufs, acc, False,
                       BLOCK, BLOCK_K, NUM_BUF, IN_FLIGHT)
        for kk in range(1, k_steps):
            acc = _consume(g + kk, total, k_steps, tab, pid, nprog, a_desc, bars, a_bufs, b_bufs, acc, True,
                           BLOCK, BLOCK_K, NUM_BUF, IN_FLIGHT)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        c = acc.to(dtype)
        # The previous tile's stores read c_smem and ct_smem until they complete.
        tma.store_wait(pendings=0)
        c_smem.store(c)
        if bj < bi:
            ct_smem.store(gl.permute(c, (1, 0)))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [base + bi * BLOCK, bj * BLOCK], c_smem)
        if bj < bi:
            tma.async_copy_shared_to_global(o_desc, [base + bj * BLOCK, bi * BLOCK], ct_smem)
    tma.store_wait(pendings=0)
    for s in gl.static_range(NUM_BUF):
        mbarrier.invalidate(bars.index(s))


# ---- pairs: a program computes blocks (i, j) and (i, j + 1) from one A slab and one B slab two
# blocks tall (12 programs' worth of work per matrix instead of 21, each twice as large), with two
# 128×128 accumulators. A pair's block above the diagonal (j + 1 > i) is computed and dropped.
@gluon.jit
def _consume_pair(g, total, k_steps, tab, pid, nprog, a_desc, b_desc, bars, a_bufs, b_bufs, acc0, acc1,
                  use_acc, BLOCK: gl.constexpr, BLOCK_K: gl.constexpr, NUM_BUF: gl.constexpr,
                  IN_FLIGHT: gl.constexpr):
    """_consume for a pair: two MMAs a step (so IN_FLIGHT = 1 leaves two outstanding)."""
    slot = g % NUM_BUF
    mbarrier.wait(bars.index(slot), (g // NUM_BUF) & 1)
    if IN_FLIGHT == 0:
        acc0, acc1 = warpgroup_mma_wait(num_outstanding=0, deps=(acc0, acc1))
    a = a_bufs.index(slot)
    b = b_bufs.index(slot)
    acc0 = warpgroup_mma(a, b.slice(0, BLOCK).permute((1, 0)), acc0, use_acc=use_acc, is_async=True)
    acc1 = warpgroup_mma(a, b.slice(BLOCK, BLOCK).permute((1, 0)), acc1, use_acc=use_acc, is_async=True)
    if IN_FLIGHT == 1:
        acc0, acc1 = warpgroup_mma_wait(num_outstanding=2, deps=(acc0, acc1))
    _issue_load(g + NUM_BUF - 1, total, k_steps, tab, pid, nprog, a_desc, b_desc, bars, a_bufs, b_bufs,
                BLOCK, BLOCK_K, NUM_BUF)
    return acc0, acc1


@gluon.jit
def _store_block(c, c_smem, ct_smem, o_desc, base, bi, bc, BLOCK: gl.constexpr):
    """Store block (bi, bc) and its mirror; a block above the diagonal is dropped."""
    if bc <= bi:
        c_smem.store(c)
        if bc < bi:
            ct_smem.store(gl.permute(c, (1, 0)))
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [base + bi * BLOCK, bc * BLOCK], c_smem)
        if bc < bi:
            tma.async_copy_shared_to_global(o_desc, [base + bc * BLOCK, bi * BLOCK], ct_smem)


@gluon.jit
def gluon_xxt_pair_kernel(a_desc, b_desc, o_desc, tab, n_tiles, K, BLOCK_K: gl.constexpr,
                          NUM_BUF: gl.constexpr, IN_FLIGHT: gl.constexpr, EPI: gl.constexpr,
                          num_warps: gl.constexpr):
    """EPI = 2 gives each block of the pair its own epilogue buffers; 1 shares one set, waiting
    for the first block's stores before the second block's (less shared memory)."""
    BLOCK: gl.constexpr = o_desc.block_type.shape[0]
    dtype: gl.constexpr = a_desc.dtype
    pid, nprog, k_steps, my_tiles, total = _my_share(n_tiles, K, BLOCK_K)

    a_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF, BLOCK, BLOCK_K], a_desc.layout)
    b_bufs = gl.allocate_shared_memory(dtype, [NUM_BUF, 2 * BLOCK, BLOCK_K], b_desc.layout)
    c_smem = gl.allocate_shared_memory(dtype, [EPI, BLOCK, BLOCK], o_desc.layout)
    ct_smem = gl.allocate_shared_memory(dtype, [EPI, BLOCK, BLOCK], o_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [NUM_BUF, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(NUM_BUF):
        mbarrier.init(bars.index(s), count=1)

    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, BLOCK, 16])
    acc0 = gl.zeros((BLOCK, BLOCK), dtype=gl.float32, layout=mma_layout)
    acc1 = gl.zeros((BLOCK, BLOCK), dtype=gl.float32, layout=mma_layout)

    for ahead in gl.static_range(NUM_BUF - 1):
        _issue_load(ahead, total, k_steps, tab, pid, nprog, a_desc, b_desc, bars, a_bufs, b_bufs, BLOCK, BLOCK_K,
                    NUM_BUF)

    for t in range(my_tiles):
        base, bi, bj = _tile_at(tab + pid, t * nprog)
        g = t * k_steps
        acc0, acc1 = _consume_pair(g, total, k_steps, tab, pid, nprog, a_desc, b_desc, bars, a_bufs, b_bufs,
                                   acc0, acc1, False, BLOCK, BLOCK_K, NUM_BUF, IN_FLIGHT)
        for kk in range(1, k_steps):
            acc0, acc1 = _consume_pair(g + kk, total, k_steps, tab, pid, nprog, a_desc, b_desc, bars, a_bufs,
                                       b_bufs, acc0, acc1, True, BLOCK, BLOCK_K, NUM_BUF, IN_FLIGHT)
        acc0, acc1 = warpgroup_mma_wait(num_outstanding=0, deps=(acc0, acc1))
        tma.store_wait(pendings=0)
        _store_block(acc0.to(dtype), c_smem.index(0), ct_smem.index(0), o_desc, base, bi, bj, BLOCK)
        if EPI == 1:
            tma.store_wait(pendings=0)
        _store_block(acc1.to(dtype), c_smem.index(EPI - 1), ct_smem.index(EPI - 1), o_desc, base, bi, bj + 1,
                     BLOCK)
    tma.store_wait(pendings=0)
    for s in gl.static_range(NUM_BUF):
        mbarrier.invalidate(bars.index(s))


def tile_table(n: int, side: int, device, pair: int = 1) -> torch.Tensor:
    """One int32 per program's tile, matrix-major: first row << 6 | block row << 3 | first block column.

    pair = 2: tiles of two neighbouring blocks of a block row, so block row i has i // 2 + 1 tiles.
    """
    nb = side // BLOCK
    assert side % (BLOCK * pair) == 0 and nb <= 8 and n * side < 2 ** 25
    codes = [((b * side) << 6) | (i << 3) | j for b in range(n) for i in range(nb) for j in range(0, i + 1, pair)]
    return torch.tensor(codes, dtype=torch.int32, device=device)


def gluon_xxt(a: torch.Tensor, out: torch.Tensor, tab: torch.Tensor, BLOCK_K=64, NUM_BUF=4, num_warps=8,
              nprog=None, IN_FLIGHT=0, PAIR=1, EPI=1):
    """out = a·aᵀ over the tiles of ``tab`` (``tile_table(..., pair=PAIR)``)."""
    n, side, depth = a.shape
    assert depth % BLOCK_K == 0
    a_layout = gl.NVMMASharedLayout.get_default_for([BLOCK, BLOCK_K], gl.bfloat16)
    o_layout = gl.NVMMASharedLayout.get_default_for([BLOCK, BLOCK], gl.bfloat16)
    rows = a.view(n * side, depth)
    a_desc = TensorDescriptor.from_tensor(rows, [BLOCK, BLOCK_K], a_layout)
    o_desc = TensorDescriptor.from_tensor(out.view(n * side, side), [BLOCK, BLOCK], o_layout)
    tiles = tab.numel()
    grid = (min(tiles, nprog or torch.cuda.get_device_properties(a.device).multi_processor_count), )
    if PAIR == 1:
        return gluon_xxt_kernel[grid](a_desc, o_desc, tab, tiles, depth, BLOCK_K=BLOCK_K, NUM_BUF=NUM_BUF,
                                      IN_FLIGHT=IN_FLIGHT, num_warps=num_warps)
    b_layout = gl.NVMMASharedLayout.get_default_for([2 * BLOCK, BLOCK_K], gl.bfloat16)
    b_desc = TensorDescriptor.from_tensor(rows, [2 * BLOCK, BLOCK_K], b_layout)
    return gluon_xxt_pair_kernel[grid](a_desc, b_desc, o_desc, tab, tiles, depth, BLOCK_K=BLOCK_K,
                                       NUM_BUF=NUM_BUF, IN_FLIGHT=IN_FLIGHT, EPI=EPI, num_warps=num_warps)


# "BLOCK_K,NUM_BUF,programs,IN_FLIGHT,PAIR,EPI" (0 programs: one per SM; PAIR and EPI default to 1).
# Shared memory limits pairs: NUM_BUF slabs of 3·128·BLOCK_K bf16 plus EPI·64 KiB must fit 227 KiB.
CONFIGS = ("64,4,0,1", "64,5,0,1", "64,4,0,0", "32,4,0,1,2,1", "32,3,0,1,2,2", "64,3,0,1,2,1", "32,5,0,1,2,1",
           "64,3,0,0,2,1", "64,5,120,1")


def _setup():
    torch.manual_seed(0)
    a = torch.randn(40, 768, 768, dtype=torch.bfloat16, device="cuda") / 28
    return a, torch.bmm(a, a.mT)


def one(spec: str) -> int:
    """Check and time one configuration (see CONFIGS)."""
    from triton.testing import do_bench_cudagraph

    bk, nbuf, nprog, flight, pair, epi = ([int(x) for x in spec.split(",")] + [1, 1])[:6]
    a, ref = _setup()
    tab = tile_table(40, 768, "cuda", pair)
    out = torch.full_like(ref, float("nan"))
    t0 = time.time()
    run = lambda: gluon_xxt(a, out, tab, BLOCK_K=bk, NUM_BUF=nbuf, nprog=nprog or None,  # noqa: E731
                            IN_FLIGHT=flight, PAIR=pair, EPI=epi)
    run()
    torch.cuda.synchronize()
    err = (out.float() - ref.float()).abs().max().item()
    us = do_bench_cudagraph(run, rep=100, return_mode="median") * 1e3
    print(f"RESULT {spec} {us:.2f} {err:.3e} {time.time() - t0:.1f}", flush=True)
    return 0


def main() -> int:
    """Each configuration in its own process with a time limit (a barrier bug would hang it)."""
    import subprocess

    from triton.testing import do_bench, do_bench_cudagraph

    from speedtrace import kernels as K

    a, ref = _setup()
    out = torch.empty_like(ref)
    bmm_us = do_bench(lambda: torch.bmm(a, a.mT, out=out), rep=200, return_mode="median") * 1e3
    shipped_us = do_bench_cudagraph(lambda: K.xxt(a, out), rep=200, return_mode="median") * 1e3
    print(f"bmm (stream) {bmm_us:.1f} us, target <= {0.8 * bmm_us:.1f} us; shipped xxt (graph) "
          f"{shipped_us:.1f} us ({shipped_us / bmm_us:.3f}x)", flush=True)
    rows = []
    for spec in sys.argv[sys.argv.index("--configs") + 1].split(";") if "--configs" in sys.argv else CONFIGS:
        try:
            r = subprocess.run([sys.executable, "-P", __file__, "--one", spec], capture_output=True, text=True,
                               timeout=90)
            found = [line for line in r.stdout.splitlines() if line.startswith("RESULT")]
            if not found:
                print(f"{spec:12s} FAILED rc={r.returncode}: {(r.stderr or r.stdout)[-600:]}", flush=True)
                continue
            _, _, us, err, secs = found[0].split()
        except subprocess.TimeoutExpired:
            print(f"{spec:12s} TIMED OUT (90 s)", flush=True)
            continue
        us, err = float(us), float(err)
        rows.append((us, spec, err))
        print(f"gluon {spec:14s} {us:7.1f} us {us / bmm_us:.3f}x bmm  max err {err:.2e} "
              f"({secs}s)", flush=True)
    print(f"\n==== bmm {bmm_us:.1f} us, shipped xxt {shipped_us:.1f} us; Gluon, best first")
    for us, spec, err in sorted(rows):
        print(f"gluon {spec:14s} {us:7.1f} us {us / bmm_us:.3f}x bmm  max err {err:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(one(sys.argv[2]) if sys.argv[1:2] == ["--one"] else main())
