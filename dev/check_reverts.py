"""Does each ``--revert`` show its kernel difference in a trace? (issue: the bundled trainer)

    python -P dev/check_reverts.py DIR      # DIR/record, DIR/<change> for each revertible change

Each sub-directory is a ``speedtrace profile`` trace set (CPU+CUDA, so kernels carry phases).
Expected differences against the record variant, per PR #233 change:
- transpose-kernels: the tied embed/lm_head transposes run as ATen strided kernels, no
  ``transpose_kernel`` under ``optimizer/lm_head/reduce`` or ``optimizer/embed/gather``;
- mlp-select: more dedicated select_backward time per step;
- tall-polar-express: ``xxt_kernel`` instead of ``xtx_kernel`` in ``optimizer/mlp_bank/update``;
- fused-nesterov: eager (non-Triton) lerp kernels in the banks' updates.
Prints one line per change (PASS/FAIL with the figures) and exits 1 if any fails.
"""

import sys
from collections import Counter
from pathlib import Path

import speedtrace.analysis as sa
from speedtrace.analysis.timeline import device_timeline
from speedtrace.trainer.config import REVERTIBLE

TIED = ("optimizer/lm_head/reduce", "optimizer/embed/gather")


def kernels_by_phase(path: Path) -> tuple[Counter, float, int]:
    """(Counter of (phase, kernel name) per step, dedicated select_backward µs per step, steps)."""
    ts = sa.load(path)
    rank = ts.ranks[0]
    tl = device_timeline(rank, rank.gpu_devices()[0], ts.run)
    n_steps = max(1, len(tl.steps.steps))
    counts = Counter()
    for i in range(len(tl.rows)):
        if tl.is_kernel[i]:
            phase = tl.row_name(int(tl.phase[i]))
            counts[(phase, tl.name(i))] += 1
    totals = sa.totals(ts)[0]
    return counts, totals["select_backward_us"] / n_steps, n_steps


def _count(counts, phases, pred) -> int:
    return sum(n for (ph, name), n in counts.items() if (phases is None or ph in phases) and pred(name))


def check(change: str, rec, rev) -> tuple[bool, str]:
    (rc, rsb, _), (vc, vsb, _) = rec, rev
    if change == "transpose-kernels":
        r = _count(rc, TIED, lambda n: n == "transpose_kernel")
        v = _count(vc, TIED, lambda n: n == "transpose_kernel")
        aten = _count(vc, TIED, lambda n: n.startswith("void at::native"))
        return r > 0 and v == 0 and aten > 0, f"transpose_kernel in tied phases {r} -> {v}; ATen kernels there {aten}"
    if change == "mlp-select":
        return vsb > 1.2 * rsb, f"dedicated select_backward µs/step {rsb:.1f} -> {vsb:.1f}"
    if change == "tall-polar-express":
        ph = ("optimizer/mlp_bank/update",)
        r = (_count(rc, ph, lambda n: n == "xtx_kernel"), _count(rc, ph, lambda n: n == "xxt_kernel"))
        v = (_count(vc, ph, lambda n: n == "xtx_kernel"), _count(vc, ph, lambda n: n == "xxt_kernel"))
        return r[0] > 0 and v[0] == 0 and v[1] > r[1], f"mlp_bank (xtx, xxt) kernels {r} -> {v}"
    if change == "fused-nesterov":
        banks = ("optimizer/mlp_bank/update", "optimizer/attn_bank/update")
        eager = lambda n: "lerp" in n and not n.startswith("triton_")  # noqa: E731
        r, v = _count(rc, banks, eager), _count(vc, banks, eager)
        return r == 0 and v > 0, f"eager lerp kernels in bank updates {r} -> {v}"
    raise ValueError(change)


def main(argv=None) -> int:
    root = Path((argv or sys.argv[1:])[0])
    rec = kernels_by_phase(root / "record")
    ok_all = True
    for change in REVERTIBLE:
        path = root / change
        if not path.exists():
            print(f"SKIP {change:20s} (no {path})")
            continue
        ok, text = check(change, rec, kernels_by_phase(path))
        ok_all &= ok
        print(f"{'PASS' if ok else 'FAIL'} {change:20s} {text}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
