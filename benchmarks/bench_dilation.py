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
A "+nogc" suffix freezes and disables Python's garbage collector for that window, a "+cublas" or
"+cublaslt" suffix picks torch's BLAS library for it, and "+mallopt" makes glibc keep freed heap
memory from that window on (for the rest of the process). ``--host-stats`` records per step where
the host's time went: this process's CPU time and system time, the main thread's CPU time and
involuntary context switches, page faults, other processes' CPU time and steal time; it prints a
line per window (``--probe-log`` adds the timings of ``dev/host_probe.py`` running beside it).

    python -P benchmarks/bench_dilation.py --data DIR --out OUT [--variant parent] [--unprofiled 50]

DIR holds training shards of the speedrun config (benchmarks/synth_data_parallel.py writes
synthetic ones; FineWeb shards work too). Needs one CUDA GPU.

Two variants can compile side by side on one GPU and still time their steps one at a time, on a
quiet host: the second signals --ready when warmed up, the first waits for it (--wait-for), runs
and signals --done, which the second waits for.
"""

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path


class HostStats:
    """Per-step host accounting from /proc (Linux), to tell a slower host from more host work."""

    def __init__(self):
        self.tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        self.steps: list[dict] = []

    def _snapshot(self):
        cpu = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        busy = (cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6]) * self.tick_ms   # user nice system irq softirq
        steal = cpu[7] * self.tick_ms if len(cpu) > 7 else 0.0
        proc = resource.getrusage(resource.RUSAGE_SELF)
        main = resource.getrusage(resource.RUSAGE_THREAD)   # the calling thread: the main one
        return dict(host_ms=time.perf_counter() * 1e3, proc_cpu_ms=(proc.ru_utime + proc.ru_stime) * 1e3,
                    main_cpu_ms=(main.ru_utime + main.ru_stime) * 1e3, sys_ms=proc.ru_stime * 1e3,
                    others_cpu_ms=busy, steal_ms=steal, page_faults=proc.ru_minflt + proc.ru_majflt,
                    preempted=main.ru_nivcsw)

    def threads(self) -> dict:
        """CPU ms so far per thread of this process, keyed by (tid, name)."""
        out = {}
        for task in Path("/proc/self/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)
                name = fields[0].split("(", 1)[1]
                rest = fields[1].split()
                out[(task.name, name)] = (int(rest[11]) + int(rest[12])) * self.tick_ms
            except (OSError, IndexError, ValueError):
                continue
        return out

    def wrap(self, step_fn):
        def step(n):
            before = self._snapshot()
            start = time.time()
            step_fn(n)
            d = {k: v - before[k] for k, v in self._snapshot().items()}
            d["others_cpu_ms"] -= d["proc_cpu_ms"]   # the whole machine's busy time, less this process's
            d["start"] = start   # wall clock, to line steps up with other processes' logs
            self.steps.append(d)
        return step

    @staticmethod
    def summary(steps: list[dict]) -> str:
        return ", ".join(f"{k} {statistics.median(s[k] for s in steps):.1f}" for k in steps[0] if k != "start")


def probe_median(path: str, steps: list[dict]) -> float | None:
    """Median of dev/host_probe.py's timings taken while ``steps`` ran (by wall clock)."""
    begin, end = steps[0]["start"], steps[-1]["start"] + steps[-1]["host_ms"] / 1e3
    times = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and begin <= float(fields[0]) <= end:
            times.append(float(fields[1]))
    return round(statistics.median(times), 3) if times else None


