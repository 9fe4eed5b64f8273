"""Regenerate the bundled sample trace sets from the project's data folder (not in the repository).

    python -m speedtrace.samples.make_samples --data DATA [--from-profile DIR NAME ...]

``h200-speedrun``: one profiler step of the record-233 trainer on an H200 (CPU+CUDA activities,
record_shapes off), cut from a two-step trace so the package stays small, with a ``run.json``
giving the untraced step time so that reports can say how much the profiler dilated the step.
``nccl-a100``: HTA's A100 NCCL test trace (MIT licence, see ATTRIBUTION.md), copied unchanged.

Only the standard library is used: this runs once, at release time, not on the report path.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_BYTES = 5 * 1024 * 1024

SPEEDRUN_SOURCE = "external-traces/h200-speedrun-record233-noshapes/rank-0.trace.json.gz"
SPEEDRUN_STEP = 12  # the second (steadier) of the two traced steps
# The untraced step time recorded with the source trace (same machine and config).
UNPROFILED_STEP_MS = [248.0]
NCCL_SOURCE = "external-traces/hta-nccl-a100/nccl_data.json.gz"

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}
LAUNCH_CATS = {"cuda_runtime", "cuda_driver"}


def _read_trace(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def _write_trace(trace: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the gzip bytes identical from one regeneration to the next.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(json.dumps(trace, separators=(",", ":")).encode("utf-8"))


def cut_one_step(trace: dict, step: int) -> tuple[dict, float]:
    """The events of profiler step ``step`` and the step's CPU duration in µs."""
    out, durations = cut_steps(trace, step, step)
    return out, durations[0]


def cut_steps(trace: dict, first: int, last: int) -> tuple[dict, list[float]]:
    """The events of profiler steps ``first..last`` and each step's CPU duration in µs.

    Kept: every metadata event; CPU-side events overlapping the steps' CPU ``ProfilerStep#N``
    annotations; GPU activity whose launch (matched by ``correlation``) starts inside them;
    the steps' ``gpu_user_annotation``; flow arrows whose two ends were kept. The profiler's own
    whole-window span and instant markers are dropped: they describe the full capture, not the steps.
    """
    events = trace["traceEvents"]
    labels = {f"ProfilerStep#{n}" for n in range(first, last + 1)}
    cpu_steps = sorted((e for e in events if e.get("cat") == "user_annotation" and e.get("name") in labels),
                       key=lambda e: e["ts"])
    if len(cpu_steps) != len(labels):
        raise SystemExit(f"expected CPU annotations ProfilerStep#{first}..{last}, found {len(cpu_steps)}")
    t0 = cpu_steps[0]["ts"]
    t1 = cpu_steps[-1]["ts"] + cpu_steps[-1]["dur"]

    def overlaps(e):
        return e["ts"] < t1 and e["ts"] + e.get("dur", 0) > t0

    launched_inside = {
        e["args"]["correlation"]
        for e in events
        if e.get("ph") == "X" and e.get("cat") in LAUNCH_CATS and t0 <= e["ts"] < t1
        and "correlation" in e.get("args", {})
    }
    kept = []
    for e in events:
        ph, cat = e.get("ph"), e.get("cat")
        if ph == "M":
            kept.append(e)
        elif ph == "X" and cat in GPU_CATS:
            if e.get("args", {}).get("correlation") in launched_inside:
                kept.append(e)
        elif ph == "X" and cat == "gpu_user_annotation":
            if e.get("name") in labels:
                kept.append(e)
        elif ph == "X" and cat != "Trace":
            if overlaps(e):
                kept.append(e)
        elif ph in ("s", "f") and cat == "ac2g":
            if e.get("id") in launched_inside:
                kept.append(e)
        elif ph in ("s", "f") and cat == "fwdbwd":
            if t0 <= e["ts"] < t1:
                kept.append(e)
    # An fwdbwd arrow needs both ends; drop the halves whose partner fell outside the step.
    ends: dict[tuple, set] = {}
    for e in kept:
        if e.get("cat") == "fwdbwd":
            ends.setdefault(e["id"], set()).add(e["ph"])
    kept = [e for e in kept if e.get("cat") != "fwdbwd" or ends[e["id"]] == {"s", "f"}]

    out = {k: v for k, v in trace.items() if k != "traceEvents"}
    out["traceEvents"] = kept
    return out, [e["dur"] for e in cpu_steps]


