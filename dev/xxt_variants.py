"""Variants of the a·aᵀ kernel on the attention bank (40, 768, 768): where xxt's time goes.

On the GPU machine, from the repository root (after `source dev/gpu_shim.sh`):

    python -P dev/xxt_variants.py        # plain matmul, triangle with and without the mirror, TMA
    python -P dev/xxt_variants.py --v2   # tile kinds: one-operand diagonal blocks, paired blocks
    python -P dev/xxt_variants.py --big  # 256x256 tiles, 8 or 16 warps
    python -P dev/xxt_variants.py --v4   # persistent flattened tile loops, register caps
    python -P dev/xxt_variants.py --ws WS=True,warps=4,stages=3   # one warp-specialised config

Each variant is checked against torch.bmm and timed as CUDA-graph replays (median); bmm is timed on the
stream, as in bench_kernels.py. Results of 2026-11-29 are in dev/LOG.md (Kernels, third session).
"""
import sys
import time

import torch
import triton
import triton.language as tl
from triton.testing import do_bench, do_bench_cudagraph

from speedtrace import kernels as K
from speedtrace.kernels.triton_symmetric import _tile_position, triangle_tiles


def _alloc(size, align, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


triton.set_allocator(_alloc)


@triton.jit
def _tile_ij(t, nb, FULL: tl.constexpr):
    if FULL:
        return t // nb, t % nb
    else:
        return _tile_position(t, 1)


@triton.jit
def _tma_tile(a_desc, o_desc, b, t, K, nb, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
              MIRROR: tl.constexpr, FULL: tl.constexpr, DIM3: tl.constexpr, M):
    bi, bj = _tile_ij(t, nb, FULL)
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        if DIM3:
            left = a_desc.load([b, bi * BLOCK, k]).reshape(BLOCK, BLOCK_K)
            right = a_desc.load([b, bj * BLOCK, k]).reshape(BLOCK, BLOCK_K)
        else:
            left = a_desc.load([b * M + bi * BLOCK, k])
            right = a_desc.load([b * M + bj * BLOCK, k])
        acc = tl.dot(left, right.T, acc)
    tile = acc.to(tl.bfloat16)
    if DIM3:
        o_desc.store([b, bi * BLOCK, bj * BLOCK], tile.reshape(1, BLOCK, BLOCK))
    else:
        o_desc.store([b * M + bi * BLOCK, bj * BLOCK], tile)
    if MIRROR:
        if bj < bi:
            if DIM3:
                o_desc.store([b, bj * BLOCK, bi * BLOCK], tile.T.reshape(1, BLOCK, BLOCK))
            else:
                o_desc.store([b * M + bj * BLOCK, bi * BLOCK], tile.T)


@triton.jit
def tma_xxt(a, out, n, M, K, tiles, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, MIRROR: tl.constexpr,
            FULL: tl.constexpr, PERSISTENT: tl.constexpr, FLATTEN: tl.constexpr, NPROG: tl.constexpr,
            DIM3: tl.constexpr):
    if DIM3:
        a_desc = tl.make_tensor_descriptor(a, [n, M, K], [M * K, K, 1], [1, BLOCK, BLOCK_K])
        o_desc = tl.make_tensor_descriptor(out, [n, M, M], [M * M, M, 1], [1, BLOCK, BLOCK])
    else:
        a_desc = tl.make_tensor_descriptor(a, [n * M, K], [K, 1], [BLOCK, BLOCK_K])
        o_desc = tl.make_tensor_descriptor(out, [n * M, M], [M, 1], [BLOCK, BLOCK])
    nb = tl.cdiv(M, BLOCK)
    if PERSISTENT:
        for t in tl.range(tl.program_id(0), tiles * n, NPROG, flatten=FLATTEN):
            _tma_tile(a_desc, o_desc, t // tiles, t % tiles, K, nb, BLOCK, BLOCK_K, MIRROR, FULL, DIM3, M)
    else:
        _tma_tile(a_desc, o_desc, tl.program_id(1), tl.program_id(0), K, nb, BLOCK, BLOCK_K, MIRROR, FULL,
                  DIM3, M)


@triton.jit
def ptr_xxt(a, out, M, K, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, MIRROR: tl.constexpr,
            FULL: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    a += b * M * K
    out += b * M * M
    bi, bj = _tile_ij(tl.program_id(0), tl.cdiv(M, BLOCK), FULL)
    rows = bi * BLOCK + tl.arange(0, BLOCK)
    cols = bj * BLOCK + tl.arange(0, BLOCK)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        left = tl.load(a + rows[:, None] * K + (k0 + ks)[None, :])
        right = tl.load(a + cols[:, None] * K + (k0 + ks)[None, :])
        acc = tl.dot(left, tl.trans(right), acc)
    tile = acc.to(tl.bfloat16)
    tl.store(out + rows[:, None] * M + cols[None, :], tile)
    if MIRROR:
        if bj < bi:
            tl.store(out + cols[:, None] * M + rows[None, :], tl.trans(tile))


def run_tma(a, out, BLOCK=128, BLOCK_K=64, MIRROR=True, FULL=False, PERSISTENT=False, FLATTEN=False,
            NPROG=132, DIM3=True, warps=8, stages=3):
    n, M, Kd = a.shape
    tiles = triton.cdiv(M, BLOCK) ** 2 if FULL else triangle_tiles(M, BLOCK)
    grid = (NPROG,) if PERSISTENT else (tiles, n)
    tma_xxt[grid](a, out, n, M, Kd, tiles, BLOCK=BLOCK, BLOCK_K=BLOCK_K, MIRROR=MIRROR, FULL=FULL,
                  PERSISTENT=PERSISTENT, FLATTEN=FLATTEN, NPROG=NPROG, DIM3=DIM3,
                  num_warps=warps, num_stages=stages)


def run_ptr(a, out, BLOCK=128, BLOCK_K=64, MIRROR=True, FULL=False, warps=8, stages=3):
    n, M, Kd = a.shape
    tiles = triton.cdiv(M, BLOCK) ** 2 if FULL else triangle_tiles(M, BLOCK)
    ptr_xxt[(tiles, n)](a, out, M, Kd, BLOCK=BLOCK, BLOCK_K=BLOCK_K, MIRROR=MIRROR, FULL=FULL,
                        num_warps=warps, num_stages=stages)


class Bench:
    """The attention bank's a, its float product, an output buffer and bmm's time on the stream."""

    def __init__(self):
        torch.manual_seed(0)
        self.a = torch.randn(40, 768, 768, dtype=torch.bfloat16, device="cuda") / 28
        self.ref = torch.bmm(self.a, self.a.mT)
        self.out = torch.empty_like(self.ref)
        self.bmm_us = self._bmm_us(do_bench)
        self.rows = []

    def _bmm_us(self, bench):
        return bench(lambda: torch.bmm(self.a, self.a.mT, out=self.out), rep=200, return_mode="median") * 1e3

    def references(self):
        cur = do_bench_cudagraph(lambda: K.xxt(self.a, self.out), rep=200, return_mode="median") * 1e3
        print(f"bmm stream {self.bmm_us:.1f} us  bmm graph {self._bmm_us(do_bench_cudagraph):.1f} us  "
              f"current xxt graph {cur:.1f} us ({cur / self.bmm_us:.3f}x)", flush=True)

    def check(self, fn) -> float:
        """Max abs error of one call of fn against the product (NaN-filled output first)."""
        self.out.fill_(float("nan"))
        fn()
        torch.cuda.synchronize()
        return (self.out.float() - self.ref.float()).abs().max().item()

    def trial(self, name, fn, check=True):
        t0 = time.time()
        try:
            if check:
                err = self.check(fn)
            else:
                fn()
                err = float("nan")
            us = do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e3
        except Exception as exc:  # noqa: BLE001
            print(f"{name:60s} FAILED {type(exc).__name__}: {str(exc)[:150]}", flush=True)
            return
        self.rows.append((us, name, err))
        print(f"{name:60s} {us:7.1f} us {us / self.bmm_us:.3f}x err {err:.2e} ({time.time() - t0:.1f}s)",
              flush=True)

    def best(self, n=8):
        print("\n==== best")
        for us, name, err in sorted(self.rows)[:n]:
            print(f"{name:60s} {us:7.1f} us {us / self.bmm_us:.3f}x err {err:.2e}")


def sweep_plain(b: Bench):
    a, out = b.a, b.out
    b.trial("ptr full (no triangle)", lambda: run_ptr(a, out, FULL=True))
    b.trial("ptr triangle no mirror", lambda: run_ptr(a, out, MIRROR=False), check=False)
    b.trial("ptr triangle mirror w8 s3", lambda: run_ptr(a, out))
    b.trial("tma full (no triangle)", lambda: run_tma(a, out, FULL=True))
    b.trial("tma triangle no mirror", lambda: run_tma(a, out, MIRROR=False), check=False)
    for dim3 in (True, False):
        for bk in (64, 128):
            for stages in (2, 3, 4):
                for warps in (4, 8):
                    if bk == 128 and stages == 4:
                        continue
                    b.trial(f"tma dim3={dim3} bk={bk} s={stages} w={warps}",
                            lambda bk=bk, stages=stages, warps=warps, dim3=dim3:
                            run_tma(a, out, BLOCK_K=bk, stages=stages, warps=warps, DIM3=dim3))
    for nprog in (132, 264):
        for flatten in (False, True):
            for stages in (3, 4):
                b.trial(f"tma persistent nprog={nprog} flatten={flatten} s={stages}",
                        lambda nprog=nprog, flatten=flatten, stages=stages:
                        run_tma(a, out, PERSISTENT=True, NPROG=nprog, FLATTEN=flatten, stages=stages))

def sweep_big(b: Bench):
    """256x256 tiles (3x3 blocks, 6 in the triangle): twice the operand reuse of 128x128 tiles,
    closer to cuBLAS's 192x192 tiles; 8 or 16 warps share the 256x256 fp32 accumulator."""
    a, out = b.a, b.out
    for warps in (8, 16):
        for bk, stages in ((64, 2), (64, 3), (32, 3), (32, 4)):
            cfg = dict(BLOCK=256, BLOCK_K=bk, warps=warps, stages=stages)
            name = f"256 bk={bk} s={stages} w={warps}"
            b.trial(f"ptr full {name}", lambda cfg=cfg: run_ptr(a, out, FULL=True, **cfg))
            b.trial(f"ptr triangle no mirror {name}", lambda cfg=cfg: run_ptr(a, out, MIRROR=False, **cfg),
                    check=False)
            b.trial(f"ptr triangle {name}", lambda cfg=cfg: run_ptr(a, out, **cfg))
            b.trial(f"tma triangle no mirror {name}", lambda cfg=cfg: run_tma(a, out, MIRROR=False, **cfg),
                    check=False)


# ---- v2: tile kinds from a table. kind 0: diagonal block (one operand, loaded once);
# kind 1: one off-diagonal block; kind 2: two neighbouring off-diagonal blocks of one block row.
@triton.jit
def _ld(a, a_desc, w_desc, row, k, K, ROWS: tl.constexpr, BLOCK_K: tl.constexpr, TMA: tl.constexpr,
        WIDE: tl.constexpr):
    if TMA:
        if WIDE:
            return w_desc.load([row, k])
        else:
            return a_desc.load([row, k])
    else:
        r = row.to(tl.int64) + tl.arange(0, ROWS)
        return tl.load(a + r[:, None] * K + (k + tl.arange(0, BLOCK_K))[None, :])


@triton.jit
def _st(out, o_desc, row, col, M, tile, BLOCK: tl.constexpr, TMA: tl.constexpr):
    if TMA:
        o_desc.store([row, col], tile)
    else:
        r = row.to(tl.int64) + tl.arange(0, BLOCK)
        c = col + tl.arange(0, BLOCK)
        tl.store(out + r[:, None] * M + c[None, :], tile)


@triton.jit
def _diag(a, a_desc, w_desc, out, o_desc, ri, bi, K, M, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
          TMA: tl.constexpr):
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        x = _ld(a, a_desc, w_desc, ri, k, K, BLOCK, BLOCK_K, TMA, False)
        acc = tl.dot(x, x.T, acc)
    _st(out, o_desc, ri, bi * BLOCK, M, acc.to(tl.bfloat16), BLOCK, TMA)


@triton.jit
def _single(a, a_desc, w_desc, out, o_desc, ri, rj, bi, bj, K, M, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
            TMA: tl.constexpr):
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        x = _ld(a, a_desc, w_desc, ri, k, K, BLOCK, BLOCK_K, TMA, False)
        y = _ld(a, a_desc, w_desc, rj, k, K, BLOCK, BLOCK_K, TMA, False)
        acc = tl.dot(x, y.T, acc)
    tile = acc.to(tl.bfloat16)
    _st(out, o_desc, ri, bj * BLOCK, M, tile, BLOCK, TMA)
    _st(out, o_desc, rj, bi * BLOCK, M, tile.T, BLOCK, TMA)


@triton.jit
def _pair(a, a_desc, w_desc, out, o_desc, ri, rj, bi, bj, K, M, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
          TMA: tl.constexpr):
    acc = tl.zeros((BLOCK, 2 * BLOCK), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        x = _ld(a, a_desc, w_desc, ri, k, K, BLOCK, BLOCK_K, TMA, False)
        y = _ld(a, a_desc, w_desc, rj, k, K, 2 * BLOCK, BLOCK_K, TMA, True)
        acc = tl.dot(x, y.T, acc)
    first, second = tl.split(tl.permute(tl.reshape(acc, (BLOCK, 2, BLOCK)), (0, 2, 1)))
    t0 = first.to(tl.bfloat16)
    t1 = second.to(tl.bfloat16)
    _st(out, o_desc, ri, bj * BLOCK, M, t0, BLOCK, TMA)
    _st(out, o_desc, rj, bi * BLOCK, M, t0.T, BLOCK, TMA)
    _st(out, o_desc, ri, (bj + 1) * BLOCK, M, t1, BLOCK, TMA)
    _st(out, o_desc, rj + BLOCK, bi * BLOCK, M, t1.T, BLOCK, TMA)


@triton.jit
def kinds_xxt(a, out, tab, n, M, K, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, TMA: tl.constexpr,
              BATCH_FAST: tl.constexpr):
    if BATCH_FAST:
        t = tl.program_id(1)
        b = tl.program_id(0)
    else:
        t = tl.program_id(0)
        b = tl.program_id(1)
    code = tl.load(tab + t)
    kind = code & 3
    bi = (code >> 2) & 0xFFF
    bj = code >> 14
    if TMA:
        a_desc = tl.make_tensor_descriptor(a, [n * M, K], [K, 1], [BLOCK, BLOCK_K])
        w_desc = tl.make_tensor_descriptor(a, [n * M, K], [K, 1], [2 * BLOCK, BLOCK_K])
        o_desc = tl.make_tensor_descriptor(out, [n * M, M], [M, 1], [BLOCK, BLOCK])
    else:
        a_desc = a
        w_desc = a
        o_desc = out
    base = b * M
    ri = base + bi * BLOCK
    rj = base + bj * BLOCK
    if kind == 0:
        _diag(a, a_desc, w_desc, out, o_desc, ri, bi, K, M, BLOCK, BLOCK_K, TMA)
    elif kind == 1:
        _single(a, a_desc, w_desc, out, o_desc, ri, rj, bi, bj, K, M, BLOCK, BLOCK_K, TMA)
    else:
        _pair(a, a_desc, w_desc, out, o_desc, ri, rj, bi, bj, K, M, BLOCK, BLOCK_K, TMA)


def kinds_table(nb, pairs=True, heavy_first=True, device="cuda"):
    tiles = []
    for i in range(nb):
        j = 0
        while j < i:
            if pairs and j + 1 < i:
                tiles.append((2, i, j))
                j += 2
            else:
                tiles.append((1, i, j))
                j += 1
        tiles.append((0, i, i))
    if heavy_first:
        tiles.sort(key=lambda x: -x[0])
    codes = [kind | (i << 2) | (j << 14) for kind, i, j in tiles]
    return torch.tensor(codes, dtype=torch.int32, device=device)


def run_kinds(a, out, tab, BLOCK=128, BLOCK_K=64, TMA=True, BATCH_FAST=False, warps=8, stages=3):
    n, M, Kd = a.shape
    grid = (n, len(tab)) if BATCH_FAST else (len(tab), n)
    kinds_xxt[grid](a, out, tab, n, M, Kd, BLOCK=BLOCK, BLOCK_K=BLOCK_K, TMA=TMA, BATCH_FAST=BATCH_FAST,
                    num_warps=warps, num_stages=stages)


def sweep_kinds(b: Bench):
    a, out = b.a, b.out
    for pairs in (False, True):
        for heavy in ((False, True) if pairs else (False,)):
            tab = kinds_table(6, pairs, heavy)
            for tma in (True, False):
                for warps, stages in ((8, 3), (8, 4), (4, 3), (8, 2)):
                    if pairs and warps == 4:
                        continue
                    for bf in ((False, True) if (warps, stages) == (8, 3) else (False,)):
                        b.trial(f"kinds pairs={pairs} heavy={heavy} tma={tma} w{warps} s{stages} bf={bf}",
                                lambda tab=tab, tma=tma, bf=bf, warps=warps, stages=stages:
                                run_kinds(a, out, tab, TMA=tma, BATCH_FAST=bf, warps=warps, stages=stages))


# ---- v4: persistent programs over the triangle tiles of every matrix, with the tile loop flattened
# into the reduction loop (the next tile's loads start while this one's epilogue runs), a table
# giving each tile its rows; and register caps that let two programs share an SM.
@triton.jit
def flat_xxt(a, out, tab, n_tiles, rows_total, M, K, NPROG: tl.constexpr, BLOCK: tl.constexpr,
             BLOCK_K: tl.constexpr, FLATTEN: tl.constexpr, MIRROR: tl.constexpr):
    a_desc = tl.make_tensor_descriptor(a, [rows_total, K], [K, 1], [BLOCK, BLOCK_K])
    o_desc = tl.make_tensor_descriptor(out, [rows_total, M], [M, 1], [BLOCK, BLOCK])
    k_tiles = tl.cdiv(K, BLOCK_K)
    for t in tl.range(tl.program_id(0), n_tiles, NPROG, flatten=FLATTEN):
        code = tl.load(tab + t)
        base = code >> 6
        bi = (code >> 3) & 7
        bj = code & 7
        acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
        for ki in range(k_tiles):
            left = a_desc.load([base + bi * BLOCK, ki * BLOCK_K])
            right = a_desc.load([base + bj * BLOCK, ki * BLOCK_K])
            acc = tl.dot(left, right.T, acc)
        tile = acc.to(tl.bfloat16)
        o_desc.store([base + bi * BLOCK, bj * BLOCK], tile)
        if MIRROR:
            if bj < bi:
                o_desc.store([base + bj * BLOCK, bi * BLOCK], tile.T)


def flat_table(n, M, BLOCK, device="cuda"):
    """One int32 per tile: (matrix's first row) << 6 | block row << 3 | block column, matrix-major."""
    nb = M // BLOCK
    codes = [((b * M) << 6) | (i << 3) | j for b in range(n) for i in range(nb) for j in range(i + 1)]
    return torch.tensor(codes, dtype=torch.int32, device=device)


def run_flat(a, out, tab, NPROG=132, BLOCK=128, BLOCK_K=64, FLATTEN=True, MIRROR=True, warps=8, stages=3,
             maxnreg=None):
    n, M, Kd = a.shape
    extra = {} if maxnreg is None else {"maxnreg": maxnreg}
    return flat_xxt[(NPROG,)](a, out, tab, tab.numel(), n * M, M, Kd, NPROG=NPROG, BLOCK=BLOCK,
                              BLOCK_K=BLOCK_K, FLATTEN=FLATTEN, MIRROR=MIRROR, num_warps=warps,
                              num_stages=stages, **extra)


def occupancy(kernel, warps) -> str:
    """Registers, spills, shared memory and how many programs fit on one H200 SM."""
    try:
        regs, spills, smem = kernel.n_regs, kernel.n_spills, kernel.metadata.shared
    except AttributeError:
        return "occupancy n/a"
    by_regs = 65536 // max(1, regs * 32 * warps)
    by_smem = (227 * 1024) // max(1, smem + 1024)
    return f"regs {regs} spills {spills} smem {smem // 1024} KiB -> {min(by_regs, by_smem)} per SM"


def sweep_v4(b: Bench, budget_s: float = 200.0):
    """Most telling variants first; no new variant starts after ``budget_s`` seconds."""
    a, out = b.a, b.out
    n, M, _ = a.shape
    tab = flat_table(n, M, 128)
    assert tab.numel() == n * triangle_tiles(M, 128)

    def ptr(warps, stages, maxnreg=None):
        extra = {} if maxnreg is None else {"maxnreg": maxnreg}
        return ptr_xxt[(triangle_tiles(M, 128), n)](a, out, M, M, BLOCK=128, BLOCK_K=64, MIRROR=True,
                                                     FULL=False, num_warps=warps, num_stages=stages, **extra)

    def flat(**kw):
        return lambda: run_flat(a, out, tab, **kw)

    trials = [
        ("ptr triangle mirror w8 s3 (shipped shape)", lambda: ptr(8, 3), 8),
        ("ptr triangle mirror w8 s3 maxnreg=128", lambda: ptr(8, 3, 128), 8),
        ("ptr triangle mirror w4 s3", lambda: ptr(4, 3), 4),
        ("flat nprog=132 flatten w8 s3", flat(), 8),
        ("flat nprog=264 flatten w8 s3", flat(NPROG=264), 8),
        ("flat nprog=132 unflattened w8 s3", flat(FLATTEN=False), 8),
        ("flat nprog=264 flatten w8 s3 maxnreg=128", flat(NPROG=264, maxnreg=128), 8),
        ("flat nprog=132 flatten w8 s4", flat(stages=4), 8),
        ("flat nprog=264 flatten w4 s3", flat(NPROG=264, warps=4), 4),
        ("flat nprog=132 flatten w8 s2 bk=128", flat(stages=2, BLOCK_K=128), 8),
        ("tma 2-D persistent flatten FULL (core rate) s3",
         lambda: run_tma(a, out, FULL=True, PERSISTENT=True, FLATTEN=True, DIM3=False), 8),
        ("tma 2-D persistent flatten triangle s3",
         lambda: run_tma(a, out, PERSISTENT=True, FLATTEN=True, DIM3=False), 8),
        ("flat nprog=264 flatten w8 s4", flat(NPROG=264, stages=4), 8),
        ("flat nprog=264 flatten w4 s4", flat(NPROG=264, warps=4, stages=4), 4),
    ]
    t0 = time.time()
    for name, fn, warps in trials:
        if time.time() - t0 > budget_s:
            print(f"budget of {budget_s:.0f}s spent: {name} and later variants not run", flush=True)
            break
        b.trial(name, fn)
        try:
            print("    " + occupancy(fn(), warps), flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"    occupancy: {type(exc).__name__}", flush=True)
    b.trial("flat nprog=132 flatten w8 s3, no mirror", flat(MIRROR=False), check=False)


# ---- v3: warp-specialised reduction loop (a producer warp feeds TMA loads to the MMA warps).
@triton.jit
def ws_xxt(a, out, n, M, K, tiles, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, WS: tl.constexpr,
           PERSISTENT: tl.constexpr, NPROG: tl.constexpr):
    a_desc = tl.make_tensor_descriptor(a, [n * M, K], [K, 1], [BLOCK, BLOCK_K])
    o_desc = tl.make_tensor_descriptor(out, [n * M, M], [M, 1], [BLOCK, BLOCK])
    if PERSISTENT:
        for t in tl.range(tl.program_id(0), tiles * n, NPROG, warp_specialize=WS):
            _ws_tile(a_desc, o_desc, t // tiles, t % tiles, M, K, BLOCK, BLOCK_K, False)
    else:
        _ws_tile(a_desc, o_desc, tl.program_id(1), tl.program_id(0), M, K, BLOCK, BLOCK_K, WS)


@triton.jit
def _ws_tile(a_desc, o_desc, b, t, M, K, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr, WS: tl.constexpr):
    bi, bj = _tile_position(t, 1)
    ri = b * M + bi * BLOCK
    rj = b * M + bj * BLOCK
    acc = tl.zeros((BLOCK, BLOCK), dtype=tl.float32)
    for k in tl.range(0, K, BLOCK_K, warp_specialize=WS):
        acc = tl.dot(a_desc.load([ri, k]), a_desc.load([rj, k]).T, acc)
    tile = acc.to(tl.bfloat16)
    o_desc.store([ri, bj * BLOCK], tile)
    if bj < bi:
        o_desc.store([rj, bi * BLOCK], tile.T)


def run_ws(a, out, BLOCK=128, BLOCK_K=64, WS=True, PERSISTENT=False, NPROG=132, warps=4, stages=3):
    n, M, Kd = a.shape
    tiles = triangle_tiles(M, BLOCK)
    grid = (NPROG,) if PERSISTENT else (tiles, n)
    ws_xxt[grid](a, out, n, M, Kd, tiles, BLOCK=BLOCK, BLOCK_K=BLOCK_K, WS=WS, PERSISTENT=PERSISTENT,
                 NPROG=NPROG, num_warps=warps, num_stages=stages)


def one_ws(spec: str, compile_only: bool = False):
    """Time one v3 configuration (run in its own process, so that a compile that hangs is cut off);
    ``compile_only`` compiles and checks it (several can compile side by side, then time one by one)."""
    kw = dict(item.split("=") for item in spec.split(","))
    kw = {k: (v == "True" if v in ("True", "False") else int(v)) for k, v in kw.items()}
    b = Bench()
    t0 = time.time()
    err = b.check(lambda: run_ws(b.a, b.out, **kw))
    if compile_only:
        print(f"compiled {spec}: err {err:.2e} in {time.time() - t0:.1f}s", flush=True)
        return 0
    us = do_bench_cudagraph(lambda: run_ws(b.a, b.out, **kw), rep=100, return_mode="median") * 1e3
    print(f"ws {spec:50s} {us:7.1f} us {us / b.bmm_us:.3f}x bmm ({b.bmm_us:.1f}) err {err:.2e} "
          f"compile+run {time.time() - t0:.1f}s", flush=True)
    return 0

def main():
    if "--ws" in sys.argv:
        return one_ws(sys.argv[sys.argv.index("--ws") + 1], "--compile-only" in sys.argv)
    b = Bench()
    b.references()
    sweep = {"--v2": sweep_kinds, "--big": sweep_big, "--v4": sweep_v4}
    next((f for flag, f in sweep.items() if flag in sys.argv), sweep_plain)(b)
    b.best()
    return 0


if __name__ == "__main__":
    sys.exit(main())
