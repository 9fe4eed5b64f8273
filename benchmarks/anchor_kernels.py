"""Our kernels against the record's own, at the trainer's shapes, in one process on one GPU.

Given the directory that holds the record's ``triton_kernels.py`` (modded-nanogpt at 20dd1582,
PR #233; the project does not ship it), times each of its kernels beside the speedtrace kernel
that does the same work: the symmetric products of both NorMuon banks (XXT, XTX, ba_plus_cAA),
the two transposes, the MLP's fused GEMM forward and backward (linear_relu_square) and the
softcapped cross-entropy forward and backward. Every time is the median of replays of a CUDA
graph of one call (``triton.testing.do_bench_cudagraph``), taken twice per side in alternation
(ours, record, ours, record), so that the spread between the two rounds shows the noise. Before
timing, both sides' outputs are checked against float64 on fresh random inputs with the kernel
tests' rule (``tests/kernel_checks.py``: max error at most twice the PyTorch reference's in
the kernel's dtype, plus 1e-6; e5m2 outputs within one e5m2 step).

Fetch the record's files (once):

    git clone https://github.com/KellerJordan/modded-nanogpt
    git -C modded-nanogpt checkout 20dd1582

then, on the GPU machine:

    python benchmarks/anchor_kernels.py --anchor modded-nanogpt [--json OUT.json] [--variants]

``--variants`` also times other settings of our kernels (the MLP's epilogue in fp32 and its tile
grouping, the cross-entropy kernels' warps and fast sigmoid) against the same record times.
``--wait-for FILE`` holds the checks and the timing (not the compiling) until FILE exists, and
``--done FILE`` is created afterwards, so that the harness can share a machine with jobs that are
compiling and still time on a quiet GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kernels import import_kernels  # noqa: E402  (one way to find speedtrace.kernels)

ROOT = Path(__file__).resolve().parents[1]

# The trainer's shapes at world size 1, stage 1 (the record's micro-batch is 16,384 tokens).
BANKS = {"attn": (40, 768, 768), "mlp": (24, 3072, 768)}
TRANSPOSE = (768, 50304)                 # lm_head (768, V) ↔ embed (V, 768)
MLP = (16384, 768, 3072)                 # tokens, model dim, hidden
CE = (16384, 50304)                      # rows, padded vocabulary
CE_CHECK_ROWS = 4096                     # float64 copies of the logits must fit beside the rest
SOFTCAP = (23.0, 5.0, 7.5)
GRAD_S = 0.75 / 448                      # the record's lm_head grad scale
DEVICE = "cuda"                          # "cpu" with --smoke (Triton's interpreter)
RECORD_NAMES = ("XXT", "XTX", "ba_plus_cAA", "linear_relu_square", "transpose_copy", "transpose_add",
                "fused_softcapped_entropy_fwd_kernel", "fused_softcapped_entropy_bwd_kernel")


def smoke_shapes() -> None:
    """Tiny shapes, multiples of 8 (the TMA kernels' alignment), on the CPU."""
    global DEVICE, TRANSPOSE, MLP, CE, CE_CHECK_ROWS
    import os
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("anchor_kernels: --smoke needs TRITON_INTERPRET=1 in the environment")
    DEVICE, TRANSPOSE, MLP, CE, CE_CHECK_ROWS = "cpu", (24, 40), (32, 16, 48), (8, 96), 8
    BANKS.update(attn=(2, 24, 24), mlp=(2, 40, 16))
    import types

    import torch
    # The record's MLP wrapper sizes its persistent grid from the GPU: give it a few "SMs".
    torch.cuda.get_device_properties = lambda *_: types.SimpleNamespace(multi_processor_count=3)


def kernel_checks():
    """The kernel tests' float64 checks (tests/kernel_checks.py), which ship with the checkout."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    import kernel_checks
    return kernel_checks


def load_record(anchor: Path):
    """The record's triton_kernels.py as a module, unmodified (eager calls need no patch)."""
    path = anchor / "triton_kernels.py"
    if not path.is_file():
        raise SystemExit(f"anchor_kernels: {path}: not found; fetch the record with `git clone "
                         "https://github.com/KellerJordan/modded-nanogpt && git -C modded-nanogpt checkout 20dd1582`")
    spec = importlib.util.spec_from_file_location("record_triton_kernels", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # Triton's JIT looks its kernels' module up by name
    spec.loader.exec_module(module)
    missing = [n for n in RECORD_NAMES if not hasattr(module, n)]
    if missing:
        raise SystemExit(f"anchor_kernels: {path} lacks {', '.join(missing)}: not the record's kernels file "
                         "(checkout 20dd1582)")
    return module


# -- the record's cross-entropy kernels, launched as its FusedSoftcappedCrossEntropy launches them --


def record_ce_forward(rec, logits, targets, weights, A, B, C):
    import torch
    n_rows, n_cols = logits.shape
    losses = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    lse = torch.empty_like(losses)
    rec.fused_softcapped_entropy_fwd_kernel[(n_rows,)](
        logits, losses, lse, targets, weights, logits.stride(0), logits.stride(1), n_rows, n_cols,
        weights.shape[0], A, B, C, BLOCK_SIZE=1024, num_warps=2)
    return losses, lse


def record_ce_backward(rec, grad, logits, lse, targets, weights, grad_s, A, B, C):
    import torch
    n_rows, n_cols = logits.shape
    out = torch.empty((n_rows, n_cols), dtype=torch.float8_e5m2, device=logits.device)
    rec.fused_softcapped_entropy_bwd_kernel[(n_rows,)](
        out, grad, lse, logits, targets, weights, logits.stride(0), logits.stride(1), out.stride(0),
        out.stride(1), n_rows, n_cols, weights.shape[0], A, B, C, grad_s, BLOCK_SIZE=1024, num_warps=2)
    return out


# -- correctness --------------------------------------------------------------------------------


def check_mlp(fwd, bwd, label: str):
    """pre, post and dpre of one implementation against float64 (fresh random inputs)."""
    import torch

    from speedtrace.kernels import reference as R
    tokens, dim, hidden = MLP
    bf16, f64 = torch.bfloat16, torch.float64
    x = torch.randn(tokens, dim, dtype=bf16, device=DEVICE)
    scale = 3 ** 0.5 * 0.5 / dim ** 0.5
    w1 = ((torch.rand(hidden, dim, device=DEVICE) * 2 - 1) * scale).to(bf16)
    w2 = ((torch.rand(hidden, dim, device=DEVICE) * 2 - 1) * scale).to(bf16)
    g = torch.randn(tokens, dim, dtype=bf16, device=DEVICE)
    pre, post = fwd(x, w1)
    pre_r, post_r = R.linear_relu_square_forward(x, w1)
    pre64 = x.to(f64) @ w1.to(f64).T
    dpre = bwd(g, w2, pre_r)
    dpre_r = R.relu_square_backward(g, w2, pre_r)
    exact = 2 * (g.to(f64) @ w2.to(f64).T) * pre_r.to(f64).relu()
    shape = "x".join(map(str, MLP))
    return [_check(label, "pre", shape, pre, pre_r, pre64),
            _check(label, "post", shape, post, post_r, pre64.relu().square()),
            _check(label, "dpre", shape, dpre, dpre_r, exact)]


def check_ce(fwd, bwd, label: str):
    """losses, lse and the e5m2 logits gradient of one implementation against float64."""
    import torch

    checks = kernel_checks()
    from speedtrace.kernels import reference as R
    rows, vocab = CE_CHECK_ROWS, CE[1]
    logits = (torch.randn(rows, vocab, device=DEVICE) * 6).to(torch.bfloat16)
    targets = torch.randint(0, vocab, (rows,), device=DEVICE)
    weights = torch.tensor([1.0, 0.5, 0.25], device=DEVICE)
    losses, lse = fwd(logits, targets, weights)
    losses_r, lse_r = R.softcapped_ce_forward(logits, targets, weights)
    losses64, lse64 = R.softcapped_ce_forward(logits.to(torch.float64), targets, weights)
    shape = f"{rows}x{vocab}"
    out = [_check(label, "losses", shape, losses, losses_r, losses64),
           _check(label, "lse", shape, lse, lse_r, lse64)]
    grad = torch.rand(rows, device=DEVICE)
    d = bwd(grad, logits, lse, targets, weights)
    d64 = R.softcapped_ce_backward(grad.double(), logits.double(), lse64, targets, weights, GRAD_S)
    d_r = R.softcapped_ce_backward(grad, logits, lse_r, targets, weights, GRAD_S)
    steps, ref_steps = checks.e5m2_steps(d, d64), checks.e5m2_steps(d_r, d64)
    out.append(checks.Check(label, "dlogits (e5m2 steps)", shape, steps, ref_steps, 1.0, None, steps <= 1))
    return out


def _check(kernel, output, shape, out, ref, exact):
    checks = kernel_checks()
    err, ref_err = checks.max_error(out, exact), checks.max_error(ref, exact)
    bound = 2 * ref_err + 1e-6
    return checks.Check(kernel, output, shape, err, ref_err, bound, None, err <= bound)


def correctness(ours: dict, rec: dict) -> dict:
    """Check results per side: 'ours' and 'record'."""
    checks = kernel_checks()
    result = {}
    for side, impl in (("ours", ours), ("record", rec)):
        found = checks.check_transposes(*TRANSPOSE, DEVICE, copy=impl["transpose_copy"], add=impl["transpose_add"])
        for n, r, c in BANKS.values():
            found += checks.check_symmetric(n, r, c, DEVICE, xxt=impl["xxt"], xtx=impl["xtx"],
                                            ba_plus_caa=impl["ba_plus_caa"])
        found += check_mlp(impl["mlp_fwd"], impl["mlp_bwd"], f"linear_relu_square ({side})")
        found += check_ce(impl["ce_fwd"], impl["ce_bwd"], f"softcapped_ce ({side})")
        for c in found:
            c.backend = side
        result[side] = found
    return result


# -- the two implementations, with the same call shapes ------------------------------------------


def implementations(rec):
    from speedtrace.kernels import triton_cross_entropy as TCE
    from speedtrace.kernels import triton_mlp as TM
    K = import_kernels()
    A, B, C = SOFTCAP
    ours = {
        "transpose_copy": K.transpose_copy, "transpose_add": K.transpose_add,
        "xxt": K.xxt, "xtx": K.xtx, "ba_plus_caa": K.ba_plus_caa,
        "mlp_fwd": TM.linear_relu_square_forward, "mlp_bwd": TM.relu_square_backward,
        "ce_fwd": lambda lg, t, w: TCE.softcapped_ce_forward(lg, t, w, A, B, C),
        "ce_bwd": lambda g, lg, lse, t, w: TCE.softcapped_ce_backward(g, lg, lse, t, w, GRAD_S, A, B, C),
    }
    record = {
        "transpose_copy": rec.transpose_copy, "transpose_add": rec.transpose_add,
        "xxt": rec.XXT, "xtx": rec.XTX, "ba_plus_caa": rec.ba_plus_cAA,
        "mlp_fwd": rec.linear_relu_square, "mlp_bwd": lambda g, w2, pre: rec.linear_relu_square(g, w2, aux=pre),
        "ce_fwd": lambda lg, t, w: record_ce_forward(rec, lg, t, w, A, B, C),
        "ce_bwd": lambda g, lg, lse, t, w: record_ce_backward(rec, g, lg, lse, t, w, GRAD_S, A, B, C),
    }
    return ours, record


def cases(ours: dict, rec: dict) -> list[tuple[str, object, object]]:
    """(name, our call, the record's call) on shared inputs at the trainer's shapes."""
    import torch
    bf16 = torch.bfloat16
    out = []
    m, n = TRANSPOSE
    src = torch.randn(m, n, dtype=bf16, device=DEVICE)
    dst = torch.randn(n, m, dtype=bf16, device=DEVICE)
    for name in ("transpose_copy", "transpose_add"):
        out.append((f"{name} {m}x{n}", lambda f=ours[name]: f(src, dst), lambda f=rec[name]: f(src, dst)))
    for bank, (b, r, c) in BANKS.items():
        a = torch.randn(b, r, c, dtype=bf16, device=DEVICE) / c ** 0.5
        side = min(r, c)
        gram = torch.empty(b, side, side, dtype=bf16, device=DEVICE)
        op = "xxt" if r <= c else "xtx"
        out.append((f"{op} {bank} bank {b}x{r}x{c}", lambda f=ours[op], a=a, g=gram: f(a, g),
                    lambda f=rec[op], a=a, g=gram: f(a, g)))
        if bank == "mlp":   # the parent's path for the tall bank: xxt of the transposed (wide) matrices
            wide = a.mT.contiguous()
            big = torch.empty(b, c, c, dtype=bf16, device=DEVICE)
            out.append((f"xxt mlp bank, wide {b}x{c}x{r} (parent)", lambda w=wide, g=big: ours["xxt"](w, g),
                        lambda w=wide, g=big: rec["xxt"](w, g)))
        s = ours[op](a)
        poly = torch.empty_like(s)
        out.append((f"ba_plus_caa {bank} bank {b}x{side}x{side}",
                    lambda s=s, p=poly: ours["ba_plus_caa"](s, 0.42, -1.7, p),
                    lambda s=s, p=poly: rec["ba_plus_caa"](s, 0.42, -1.7, p)))
    tokens, dim, hidden = MLP
    x = torch.randn(tokens, dim, dtype=bf16, device=DEVICE)
    w1 = (torch.randn(hidden, dim, device=DEVICE) * 0.02).to(bf16)
    w2 = (torch.randn(hidden, dim, device=DEVICE) * 0.02).to(bf16)
    g = torch.randn(tokens, dim, dtype=bf16, device=DEVICE)
    pre, _ = ours["mlp_fwd"](x, w1)
    out.append((f"linear_relu_square fwd {tokens}x{dim}x{hidden}", lambda: ours["mlp_fwd"](x, w1),
                lambda: rec["mlp_fwd"](x, w1)))
    out.append((f"linear_relu_square bwd {tokens}x{dim}x{hidden}", lambda: ours["mlp_bwd"](g, w2, pre),
                lambda: rec["mlp_bwd"](g, w2, pre)))
    rows, vocab = CE
    logits = (torch.randn(rows, vocab, device=DEVICE) * 6).to(bf16)
    targets = torch.randint(0, vocab, (rows,), device=DEVICE)
    weights = torch.tensor([1.0, 0.5, 0.25], device=DEVICE)
    _, lse = ours["ce_fwd"](logits, targets, weights)
    gl = torch.rand(rows, device=DEVICE)
    out.append((f"softcapped_ce fwd {rows}x{vocab}", lambda: ours["ce_fwd"](logits, targets, weights),
                lambda: rec["ce_fwd"](logits, targets, weights)))
    out.append((f"softcapped_ce bwd {rows}x{vocab}", lambda: ours["ce_bwd"](gl, logits, lse, targets, weights),
                lambda: rec["ce_bwd"](gl, logits, lse, targets, weights)))
    return out


def variant_cases(case_names) -> list[tuple[str, str, object, object]]:
    """(name, the case it stands in for, call, check) for other launch settings of our kernels."""
    import torch

    from speedtrace.kernels import triton_cross_entropy as TCE
    from speedtrace.kernels import triton_mlp as TM
    A, B, C = SOFTCAP
    bf16 = torch.bfloat16
    out = []

    def case(prefix):
        return next(name for name in case_names if name.startswith(prefix))

    tokens, dim, hidden = MLP
    x = torch.randn(tokens, dim, dtype=bf16, device=DEVICE)
    w1 = (torch.randn(hidden, dim, device=DEVICE) * 0.02).to(bf16)
    g = torch.randn(tokens, dim, dtype=bf16, device=DEVICE)
    pre, _ = TM.linear_relu_square_forward(x, w1)
    # The epilogue in fp32 (the kernel before it did its arithmetic in bf16), and tile grouping.
    for direction, short in (("forward", "fwd"), ("backward", "bwd")):
        for label, change in (("fp32 epilogue", dict(BF16_EPILOGUE=False)), ("GROUP_M=1", dict(GROUP_M=1)),
                              ("GROUP_M=8", dict(GROUP_M=8))):
            cfg = dict(TM.CONFIGS["tma"][direction], **change)
            label = f"mlp {short} {label}"
            if direction == "forward":
                def fwd(a, b, cfg=cfg):
                    return TM.linear_relu_square_forward(a, b, config=cfg)
                bwd = TM.relu_square_backward

                def call(f=fwd):
                    return f(x, w1)
            else:
                def bwd(a, b, p, cfg=cfg):
                    return TM.relu_square_backward(a, b, p, config=cfg)
                fwd = TM.linear_relu_square_forward

                def call(f=bwd):
                    return f(g, w1, pre)
            out.append((label, case(f"linear_relu_square {short}"), call,
                        lambda f=fwd, b=bwd, lbl=label: check_mlp(f, b, lbl)))

    rows, vocab = CE
    logits = (torch.randn(rows, vocab, device=DEVICE) * 6).to(bf16)
    targets = torch.randint(0, vocab, (rows,), device=DEVICE)
    weights = torch.tensor([1.0, 0.5, 0.25], device=DEVICE)
    _, lse = TCE.softcapped_ce_forward(logits, targets, weights, A, B, C)
    gl = torch.rand(rows, device=DEVICE)

    def ce_fwd(warps=None):
        return lambda lg, t, w: TCE.softcapped_ce_forward(lg, t, w, A, B, C, num_warps=warps)

    def ce_bwd(warps=None, fast=None):
        return lambda gr, lg, ls, t, w: TCE.softcapped_ce_backward(gr, lg, ls, t, w, GRAD_S, A, B, C,
                                                                   num_warps=warps, fast_sigmoid=fast)
    for warps in (2, 4):
        label = f"ce fwd num_warps={warps}"
        f = ce_fwd(warps)
        out.append((label, case("softcapped_ce fwd"), lambda f=f: f(logits, targets, weights),
                    lambda f=f, lbl=label: check_ce(f, ce_bwd(), lbl)))
        for fast in (False, True):
            label = f"ce bwd num_warps={warps} fast_sigmoid={fast}"
            b = ce_bwd(warps, fast)
            out.append((label, case("softcapped_ce bwd"), lambda b=b: b(gl, logits, lse, targets, weights),
                        lambda b=b, lbl=label: check_ce(ce_fwd(), b, lbl)))
    return out


# -- timing -------------------------------------------------------------------------------------


def graph_ms(fn) -> float:
    """Median ms per call over replays of a CUDA graph of ``fn`` (no L2 flush between replays)."""
    if DEVICE == "cpu":   # --smoke: one interpreted call, to exercise the harness only
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    from triton.testing import do_bench_cudagraph
    return float(do_bench_cudagraph(fn, rep=100, return_mode="median"))


def time_pairs(pairs, rounds: int = 2, log=print) -> list[dict]:
    """Each (name, ours, record) timed ``rounds`` times in alternation; ms per round and side."""
    rows = []
    for name, ours, rec in pairs:
        ours(), rec()                      # compile and warm up outside the graphs
        o, r = [], []
        for _ in range(rounds):
            o.append(graph_ms(ours))
            r.append(graph_ms(rec))
        row = dict(kernel=name, ours_ms=o, record_ms=r, ratio=statistics.mean(o) / statistics.mean(r))
        rows.append(row)
        log(format_row(row), flush=True)
    return rows


def spread(values: list[float]) -> float:
    """(max − min) / mean, percent: how far apart the rounds were."""
    return 100 * (max(values) - min(values)) / statistics.mean(values)


HEADER = f"{'kernel':44s} {'ours µs':>9s} {'record µs':>10s} {'ours/record':>11s} {'spread o/r %':>13s}"


def format_row(row: dict) -> str:
    o, r = statistics.mean(row["ours_ms"]), statistics.mean(row["record_ms"])
    return (f"{row['kernel']:44s} {1e3 * o:9.1f} {1e3 * r:10.1f} {row['ratio']:11.3f} "
            f"{spread(row['ours_ms']):6.1f}/{spread(row['record_ms']):<6.1f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor", type=Path, required=True,
                        help="directory holding the record's triton_kernels.py (modded-nanogpt at 20dd1582)")
    parser.add_argument("--json", type=Path, help="write every measurement and check here")
    parser.add_argument("--variants", action="store_true", help="also time other launch settings of our kernels")
    parser.add_argument("--rounds", type=int, default=2, help="timings per side, alternating (default 2)")
    parser.add_argument("--wait-for", type=Path, help="after compiling, wait until this file exists")
    parser.add_argument("--done", type=Path, help="create this file when the timing is over")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on the CPU under TRITON_INTERPRET=1: runs the harness, times nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        smoke_shapes()
    import torch
    if not args.smoke and not torch.cuda.is_available():
        print("anchor_kernels: needs a CUDA device", file=sys.stderr)
        return 2
    rec = load_record(args.anchor)
    import triton
    import_kernels()
    torch.manual_seed(int(time.time()))
    name, sms = ("CPU (interpreter)", 0) if args.smoke else (
        torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count)
    header = (f"{name} ({sms} SMs), torch {torch.__version__}, triton {triton.__version__}, "
              f"record kernels from {args.anchor / 'triton_kernels.py'}")
    print(header, flush=True)
    ours, record = implementations(rec)
    try:
        pairs = cases(ours, record)
        for _, o, r in pairs:                 # compile everything before waiting for a quiet GPU
            o(), r()
        variants = []
        if args.variants:
            variants = variant_cases([name for name, _, _ in pairs])
            for _, _, fn, _ in variants:
                fn()
        if not args.smoke:
            torch.cuda.synchronize()
        while args.wait_for and not args.wait_for.exists():
            time.sleep(0.5)
        checked = correctness(ours, record)    # after the wait: the float64 copies take memory
        print(HEADER, flush=True)
        rows = time_pairs(pairs, args.rounds)
        var_rows = []
        for label, case, fn, _ in variants:
            ms = [graph_ms(fn) for _ in range(args.rounds)]
            var_rows.append(dict(variant=label, case=case, ms=ms))
    finally:
        if args.done:
            args.done.touch()
    var_checks = [c for _, _, _, check in variants for c in check()]
    result = {"device": name, "sms": sms, "torch": torch.__version__,
              "triton": triton.__version__, "kernels": rows,
              "checks": {side: [c.as_dict() for c in cs] for side, cs in checked.items()},
              "variants": var_rows, "variant_checks": [c.as_dict() for c in var_checks]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    by_case = {r["kernel"]: r for r in rows}
    if var_rows:
        print(f"\n{'variant of ours':44s} {'µs':>9s} {'× default':>10s} {'× record':>9s} {'spread %':>9s}")
        for v in var_rows:
            base = by_case[v["case"]]
            m = statistics.mean(v["ms"])
            print(f"{v['variant']:44s} {1e3 * m:9.1f} {m / statistics.mean(base['ours_ms']):10.3f} "
                  f"{m / statistics.mean(base['record_ms']):9.3f} {spread(v['ms']):9.1f}")
    print(f"\n{header}")
    for side, cs in checked.items():
        bad = [c for c in cs if not c.ok]
        print(f"checks against float64, {side}: {len(cs) - len(bad)}/{len(cs)} within bounds"
              + "".join(f"\n  FAIL {c.kernel} {c.output} {c.shape}: error {c.error:.3g} > bound {c.bound:.3g}"
                        for c in bad))
    bad_v = [c for c in var_checks if not c.ok]
    if var_checks:
        print(f"checks of the variants: {len(var_checks) - len(bad_v)}/{len(var_checks)} within bounds"
              + "".join(f"\n  FAIL {c.kernel} {c.output}: error {c.error:.3g} > bound {c.bound:.3g}" for c in bad_v))
    print(HEADER)
    for row in rows:
        print(format_row(row))
    return 0 if all(c.ok for cs in checked.values() for c in cs) else 1


if __name__ == "__main__":
    sys.exit(main())