def make_speedrun(data: Path, dest: Path) -> None:
    trace, step_us = cut_one_step(_read_trace(data / SPEEDRUN_SOURCE), SPEEDRUN_STEP)
    _write_trace(trace, dest / "rank-0.trace.json.gz")
    profiled_ms = [round(step_us / 1000.0, 3)]
    run = {
        "schema": "speedtrace.run/1",
        "source": f"DATA/{SPEEDRUN_SOURCE}, ProfilerStep#{SPEEDRUN_STEP} only",
        "config": "speedrun",
        "variant": "record",
        "mode": "full",
        "unprofiled_step_ms": UNPROFILED_STEP_MS,
        "profiled_step_ms": profiled_ms,
        "dilation": round(statistics.median(profiled_ms) / statistics.median(UNPROFILED_STEP_MS), 4),
        "note": ("record-233 trainer, world size 1, one H200, flex_attention in place of FA3, stage 1; "
                 "traced with CPU+CUDA activities and record_shapes off. The untraced step time was "
                 "measured separately on the same machine."),
    }
    (dest / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")


# What the run.json of a trainer sample cannot say by itself.
PROFILE_NOTES = {
    "h200-record": ("full mode (CPU+CUDA, no shapes), 2026-11-29: record and parent variants compiled side by "
                    "side on one H200 host; the record was profiled while the parent, compiled and warmed "
                    "up, waited, so the host was quiet. Each profile began with a discarded one-step "
                    "profiler session (startup_steps). Under CPU tracing the eager step's host is close to "
                    "the critical path, so its dilation varies with the host's speed."),
    "h200-parent": ("full mode (CPU+CUDA, no shapes), 2026-11-29: --variant parent (all four kernel changes "
                    "of PR #233 reverted), profiled after the record variant had finished."),
}


def make_from_profile(profile_dir: Path, dest: Path, steps: int = 5) -> None:
    """A sample from a ``speedtrace profile`` trace set: its first ``steps`` traced steps.

    The last traced step is the one whose end writes the trace (left out of the dilation), so
    cutting it keeps the sample small and leaves the steps the dilation was measured on.
    """
    run = json.loads((profile_dir / "run.json").read_text(encoding="utf-8"))
    first = run["profiled_steps"][0]
    last = first + steps - 1
    for trace_path in sorted(profile_dir.glob("rank-*.trace.json.gz")):
        trace, _ = cut_steps(_read_trace(trace_path), first, last)
        _write_trace(trace, dest / trace_path.name)
    run["sample_steps"] = [first, last]
    if dest.name in PROFILE_NOTES:
        run["note"] = PROFILE_NOTES[dest.name]
    (dest / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")


def make_nccl(data: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / NCCL_SOURCE, dest / "nccl_data.json.gz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, metavar="DATA",
                        help="the project's data folder (holds external-traces/; not in the repository): "
                             "remake h200-speedrun and nccl-a100 from it")
    parser.add_argument("--out", type=Path, default=HERE, help="where the sample folders go")
    parser.add_argument("--from-profile", nargs=2, action="append", default=[], metavar=("DIR", "NAME"),
                        help="also cut sample NAME from a `speedtrace profile` trace set in DIR "
                             "(the record and parent ones are full-mode profiles of the speedrun config)")
    args = parser.parse_args(argv)
    if args.data is not None:
        if not (args.data / SPEEDRUN_SOURCE).is_file() or not (args.data / NCCL_SOURCE).is_file():
            parser.error(f"{args.data}: expected {SPEEDRUN_SOURCE} and {NCCL_SOURCE} in it")
        make_speedrun(args.data, args.out / "h200-speedrun")
        make_nccl(args.data, args.out / "nccl-a100")
    for directory, name in args.from_profile:
        make_from_profile(Path(directory), args.out / name)
    for f in sorted(args.out.glob("*/*.json*")):
        size = f.stat().st_size
        print(f"{f.relative_to(args.out)}: {size / 1e6:.2f} MB")
        if size > MAX_BYTES:
            raise SystemExit(f"{f} is over {MAX_BYTES} bytes; trim it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
