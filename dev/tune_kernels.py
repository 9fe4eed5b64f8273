"""Sweep the launch configurations of the Triton kernels at the trainer's shapes, on one GPU.

    python dev/tune_kernels.py [--budget-s 270] [--only xxt,transpose_add] [--top 6]

For each case (kernel at one shape) every candidate configuration is run once on a NaN-filled
output and checked against torch (largest error relative to the largest reference value; a
candidate that fails to compile, errs or misses a tile is reported and skipped), then timed with
``triton.testing.do_bench`` (median; L2 flushed before each repetition). Printed per case: the
fastest candidates, and last a summary that re-times the shipped default configurations beside
the best ones, the torch reference and the speed target, and gives the best configurations as
dict literals to paste into the tables (``CONFIGS`` of triton_symmetric, triton_transpose and
triton_mlp). The sweep stops starting new candidates after --budget-s seconds (compiles count).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_kernels  # noqa: E402  (benchmarks/, the harness it shares its timing with)

TOLERANCE = 1e-2   # largest |kernel − torch| / largest |torch|; bf16 rounding gives about 4e-3


# ---------------------------------------------------------------------------------------------
# Candidates. Each list is bounded (≤ 32) and ordered most promising first, so that a sweep cut
# short by the budget still covers the likely winners. Every entry compiled for sm_90 without
# spills and within shared memory when this script was written.


def _sym(block, block_k, pair, warps, stages, per_sm=0):
    return dict(BLOCK=block, BLOCK_K=block_k, PAIR=pair, num_warps=warps, num_stages=stages,
                PROGRAMS_PER_SM=per_sm)


def symmetric_candidates(kind: str, depth: int) -> list[dict]:
    """Square blocks of 128 or 64; PAIR 2 shares the row operand between two blocks; persistent
    walks (PROGRAMS_PER_SM > 0) only for a·aᵀ, whose loads stay pipelined when flattened."""
    out = [_sym(128, 64, 1, 8, 3), _sym(128, 64, 1, 8, 4), _sym(128, 64, 2, 8, 3), _sym(128, 64, 2, 8, 4),
           _sym(128, 32, 1, 8, 5), _sym(128, 32, 2, 8, 6), _sym(128, 128, 1, 8, 2), _sym(128, 128, 1, 8, 3),
           _sym(128, 128, 2, 8, 2), _sym(128, 64, 1, 4, 3), _sym(64, 64, 1, 4, 4), _sym(64, 128, 1, 4, 3),
           _sym(64, 64, 2, 4, 4), _sym(64, 128, 2, 4, 3), _sym(64, 64, 2, 8, 4), _sym(64, 128, 2, 8, 4)]
    if kind != "xtx":
        out += [_sym(128, 64, 1, 8, 3, 1), _sym(128, 64, 1, 8, 3, 2), _sym(128, 64, 2, 8, 3, 1),
                _sym(128, 32, 1, 8, 4, 2), _sym(64, 64, 2, 4, 3, 2), _sym(64, 128, 2, 8, 3, 1)]
    if depth > 1024:
        out = [c for c in out if c["BLOCK_K"] >= 64] + [_sym(128, 64, 1, 8, 5)]
    # Shallower pipelines leave shared memory for the mirrored store's layout change and a second
    # (or third) program per SM.
    out += [_sym(128, 64, 1, 8, 2), _sym(128, 32, 1, 8, 3), _sym(128, 32, 1, 4, 4), _sym(128, 64, 1, 4, 2),
            _sym(64, 64, 1, 4, 2), _sym(64, 64, 1, 4, 3), _sym(128, 64, 2, 8, 2), _sym(64, 64, 1, 8, 3)]
    return out[:32]


def _tp(bm, bn, warps, m_fastest=True, per_sm=0, stages=1):
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, M_FASTEST=m_fastest, PROGRAMS_PER_SM=per_sm,
                num_stages=stages)


def transpose_candidates() -> list[dict]:
    """Tile shapes and warps, tile order, and persistent walks with loads issued stages − 1 ahead."""
    shapes = ((64, 64, 4), (32, 32, 4), (64, 128, 4), (128, 64, 4), (128, 128, 8), (64, 64, 8),
              (32, 128, 4), (128, 32, 4))
    out = [_tp(bm, bn, w, mf) for (bm, bn, w), mf in itertools.product(shapes, (True, False))]
    out += [_tp(64, 64, 4, True, 8, 2), _tp(64, 64, 4, True, 4, 3), _tp(64, 64, 4, False, 4, 3),
            _tp(128, 64, 4, True, 2, 3), _tp(64, 128, 4, True, 2, 3), _tp(128, 128, 8, True, 1, 3),
            _tp(64, 64, 4, True, 8, 3), _tp(32, 128, 4, True, 4, 3)]
    # Larger tiles along dst's rows (2026-11-29 on the H200: none beat 128×128, 43.7 µs).
    big = [_tp(256, 64, 8), _tp(64, 256, 8), _tp(256, 128, 8), _tp(128, 256, 8), _tp(256, 64, 4), _tp(64, 256, 4),
           _tp(256, 128, 16), _tp(128, 256, 16)]
    return (big + out)[:32]


def _mlp(bn, bk, stages, group=8, bm=128, warps=8):
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=group, num_warps=warps, num_stages=stages)


def mlp_candidates(direction: str) -> list[dict]:
    """The persistent TMA kernel's tiles (BLOCK_N is stored in two halves); the backward's epilogue
    also loads pre, so its deeper pipelines do not fit in shared memory."""
    if direction == "forward":
        return [_mlp(256, 64, 4), _mlp(256, 64, 3), _mlp(256, 128, 2), _mlp(128, 64, 4), _mlp(128, 64, 5),
                _mlp(128, 128, 3), _mlp(256, 64, 4, 16), _mlp(256, 64, 4, 4), _mlp(128, 64, 4, 16),
                _mlp(256, 64, 4, 8, 64, 4), _mlp(128, 64, 5, 8, 64, 4)]
    return [_mlp(256, 64, 3), _mlp(128, 64, 4), _mlp(128, 64, 5), _mlp(128, 128, 3), _mlp(256, 64, 3, 16),
            _mlp(256, 64, 3, 4), _mlp(128, 64, 4, 16), _mlp(256, 64, 4, 8, 64, 4), _mlp(128, 64, 5, 8, 64, 4)]


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    name: str
    table: str                      # where the best configuration goes
    candidates: list[dict]
    default: dict
    run: object                     # run(cfg): launch the kernel once
    error: object                   # error(cfg) -> relative error on a NaN-filled output
    reference: object               # the torch operation it competes with, for timing
    unit: str                       # "GB/s" or "TFLOP/s"
    work: float                     # bytes moved or flops of the full (not triangular) product
    target: str                     # how the target reads
    results: list[dict] = field(default_factory=list)


def _rel(out, ref) -> float:
    import torch
    out, ref = out.float(), ref.float()
    if not torch.isfinite(out).all():
        return math.inf
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


# The trainer's shapes; a dry run divides every dimension by DRY_RUN_SHRINK.
SHAPES = dict(attn=(40, 768, 768), mlp=(24, 3072, 768), transpose=(768, 50304), tokens=(16384, 768, 3072))
DRY_RUN_SHRINK = 16


def make_cases(only: set[str] | None, dry_run: bool = False) -> list[Case]:
    import torch

    bench_kernels.import_kernels()
    from speedtrace.kernels import reference as R
    from speedtrace.kernels import triton_mlp, triton_symmetric, triton_transpose

    bf16, dev = torch.bfloat16, "cpu" if dry_run else "cuda"

    def dims(key):
        return tuple(max(1, d // DRY_RUN_SHRINK) if dry_run else d for d in SHAPES[key])
    cases = []

    def want(name):
        return only is None or any(name.startswith(o) for o in only)

    def symmetric(kind, b, r, c, label):
        name = f"{kind} {label} {b}x{r}x{c}"
        if not want(name):
            return
        a = torch.randn(b, r, c, dtype=bf16, device=dev) / math.sqrt(c)
        if kind == "ba_plus_caa":
            a = torch.bmm(a, a.mT)      # symmetric, as Polar Express's A
        side, depth = (c, r) if kind == "xtx" else (r, c)
        out = torch.empty(b, side, side, dtype=bf16, device=dev)
        alpha, beta = 0.42, -1.7
        fn = getattr(triton_symmetric, kind)
        if kind == "xxt":
            def ref():
                return torch.bmm(a, a.mT, out=out)
        elif kind == "xtx":
            def ref():
                return torch.bmm(a.mT, a, out=out)
        else:
            def ref():
                return R.ba_plus_caa(a, alpha, beta, out)
        expected = ref().clone()
        args = (alpha, beta) if kind == "ba_plus_caa" else ()

        def run(cfg):
            fn(a, *args, out, config=cfg)

        def error(cfg):
            out.fill_(float("nan"))
            run(cfg)
            return _rel(out, expected)

        target = {"xxt": "<= 0.8x torch.bmm", "xtx": "<= 0.8x torch.bmm"}.get(kind, "")
        table = f"triton_symmetric.CONFIGS[{kind!r}][{depth if depth in triton_symmetric.CONFIGS[kind] else 'other'!r}]"
        cases.append(Case(name, table, symmetric_candidates(kind, depth), triton_symmetric.config_for(kind, depth),
                          run, error, ref, "TFLOP/s", 2 * b * side * side * depth, target))

    def transpose(op, m, n):
        name = f"transpose_{op} {m}x{n}"
        if not want(name):
            return
        src = torch.randn(m, n, dtype=bf16, device=dev)
        dst0 = torch.randn(n, m, dtype=bf16, device=dev)
        dst = dst0.clone()
        fn = getattr(triton_transpose, f"transpose_{op}")
        expected = src.T.contiguous() if op == "copy" else (dst0.float() + src.T.float()).to(bf16)

        def run(cfg):
            fn(src, dst, config=cfg)

        def error(cfg):
            if op == "copy":
                dst.fill_(float("nan"))
            else:
                dst.copy_(dst0)
            run(cfg)
            return _rel(dst, expected)

        if op == "copy":
            def ref():
                return dst.copy_(src.T)
        else:
            def ref():
                return dst.add_(src.T)
        passes = 2 if op == "copy" else 3
        cases.append(Case(name, f"triton_transpose.CONFIGS[2][{op!r}]", transpose_candidates(),
                          triton_transpose.config_for(op, 2), run, error, ref, "GB/s", passes * m * n * 2,
                          ">= 85% of copy bandwidth"))

    def mlp(direction, tokens, dim, hidden):
        name = f"linear_relu_square {direction} {tokens}x{dim}x{hidden}"
        if not want(name):
            return
        x = torch.randn(tokens, dim, dtype=bf16, device=dev)
        w = (torch.randn(hidden, dim, device=dev) * 0.02).to(bf16)
        g = torch.randn(tokens, dim, dtype=bf16, device=dev)
        pre = (x @ w.T)
        if direction == "forward":
            expected = pre.float().relu().square()

            def run(cfg):
                return triton_mlp.linear_relu_square_forward(x, w, path="tma", config=cfg)

            def error(cfg):
                p, post = run(cfg)
                return max(_rel(p, pre), _rel(post, expected))

            def ref():
                return x @ w.T
        else:
            expected = 2 * (g @ w.T).float() * pre.float().relu()

            def run(cfg):
                return triton_mlp.relu_square_backward(g, w, pre, path="tma", config=cfg)

            def error(cfg):
                return _rel(run(cfg), expected)

            def ref():
                return g @ w.T
        cases.append(Case(name, f"triton_mlp.CONFIGS['tma'][{direction!r}]", mlp_candidates(direction),
                          triton_mlp.CONFIGS["tma"][direction], run, error, ref, "TFLOP/s",
                          2 * tokens * dim * hidden, "<= 1.0x cuBLAS mm alone"))

    # Most important first: the budget may cut the tail short.
    b, r, c = dims("mlp")
    symmetric("xxt", *dims("attn"), "attn")
    transpose("add", *dims("transpose"))
    symmetric("ba_plus_caa", *dims("attn"), "attn")
    symmetric("xtx", b, r, c, "mlp")
    symmetric("xxt", b, c, r, "mlp^T")
    transpose("copy", *dims("transpose"))
    if dry_run or triton_mlp.default_path(torch.empty(8, 8, dtype=bf16, device=dev),
                                          torch.empty(8, 8, dtype=bf16, device=dev)) == "tma":
        mlp("forward", *dims("tokens"))
        mlp("backward", *dims("tokens"))
    return cases


# ---------------------------------------------------------------------------------------------
# Measuring


def median_ms(fn) -> float:
    import torch
    if not torch.cuda.is_available():   # dry run: one call's wall time
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)
    from triton.testing import do_bench
    return float(do_bench(fn, warmup=10, rep=40, return_mode="median"))


def _sync() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def try_config(case: Case, cfg: dict) -> dict:
    """Compile, check and time one configuration; the row says why when it could not."""
    row = dict(config=cfg)
    t0 = time.time()
    try:
        err = case.error(cfg)            # first call: compiles
        _sync()
        row["compile_s"] = time.time() - t0
        row["error"] = err
        if not err <= TOLERANCE:
            row["failed"] = f"error {err:.3g}"
            return row
        row["ms"] = median_ms(lambda: case.run(cfg))
    except Exception as exc:  # a candidate that does not compile or launch is reported, not fatal
        row["failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90] if str(exc) else ''}"
        _sync()
    return row


def rate(case: Case, ms: float) -> float:
    return case.work / ms / (1e6 if case.unit == "GB/s" else 1e9)


def fmt_config(cfg: dict) -> str:
    return "dict(" + ", ".join(f"{k}={v!r}" for k, v in cfg.items()) + ")"


def short_config(cfg: dict) -> str:
    abbrev = {"BLOCK": "B", "BLOCK_K": "BK", "BLOCK_M": "BM", "BLOCK_N": "BN", "PAIR": "P", "num_warps": "w",
              "num_stages": "s", "PROGRAMS_PER_SM": "pps", "M_FASTEST": "mf", "GROUP_M": "g"}
    return " ".join(f"{abbrev.get(k, k)}{int(v) if isinstance(v, bool) else v}" for k, v in cfg.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=270.0,
                        help="start no new candidate after this many seconds (default 270)")
    parser.add_argument("--only", help="comma-separated case name prefixes, e.g. xxt,transpose_add")
    parser.add_argument("--top", type=int, default=6, help="fastest candidates shown per case")
    parser.add_argument("--dry-run", action="store_true",
                        help="check this script on CPU: Triton's interpreter, shapes / 16, two candidates per case")
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"    # read when the kernel modules are first imported
    import torch
    if not torch.cuda.is_available() and not args.dry_run:
        print("tune_kernels: needs a CUDA device (or --dry-run)", file=sys.stderr)
        return 2
    import triton
    start = time.time()
    torch.manual_seed(0)
    device = "CPU, interpreted" if args.dry_run else torch.cuda.get_device_name()
    print(f"{device}  torch {torch.__version__}  triton {triton.__version__}", flush=True)
    bandwidth = math.nan if args.dry_run else bench_kernels.copy_bandwidth_gbs()
    print(f"copy bandwidth {bandwidth:.0f} GB/s", flush=True)
    cases = make_cases(set(args.only.split(",")) if args.only else None, args.dry_run)
    skipped = 0
    for case in cases:
        t_case = time.time()
        for cfg in case.candidates[:2] if args.dry_run else case.candidates:
            if time.time() - start > args.budget_s:
                skipped += 1
                continue
            case.results.append(try_config(case, cfg))
        ok = sorted((r for r in case.results if "ms" in r), key=lambda r: r["ms"])
        failed = [r for r in case.results if "failed" in r]
        print(f"\n== {case.name}: {len(ok)} timed, {len(failed)} failed, "
              f"{len(case.candidates) - len(case.results)} not tried, {time.time() - t_case:.0f} s", flush=True)
        for r in ok[:args.top]:
            print(f"  {1e3 * r['ms']:8.1f} µs  {rate(case, r['ms']):7.0f} {case.unit:7s} err {r['error']:.1e}  "
                  f"compile {r['compile_s']:4.1f} s  {short_config(r['config'])}")
        for r in failed[:4]:
            print(f"  FAILED {short_config(r['config'])}: {r['failed']}")

    # Re-time the shipped defaults beside the best, with the torch reference and the target.
    print(f"\n==== summary (sweep {time.time() - start:.0f} s, {skipped} candidates not reached) ====")
    print(f"{'case':42s} {'default':>8s} {'best':>8s} {'torch':>8s} {'best/def':>8s} {'def/torch':>9s} "
          f"{'best/torch':>10s} {'best rate':>16s}  target")
    best_configs = {}
    for case in cases:
        ok = sorted((r for r in case.results if "ms" in r), key=lambda r: r["ms"])
        default = try_config(case, case.default)
        t_ref = median_ms(case.reference)
        t_def = default.get("ms", math.nan)
        if not ok:
            print(f"{case.name:42s} {1e3 * t_def:8.1f} {'-':>8s} {1e3 * t_ref:8.1f}  no candidate ran"
                  f"{'; default FAILED ' + default['failed'] if 'failed' in default else ''}")
            continue
        best = ok[0]
        t_best = min(best["ms"], t_def) if "ms" in default else best["ms"]
        cfg = best["config"] if t_best == best["ms"] else case.default
        best_configs[case.name] = (case.table, cfg)
        r = rate(case, t_best)
        pct = f" ({100 * r / bandwidth:.1f}%)" if case.unit == "GB/s" else ""
        note = "; default FAILED " + default["failed"] if "failed" in default else ""
        print(f"{case.name:42s} {1e3 * t_def:8.1f} {1e3 * t_best:8.1f} {1e3 * t_ref:8.1f} {t_best / t_def:8.2f} "
              f"{t_def / t_ref:9.2f} {t_best / t_ref:10.2f} {r:7.0f} {case.unit}{pct}  {case.target}{note}")
    print("\n# best configurations (paste into the tables named)")
    for name, (table, cfg) in best_configs.items():
        print(f"# {name}\n{table} = {fmt_config(cfg)}")
    print(f"\ntotal {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
