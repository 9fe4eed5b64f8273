"""The original trainer and ours on the same shards, one after the other on one GPU.

Runs modded-nanogpt's own ``train_gpt.py`` + ``triton_kernels.py`` (the record, 20dd1582, and
optionally its parent, 699e93c8; from directories the user fetched, never shipped here) and the
bundled speedtrace trainer over the same token shards, at world size 1. Each side runs in its own
process: all compile side by side, then each in turn (the others idle) runs its stage-1 steps
through ``speedtrace.profiling.capture.profile``: one start-up step under a discarded profiler
session, ``--unprofiled`` steps timed between device synchronisations, then a profiled window
(full mode: CPU+CUDA activities, no shapes) written as a trace set that ``speedtrace report`` and
``speedtrace diff`` read (OUT/<side>/rank-0.trace.json.gz and run.json). Last, the table of
median step times and peak memory, and ``speedtrace diff`` of ours against each original.

What is changed in the original, at run time and in memory only, where this machine forces it:
- FlashAttention-3 from the kernels hub (``kernels.get_kernel``) is replaced by flex_attention
  with the same causal, per-document, sliding-window mask (``speedtrace.trainer.attention``:
  query i sees key j when j <= i, i - j <= window and both are in the same document);
- the softcapped cross-entropy kernels cast their float arguments (A, B, C, grad_s) to fp32 on
  entry: under torch.compile they arrive as fp64, which Triton 3.6 refuses in their loops;
- the script stops before its all-stage warm-up; this harness then drives the original's own
  objects (its model, training manager and data generator) one step at a time, as its training
  loop does, for a fixed number of steps, with no validation.
Everything else (model, optimizer, kernels, loader, compile settings) is the original's.

Fetch the originals (once):

    git clone https://github.com/KellerJordan/modded-nanogpt mng-record
    git -C mng-record checkout 20dd1582
    git -C mng-record worktree add ../mng-parent 699e93c8

then, on the GPU machine (shards from ``speedtrace data synth DIR --config speedrun ...`` or
benchmarks/synth_data_parallel.py; FineWeb shards work too):

    python -P benchmarks/anchor_trainer.py --anchor mng-record --parent-anchor mng-parent --data DIR --out OUT
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path

WARMUP_BANNER = "#            Warmup kernels            #"   # the original stops before this section
CE_KERNELS = ("fused_softcapped_entropy_fwd_kernel", "fused_softcapped_entropy_bwd_kernel")
FLOAT_ARGS = ("A", "B", "C", "grad_s")
SIDES = ("ours", "record", "parent", "ours-parent")


# -- run-time patches of the original ----------------------------------------------------------


def patch_ce_kernels(source: str) -> str:
    """``source`` with each softcapped CE kernel casting its float arguments to fp32 on entry."""
    for name in CE_KERNELS:
        m = re.search(rf"^def {name}\((.*?)\):\n", source, re.S | re.M)
        if m is None:
            raise SystemExit(f"anchor_trainer: triton_kernels.py has no kernel {name}: not 20dd1582 or 699e93c8?")
        params = [p.split(":")[0].strip() for p in m.group(1).split(",")]
        casts = "".join(f"    {p} = tl.cast({p}, tl.float32)\n" for p in FLOAT_ARGS if p in params)
        source = source[:m.end()] + casts + source[m.end():]
    return source


def module_from_source(name: str, source: str, filename: str) -> types.ModuleType:
    """A module executed from ``source``; its text is registered in linecache under ``filename``
    (a name that exists on no disk), so that Triton's JIT and inspect read the patched text."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


def make_varlen_attention():
    """A stand-in for FlashAttention-3's ``flash_attn_varlen_func`` as the original calls it (one
    packed stream of documents, causal, window (W, 0)), computed by flex_attention with
    speedtrace's block mask. Its modules are bound here: the model calls it inside a compiled
    graph, where an import statement would break the graph."""
    from torch.nn.attention.flex_attention import flex_attention

    from speedtrace.trainer.attention import block_mask, document_ids

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                               causal=True, softmax_scale=None, window_size=(-1, -1), **_):
        length = q.shape[0]
        window = window_size[0] if window_size[0] >= 0 else length
        mask = block_mask(document_ids(cu_seqlens_q, length), window)
        q4, k4, v4 = (t.transpose(0, 1)[None] for t in (q, k, v))
        return flex_attention(q4, k4, v4, block_mask=mask, scale=softmax_scale)[0].transpose(0, 1)
    return flash_attn_varlen_func