def keep_freed_heap() -> None:
    """glibc: serve allocations up to 32 MiB from the heap and keep freed heap memory, so that a
    step's short-lived host buffers reuse pages instead of faulting in fresh ones."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 64 << 20)


BASES = ("cpu+cuda", "cuda", "shapes")
FLAGS = ("graphs", "launches", "uncached", "nogc", "cublas", "cublaslt", "mallopt")


def parse_label(label: str) -> tuple[str, set, dict]:
    """'cpu+cuda+graphs@w6' -> ('cpu+cuda', {'graphs'}, {'w': 6}): base configuration, suffixes,
    schedule overrides."""
    name, _, schedule = label.partition("@")
    sched = {k[0]: int(k[1:]) for k in schedule.split("@") if k}
    parts = name.split("+")
    flags = {p for p in parts if p in FLAGS}
    base = "+".join(p for p in parts if p not in FLAGS)
    if base not in BASES:
        raise SystemExit(f"bench_dilation: {label!r}: the configuration must be one of {BASES}")
    return base, flags, sched


def profile_all(args, trainer, reverts, out: Path) -> list:
    import torch

    from speedtrace.profiling.capture import ProfileSettings, profile
    from speedtrace.trainer import inductor_launch

    default_blas = torch.backends.cuda.preferred_blas_library()
    rows = []
    for i, label in enumerate(args.configs.split(",")):
        # "@wU" / "@aA" at the end: this window's schedule warm-up / active steps (default 2 / --active).
        base, flags, sched = parse_label(label)
        inductor_launch.set_enabled("uncached" not in flags)
        graphs = "graphs" in flags
        if graphs != (trainer.graphs is not None):
            trainer.set_cuda_graphs(graphs)
            trainer.train_step(args.start_step)   # captures outside any profiler session
        blas = next((f for f in flags if f.startswith("cublas")), None)
        torch.backends.cuda.preferred_blas_library(blas or default_blas)
        unprofiled = args.unprofiled if i == 0 else 10
        settings = ProfileSettings(
            out_dir=Path(args.out) / label.replace("+", "_").replace("@", "_"), first_step=args.start_step,
            unprofiled=unprofiled, wait=0, warmup=sched.get("w", 2), active=sched.get("a", args.active),
            mode="full" if base == "cpu+cuda" else "timing",
            activities={"shapes": "cpu+cuda"}.get(base, base), record_shapes=base == "shapes",
            launch_records="launches" in flags, cuda_graphs=graphs,
            metadata={"config": "speedrun", "variant": args.variant, "reverts": sorted(reverts),
                      "start_step": args.start_step, "compile_warmup": "stage1", "compiled": True},
        )
        stats = HostStats() if args.host_stats else None
        step_fn = stats.wrap(trainer.train_step) if stats else trainer.train_step
        threads_before = stats.threads() if stats else None
        if "mallopt" in flags:
            keep_freed_heap()
        if "nogc" in flags:
            gc.collect()
            gc.freeze()
            gc.disable()
        try:
            run = profile(step_fn, settings, device="cuda")
        finally:
            gc.enable()
            gc.unfreeze()
        if stats:
            # Step 0 is the profiler's start-up call; the last profiled step writes the trace.
            unprof = stats.steps[1:1 + unprofiled]
            prof = stats.steps[-settings.active:-1]
            run["host_stats"] = {"unprofiled": unprof, "profiled": prof}
            if args.probe_log:
                run["host_stats"]["probe_memory_ms"] = {"unprofiled": probe_median(args.probe_log, unprof),
                                                        "profiled": probe_median(args.probe_log, prof)}
                print(f"{label}: host_probe.py median memory ms during the steps {run['host_stats']['probe_memory_ms']}")
            after = stats.threads()
            top = sorted(((after[k] - threads_before.get(k, 0.0), k[1]) for k in after), reverse=True)[:5]
            print(f"{label}: unprofiled median {HostStats.summary(unprof)}\n{label}: profiled   median "
                  f"{HostStats.summary(prof)}\n{label}: busiest threads (CPU ms over the window): "
                  + ", ".join(f"{name} {ms:.0f}" for ms, name in top), flush=True)
        rows.append((label, run))
        # Written after every window, so that a run cut short keeps what it measured.
        out.write_text(json.dumps([[lbl, r] for lbl, r in rows], indent=1))   # labels may repeat
    torch.backends.cuda.preferred_blas_library(default_blas)
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, metavar="DIR", help="folder of training shards for the speedrun config")
    ap.add_argument("--out", required=True, metavar="OUT", help="trace sets go to OUT/<label>/, with dilation.json")
    ap.add_argument("--variant", choices=["record", "parent"], default="record",
                    help="trainer variant (parent: all four PR #233 changes reverted)")
    ap.add_argument("--revert", default=None, help="comma list of single changes to revert (as speedtrace train)")
    ap.add_argument("--start-step", type=int, default=10, help="step number of the first step run (default 10, in stage 1)")
    ap.add_argument("--unprofiled", type=int, default=50,
                    help="unprofiled steps timed before the first window (later windows: 10)")
    ap.add_argument("--active", type=int, default=6, help="profiled steps per window (default 6)")
    ap.add_argument("--configs", default="cpu+cuda,cuda", help="comma list of: cpu+cuda, cuda, shapes, each optionally "
                    "with +graphs (CUDA-graph micro-batches), +launches (Inductor's per-launch records on), "
                    "then +uncached (Inductor's full launch path), then @wU and/or @aA (schedule warm-up "
                    "and active steps of that window); +nogc (garbage collector frozen and off), "
                    "+cublas / +cublaslt (torch's BLAS library for that window), +mallopt (glibc keeps freed heap "
                    "memory from then on)")
    ap.add_argument("--host-stats", action="store_true",
                    help="record per step where the host's time went (/proc; Linux) and print a line per window")
    ap.add_argument("--probe-log", default=None, metavar="FILE",
                    help="with --host-stats: the log of dev/host_probe.py running beside this run; "
                         "each window gets the probe's median during its unprofiled and profiled steps")
    ap.add_argument("--check-graphs", type=int, default=0, metavar="N",
                    help="first compare N steps with CUDA graphs against eager ones (0: skip)")
    ap.add_argument("--wait-for", default=None, help="after warm-up, wait until this file exists")
    ap.add_argument("--done", default=None, help="create this file when the timed part is over")
    ap.add_argument("--ready", default=None, help="create this file when compiled and warmed up")
    args = ap.parse_args()
    for label in args.configs.split(","):
        parse_label(label)   # refuse a bad label before the warm-up, not after it

    import torch

    from speedtrace.commands.trainer_options import revert_names
    from speedtrace.trainer.config import get_config, reverts_for
    from speedtrace.trainer.train import Trainer

    reverts = reverts_for(args.variant, revert_names(args.revert))
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
        Path(args.out).mkdir(parents=True, exist_ok=True)
        rows = profile_all(args, trainer, reverts, Path(args.out) / "dilation.json")
    finally:
        if args.done:
            Path(args.done).touch()
    print(f"\n==== profiler dilation (speedrun, world size 1, {args.variant}) ====")
    print(f"{'config':18s} {'unprofiled ms (median, n)':26s} {'profiled ms (median, n)':24s} dilation  "
          "host ms unprof/prof  peak MiB  mode/activities")
    for name, run in rows:
        u, p = run["unprofiled_step_ms"], run["profiled_step_ms"]
        hu, hp = statistics.median(run["unprofiled_host_ms"]), statistics.median(run["profiled_host_ms"])
        print(f"{name:18s} {statistics.median(u):10.2f} ({len(u):3d}){'':10s} {statistics.median(p):10.2f} ({len(p)})"
              f"{'':9s} {run['dilation']:.4f}   {hu:7.1f} / {hp:7.1f}   {run['unprofiled_peak_allocated_mib']}  {run['mode']}/{run['activities']}")
    print(f"peak reserved over the whole run: {torch.cuda.max_memory_reserved() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
