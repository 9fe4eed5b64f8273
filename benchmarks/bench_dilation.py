"""Profiler dilation of the candidate configurations, measured in one process on the GPU.

Builds and warms up the speedrun trainer once, then runs ``profiling.capture.profile`` with each
configuration in turn over the same stage-1 steps: CPU+CUDA activities without shapes (full
mode), CUDA only (with step-marker kernels), and optionally CPU+CUDA with record_shapes; a
"+launches" suffix keeps Inductor's per-launch profiler records on (off by default), and an
"+uncached" suffix times that configuration (its unprofiled steps too) with Inductor's full launch
path instead of the trainer's direct launcher calls (``trainer.inductor_launch``). Each
writes its own trace set under OUT/<name>/ and prints its dilation; a table comes last.

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
    for i, name in enumerate(args.configs.split(",")):
        inductor_launch.set_enabled(not name.endswith("+uncached"))
        base = name.removesuffix("+uncached").removesuffix("+launches")
        settings = ProfileSettings(
            out_dir=Path(args.out) / name.replace("+", "_"), first_step=args.start_step,
            unprofiled=args.unprofiled if i == 0 else 10, wait=0, warmup=2, active=args.active,
            mode="full" if base == "cpu+cuda" else "timing",
            activities={"shapes": "cpu+cuda"}.get(base, base), record_shapes=base == "shapes",
            launch_records="+launches" in name,
            metadata={"config": "speedrun", "variant": args.variant, "reverts": sorted(reverts),
                      "start_step": args.start_step, "compile_warmup": "stage1", "compiled": True},
        )
        rows.append((name, profile(trainer.train_step, settings, device="cuda")))
    return rows


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
                    "with +launches (Inductor's per-launch records on) and then +uncached (Inductor's full launch path)")
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
    with open(Path(args.out) / "dilation.json", "w") as f:
        json.dump(dict(rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