def install_fake_hub() -> None:
    """``from kernels import get_kernel`` (the Hugging Face kernels hub) answers with flex_attention."""
    hub = types.ModuleType("kernels")
    fa3 = types.SimpleNamespace(flash_attn_interface=types.SimpleNamespace(
        flash_attn_varlen_func=make_varlen_attention()))

    def get_kernel(name, *args, **kwargs):
        if "flash-attention-3" not in name:
            raise RuntimeError(f"anchor_trainer: no stand-in for kernel {name!r}")
        return fa3
    hub.get_kernel = get_kernel
    sys.modules["kernels"] = hub


def load_original(anchor: Path, data: Path, workdir: Path) -> dict:
    """Execute the original's train_gpt.py up to its warm-up section; returns its globals."""
    train, kernels = anchor / "train_gpt.py", anchor / "triton_kernels.py"
    source = train.read_text()
    cut = source.find(WARMUP_BANNER)
    if cut < 0:
        raise SystemExit(f"anchor_trainer: {train} has no warm-up section: not 20dd1582 or 699e93c8?")
    cut = source.rfind("\n", 0, source.rfind("\n", 0, cut)) + 1   # the banner's first '#' line
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(free_port()))
    install_fake_hub()
    module_from_source("triton_kernels", patch_ce_kernels(kernels.read_text()),
                       f"{kernels} (patched in memory: fp32 scalars)")
    sys.argv = [str(train)]            # the script reads itself and its kernels file for its log
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)                  # its logs/ directory
    g = {"__name__": "__main__", "__file__": str(train)}
    exec(compile(source[:cut], str(train), "exec"), g)   # the unmodified first part of the file
    g["args"].train_files = str(data / "*train_*.bin")
    g["args"].val_files = str(data / "*val_*.bin")
    return g


def original_step(g: dict):
    """One training step of the original, as its training loop runs it (no validation)."""
    stage0 = g["TRAINING_STAGES"][0]
    loader = g["distributed_data_generator"](g["args"].train_files, stage0.batch_size, stage0.train_max_seq_len,
                                             grad_accum_steps=g["grad_accum_steps"])
    manager, model, accum, scale = g["training_manager"], g["model"], g["grad_accum_steps"], g["grad_scale"]

    def step(n: int) -> None:
        manager.advance_schedule(n)
        for _ in range(accum):
            inputs, targets, cum_seqlens, bigram_inputs, bigram_cpu = loader.send(manager.train_loader_send_args)
            manager.sparse_index_update(n, bigram_cpu)
            loss = model(inputs, targets, cum_seqlens, bigram_inputs, manager.get_forward_args()) * scale
            manager.sparse_index_share(n)
            loss.backward()
            del loss
        manager.step_optimizers(n)
    return step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- one side, in its own process ----------------------------------------------------------------


def run_side(args) -> int:
    """Build and warm up one trainer, wait for our turn, then time and profile its steps."""
    os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")
    out = Path(args.out).resolve()
    data = Path(args.data).resolve()
    side = args.side
    try:
        import torch

        from speedtrace.profiling.capture import ProfileSettings, profile
        torch.empty(1, device="cuda", requires_grad=True).backward()
        t0 = time.time()
        if side in ("ours", "ours-parent"):
            from speedtrace.trainer.config import get_config
            from speedtrace.trainer.train import Trainer, parse_reverts
            variant = "parent" if side == "ours-parent" else "record"
            reverts = parse_reverts(variant, None)
            trainer = Trainer(get_config("speedrun").with_reverts(reverts), "cuda", str(data), None, val_every=-1,
                              start_step=args.start_step)
            trainer.warmup("stage1")
            step_fn = trainer.train_step
            meta = {"implementation": "speedtrace", "variant": variant, "reverts": sorted(reverts)}
        else:
            anchor = Path(args.parent_anchor if side == "parent" else args.anchor).resolve()
            g = load_original(anchor, data, out / f"{side}-work")
            step_fn = original_step(g)
            for n in range(args.start_step):      # compiles at step 0 (and at the first Adam step)
                step_fn(n)
            meta = {"implementation": "modded-nanogpt train_gpt.py", "anchor": str(anchor),
                    "patches": ["fa3->flex_attention", "ce kernel scalars fp32", "no warm-up, no validation"]}
        torch.cuda.synchronize()
        print(f"{side}: built and warmed up in {time.time() - t0:.0f} s", flush=True)
        torch.cuda.empty_cache()      # hand the cache back while the others run
        (out / f"{side}.ready").touch()
        while not (out / f"{side}.go").exists():
            time.sleep(0.5)
        settings = ProfileSettings(
            out_dir=out / side, first_step=args.start_step, unprofiled=args.unprofiled, wait=0, warmup=1,
            active=args.active, mode="full", activities="cpu+cuda", startup_steps=1,
            metadata={"config": "speedrun", "side": side, "start_step": args.start_step, **meta})
        run = profile(step_fn, settings, device="cuda")
        print(f"{side}: median step {statistics.median(run['unprofiled_step_ms']):.2f} ms", flush=True)
        return 0
    except BaseException:
        traceback.print_exc()
        (out / f"{side}.failed").touch()
        return 1


