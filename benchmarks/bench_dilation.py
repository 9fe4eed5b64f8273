"""Profiler dilation of the candidate configurations, measured in one process on the GPU.

Builds and warms up the speedrun trainer once, then runs ``profiling.capture.profile`` with each
configuration in turn over the same stage-1 steps: CPU+CUDA activities without shapes (full
mode), CUDA only (with step-marker kernels), and optionally CPU+CUDA with record_shapes; a
"+launches" suffix keeps Inductor's per-launch profiler records on (off by default), and an
"+uncached" suffix times that configuration (its unprofiled steps too) with Inductor's full launch
path instead of the trainer's direct launcher calls (``trainer.inductor_launch``), and a
"+graphs" suffix replays each micro-batch as CUDA graphs (``trainer.graphs``), its unprofiled
steps too; "@wU" and "@aA" after all suffixes set that window's schedule warm-up and active
steps. Each writes its own trace set under OUT/<label>/ and prints its dilation; a table comes
last. ``--check-graphs N`` first trains N steps eagerly twice and once with graphs from the
same weights and prints how far the graphed weights are from the eager ones, beside how far two
eager runs are from each other (some kernels accumulate in a nondeterministic order).

    python -P benchmarks/bench_dilation.py --data DIR --out OUT [--variant parent] [--unprofiled 50]

Two variants can compile side by side on one GPU and still time their steps one at a time, on a
quiet host: the second signals --ready when warmed up, the first waits for it (--wait-for), runs
and signals --done, which the second waits for.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def profile_all(args, trainer, reverts) -> list:
    from speedtrace.profiling.capture import ProfileSettings, profile
    from speedtrace.trainer import inductor_launch

    rows = []
    for i, label in enumerate(args.configs.split(",")):
        # "@wU" / "@aA" at the end: this window's schedule warm-up / active steps (default 2 / --active).
        name, _, schedule = label.partition("@")
        sched = {k[0]: int(k[1:]) for k in schedule.split("@") if k}
        inductor_launch.set_enabled(not name.endswith("+uncached"))
        graphs = "+graphs" in name
        if graphs != (trainer.graphs is not None):
            trainer.set_cuda_graphs(graphs)
            trainer.train_step(args.start_step)   # captures outside any profiler session
        base = name.removesuffix("+uncached").removesuffix("+launches").removesuffix("+graphs")
        settings = ProfileSettings(
            out_dir=Path(args.out) / label.replace("+", "_").replace("@", "_"), first_step=args.start_step,
            unprofiled=args.unprofiled if i == 0 else 10, wait=0, warmup=sched.get("w", 2),
            active=sched.get("a", args.active),
            mode="full" if base == "cpu+cuda" else "timing",
            activities={"shapes": "cpu+cuda"}.get(base, base), record_shapes=base == "shapes",
            launch_records="+launches" in name, cuda_graphs=graphs,
            metadata={"config": "speedrun", "variant": args.variant, "reverts": sorted(reverts),
                      "start_step": args.start_step, "compile_warmup": "stage1", "compiled": True},
        )
        rows.append((label, profile(trainer.train_step, settings, device="cuda")))
    return rows


def check_graphs(trainer, steps: int) -> str:
    """How far graphed training is from eager training, beside how far two eager runs are apart.

    Three runs of ``steps`` steps from the same weights (eager, eager, graphs). Compared per
    tensor: the first step's summed gradients (same weights and data: only the order of atomic
    accumulations may differ) and the weights at the end. Relative difference = ||a - b|| / ||b||.
    """
    import torch

    initial = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    names = dict(trainer.model.named_parameters())
    real_step = trainer.optimizer.step
    runs = []
    for graphs in (False, False, True):
        trainer.set_cuda_graphs(graphs)
        trainer.reset(initial)
        first_grads = {}

        def step_and_keep(step, *args, first_grads=first_grads):
            if not first_grads:
                first_grads.update({n: p.grad.detach().float().clone() for n, p in names.items() if p.grad is not None})
            real_step(step, *args)

        trainer.optimizer.step = step_and_keep
        t0 = time.perf_counter()
        for s in range(trainer.start_step, trainer.start_step + steps):
            trainer.train_step(s)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1e3 / steps
        trainer.optimizer.step = real_step
        weights = {k: v.detach().float().clone() for k, v in trainer.model.state_dict().items()}
        runs.append((first_grads, weights, ms))
    trainer.set_cuda_graphs(False)
    trainer.reset(initial)

    def rel(a, b):
        return (a - b).norm().item() / max(b.norm().item(), 1e-30)

    (g0, w0, t0_), (g1, w1, t1_), (g2, w2, t2_) = runs
    lines = [f"graphs check over {steps} steps (relative difference to the first eager run; "
             f"mean step incl. capture: eager {t0_:.1f} / {t1_:.1f} ms, graphs {t2_:.1f} ms)",
             f"  {'tensor':16s} {'grad eager':>11s} {'grad graphs':>12s} {'weight eager':>13s} {'weight graphs':>14s}"]
    for k in w0:
        ge = f"{rel(g1[k], g0[k]):11.3g}" if k in g0 else f"{'-':>11s}"
        gg = f"{rel(g2[k], g0[k]):12.3g}" if k in g0 else f"{'-':>12s}"
        lines.append(f"  {k:16s} {ge} {gg} {rel(w1[k], w0[k]):13.3g} {rel(w2[k], w0[k]):14.3g}")
    return "\n".join(lines)


def loader_times(trainer, n: int = 24) -> str:
    """Host time of the loader (numpy) and of the copy to the GPU, per micro-batch, on this host."""
    import torch

    t0 = time.perf_counter()
    batches = [trainer.loader.next_batch() for _ in range(n)]
    t1 = time.perf_counter()
    for b in batches:
        b.to(trainer.device)
    t2 = time.perf_counter()
    torch.cuda.synchronize()
    return f"loader: next_batch {(t1 - t0) / n * 1e3:.3f} ms, to(device) {(t2 - t1) / n * 1e3:.3f} ms per micro-batch"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", choices=["record", "parent"], default="record")
    ap.add_argument("--revert", default=None)
    ap.add_argument("--start-step", type=int, default=10)
    ap.add_argument("--unprofiled", type=int, default=50)
    ap.add_argument("--active", type=int, default=6)
    ap.add_argument("--configs", default="cpu+cuda,cuda", help="comma list of: cpu+cuda, cuda, shapes, each optionally "
                    "with +graphs (CUDA-graph micro-batches), +launches (Inductor's per-launch records on), "
                    "then +uncached (Inductor's full launch path), then @wU and/or @aA (schedule warm-up "
                    "and active steps of that window)")
    ap.add_argument("--check-graphs", type=int, default=0, metavar="N",
                    help="first compare N steps with CUDA graphs against eager ones (0: skip)")
    ap.add_argument("--wait-for", default=None, help="after warm-up, wait until this file exists")
    ap.add_argument("--done", default=None, help="create this file when the timed part is over")
    ap.add_argument("--ready", default=None, help="create this file when compiled and warmed up")
    args = ap.parse_args()

    import torch

    from speedtrace.trainer.config import get_config
    from speedtrace.trainer.train import Trainer, parse_reverts

    reverts = parse_reverts(args.variant, args.revert)
    cfg = get_config("speedrun").with_reverts(reverts)
    torch.empty(1, device="cuda", requires_grad=True).backward()
    trainer = Trainer(cfg, "cuda", args.data, None, val_every=-1, start_step=args.start_step)
    trainer.warmup("stage1")
    print(loader_times(trainer), flush=True)
    if args.check_graphs:
        print(check_graphs(trainer, args.check_graphs), flush=True)
    if args.ready:
        Path(args.ready).touch()
    while args.wait_for and not Path(args.wait_for).exists():
        time.sleep(0.5)
    try:
        rows = profile_all(args, trainer, reverts)
    finally:
        if args.done:
            Path(args.done).touch()
    print(f"\n==== profiler dilation (speedrun, world size 1, {args.variant}) ====")
    print(f"{'config':18s} {'unprofiled ms (median, n)':26s} {'profiled ms (median, n)':24s} dilation  "
          "host ms unprof/prof  peak MiB")
    for name, run in rows:
        u, p = run["unprofiled_step_ms"], run["profiled_step_ms"]
        hu, hp = statistics.median(run["unprofiled_host_ms"]), statistics.median(run["profiled_host_ms"])
        print(f"{name:18s} {statistics.median(u):10.2f} ({len(u):3d}){'':10s} {statistics.median(p):10.2f} ({len(p)})"
              f"{'':9s} {run['dilation']:.4f}   {hu:7.1f} / {hp:7.1f}   {run['unprofiled_peak_allocated_mib']}")
    print(f"peak reserved over the whole run: {torch.cuda.max_memory_reserved() / 2**20:.0f} MiB")
    with open(Path(args.out) / "dilation.json", "w") as f:
        json.dump([[label, run] for label, run in rows], f, indent=1)   # labels may repeat
    return 0


if __name__ == "__main__":
    sys.exit(main())