# -- the orchestrator ------------------------------------------------------------------------------


def spawn(side: str, args, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-P", str(Path(__file__).resolve()), "--side", side, "--data", str(args.data),
           "--out", str(out), "--start-step", str(args.start_step), "--unprofiled", str(args.unprofiled),
           "--active", str(args.active)]
    if args.anchor:
        cmd += ["--anchor", str(args.anchor)]
    if args.parent_anchor:
        cmd += ["--parent-anchor", str(args.parent_anchor)]
    log = open(out / f"{side}.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd())


def wait_until(predicate, deadline: float) -> bool:
    while not predicate():
        if time.time() > deadline:
            return False
        time.sleep(0.5)
    return True


def summary_rows(out: Path, sides: list[str]) -> list[dict]:
    rows = []
    for side in sides:
        path = out / side / "run.json"
        if not path.exists():
            rows.append({"side": side, "ok": False})
            continue
        run = json.loads(path.read_text())
        rows.append({"side": side, "ok": True, "median_ms": statistics.median(run["unprofiled_step_ms"]),
                     "steps": run["unprofiled_steps"], "step_ms": run["unprofiled_step_ms"],
                     "profiled_ms": run["profiled_step_ms"], "peak_allocated_mib": run["unprofiled_peak_allocated_mib"],
                     "peak_reserved_mib": run["unprofiled_peak_reserved_mib"], "host_bound": run["host_bound"],
                     "steal_ms": run["steal_ms"], "environment": run.get("environment")})
    return rows


def start_diff(out: Path, before: str, after: str):
    """``speedtrace diff OUT/before OUT/after --format md`` into OUT/diff_<before>_<after>.md, started."""
    if not ((out / before / "run.json").exists() and (out / after / "run.json").exists()):
        return None
    target = out / f"diff_{before}_{after}.md"
    return target, subprocess.Popen([sys.executable, "-P", "-m", "speedtrace", "diff", str(out / before),
                                     str(out / after), "--format", "md"], stdout=open(target, "w"),
                                    stderr=subprocess.STDOUT)


def orchestrate(args) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    bad = [s for s in sides if s not in SIDES]
    if bad:
        raise SystemExit(f"anchor_trainer: unknown side(s) {bad}; choose from {SIDES}")
    for side, anchor in (("record", args.anchor), ("parent", args.parent_anchor)):
        if side in sides:
            if anchor is None:
                raise SystemExit(f"anchor_trainer: side {side} needs --{'parent-' if side == 'parent' else ''}anchor")
            for f in ("train_gpt.py", "triton_kernels.py"):
                if not (Path(anchor) / f).is_file():
                    raise SystemExit(f"anchor_trainer: {Path(anchor) / f}: not found (see --help for how to fetch it)")
    for pattern in ("*.ready", "*.go", "*.failed"):
        for f in out.glob(pattern):
            f.unlink()
    deadline = time.time() + args.timeout
    # A `timeout` around this process must not leave the sides running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    procs = {}
    try:
        procs = {side: spawn(side, args, out) for side in sides}
        print(f"compiling {', '.join(sides)} side by side (logs: {out}/<side>.log)", flush=True)
        wait_until(lambda: all((out / f"{s}.ready").exists() or procs[s].poll() is not None for s in sides),
                   deadline)
        ready = [s for s in sides if (out / f"{s}.ready").exists()]
        print(f"ready after {args.timeout - (deadline - time.time()):.0f} s: {', '.join(ready) or 'none'}", flush=True)
        if args.ready:
            Path(args.ready).touch()
        if args.wait_for:
            wait_until(lambda: Path(args.wait_for).exists(), deadline)
        for side in ready:      # one at a time: the others sleep
            (out / f"{side}.go").touch()
            try:
                procs[side].wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                print(f"{side}: timed out", flush=True)
            print(f"{side}: done at {args.timeout - (deadline - time.time()):.0f} s", flush=True)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    rows = summary_rows(out, sides)
    (out / "anchor_trainer.json").write_text(json.dumps({"rows": rows, "command": sys.argv}, indent=1))
    print_table(rows)
    running = [d for d in (start_diff(out, o, "ours") for o in ("record", "parent") if o in sides and "ours" in sides)
               if d]
    for target, p in running:
        try:
            p.wait(timeout=max(60.0, deadline - time.time()))
            print(f"speedtrace diff: {target}", flush=True)
        except subprocess.TimeoutExpired:
            p.kill()
            print(f"speedtrace diff: {target} not finished before the deadline", flush=True)
    return 0 if all(r["ok"] for r in rows) else 1


def print_table(rows: list[dict]) -> None:
    """Medians and means: Adam updates run on odd steps only, so step times alternate between two
    levels and a median of both can sit on either; the mean and the per-parity medians show that."""
    env = next((r["environment"] for r in rows if r.get("ok") and r.get("environment")), None) or {}
    device = (env.get("devices") or [{}])[0].get("name", "?")
    print(f"\n==== trainers on one {device}, torch {env.get('torch')}, triton {env.get('triton')}: world size 1, "
          "stage-1 steps, same shards, timed between synchronisations")
    ok = {r["side"]: r for r in rows if r["ok"]}
    print(f"{'side':12s} {'steps':>7s} {'median ms':>10s} {'mean ms':>8s} {'even med':>9s} {'odd med':>8s} "
          f"{'peak MiB':>9s} {'ours/this (median, mean)':>25s} {'host-bound':>11s}")
    for r in rows:
        if not r["ok"]:
            print(f"{r['side']:12s} failed: see its log")
            continue
        ms, steps = r["step_ms"], r["steps"]
        even = statistics.median(m for s, m in zip(steps, ms) if s % 2 == 0)
        odd = statistics.median(m for s, m in zip(steps, ms) if s % 2 == 1)
        ratio = "-"
        if "ours" in ok:
            ratio = (f"{ok['ours']['median_ms'] / r['median_ms']:.3f}, "
                     f"{statistics.mean(ok['ours']['step_ms']) / statistics.mean(ms):.3f}")
        print(f"{r['side']:12s} {steps[0]:>3d}-{steps[-1]:<3d} {r['median_ms']:10.2f} {statistics.mean(ms):8.2f} "
              f"{even:9.2f} {odd:8.2f} {r['peak_allocated_mib']:9.0f} {ratio:>25s} "
              f"{str(r['host_bound'].get('unprofiled')):>11s}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor", type=Path, help="directory with the record's train_gpt.py and triton_kernels.py "
                        "(modded-nanogpt at 20dd1582)")
    parser.add_argument("--parent-anchor", type=Path, help="the same files at 699e93c8 (the record's parent)")
    parser.add_argument("--data", type=Path, required=True, help="token shards (*train_*.bin), the same for every side")
    parser.add_argument("--out", type=Path, required=True, help="output directory (trace sets, logs, table)")
    parser.add_argument("--sides", default=None,
                        help=f"comma list of {', '.join(SIDES)} (default: ours, record and, with --parent-anchor, parent)")
    parser.add_argument("--start-step", type=int, default=10,
                        help="first timed step (the originals run steps 0..S-1 first, compiling; default 10)")
    parser.add_argument("--unprofiled", type=int, default=40, help="steps timed without the profiler (default 40)")
    parser.add_argument("--active", type=int, default=2, help="profiled steps after one warm-up step (default 2)")
    parser.add_argument("--timeout", type=float, default=540, help="seconds for the whole run (default 540)")
    parser.add_argument("--ready", help="create this file once every side is compiled and waiting")
    parser.add_argument("--wait-for", help="then wait for this file before timing the sides")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)   # a child process's own side
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"anchor_trainer: {args.data}: not a directory of shards")
    if args.side:
        return run_side(args)
    if args.sides is None:
        args.sides = "ours,record" + (",parent" if args.parent_anchor else "")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
