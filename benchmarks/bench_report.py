"""HTA against speedtrace on the same inputs: wall time and peak memory, side by side.

    python benchmarks/bench_report.py [TRACE ...] [--runs 3] [--big DIR] [--append FILE]

TRACE is a trace file or a directory of rank files (default: the bundled h200-speedrun and
nccl-a100 samples).

Each tool runs as a fresh process per run, timed end to end (interpreter start included), with
the summed RSS of its process tree sampled every 20 ms (benchmarks/rss.py):
- HTA: ``TraceAnalysis(trace_dir=..., include_last_profiler_step=True)`` then
  ``get_temporal_breakdown()`` and ``get_comm_comp_overlap()``;
- speedtrace: ``speedtrace report PATH --format json``; while that command is not usable, the
  loader alone, which the output then says;
- the loader alone, ``speedtrace.analysis.load.load(PATH)`` (last column).
CPU time (user + system of the whole process tree) is shown too: on a shared machine it is
steadier than wall time. Both read the same directory (single traces are copied into a temporary one, as HTA wants a
directory). Peak memory is reported above the RSS of a bare ``import speedtrace.analysis``.
The big input (--big) is made by benchmarks/make_big_trace.py and skipped when absent.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rss import measure  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "speedtrace" / "samples"
DEFAULT_INPUTS = [SAMPLES / "h200-speedrun" / "rank-0.trace.json.gz", SAMPLES / "nccl-a100" / "nccl_data.json.gz"]
DEFAULT_BIG = Path(tempfile.gettempdir()) / "speedtrace-big-trace"

HTA_SCRIPT = """
import sys
from hta.trace_analysis import TraceAnalysis
analysis = TraceAnalysis(trace_dir=sys.argv[1], include_last_profiler_step=True)
analysis.get_temporal_breakdown(visualize=False)
analysis.get_comm_comp_overlap(visualize=False)
"""
LOAD_ONLY = "import sys; from speedtrace.analysis.load import load; load(sys.argv[1], progress=False)"
BASELINE = "import speedtrace.analysis, time; time.sleep(0.5)"


def label_of(path: Path) -> str:
    """A trace file is named by its folder (rank-0.trace.json.gz says little), a directory by itself."""
    return path.name if path.is_dir() else f"{path.parent.name}/{path.name}"


def versions() -> str:
    from importlib import metadata

    found = [f"Python {platform.python_version()}"]
    for dist in ("speedtrace", "traceinsight", "HolisticTraceAnalysis"):
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def uncompressed_size(path: Path) -> int:
    if path.read_bytes()[:2] != b"\x1f\x8b":
        return path.stat().st_size
    n = 0
    with gzip.open(path) as f:
        while chunk := f.read(1 << 22):
            n += len(chunk)
    return n


def trace_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name != "run.json" and p.name.endswith((".json", ".json.gz")))


def speedtrace_command(probe_dir: Path) -> tuple[list[str], str]:
    """The report command when it works on a small input, else the loader alone."""
    report = [sys.executable, "-m", "speedtrace", "report"]
    try:
        r = subprocess.run([*report, str(probe_dir), "--format", "json"], capture_output=True, timeout=600)
        json.loads(r.stdout)
        if r.returncode == 0:
            return report + ["{path}", "--format", "json"], "speedtrace report PATH --format json"
    except (subprocess.SubprocessError, ValueError):
        pass
    return ([sys.executable, "-c", LOAD_ONLY, "{path}"],
            "speedtrace.analysis.load.load(PATH) only (the report command did not run)")


def run_many(cmd: list[str], runs: int, timeout_s: float) -> dict:
    walls, peaks, cpus = [], [], []
    for _ in range(runs):
        m = measure(cmd, timeout_s=timeout_s)
        if m.returncode != 0:
            tail = (m.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
            return {"error": f"exit {m.returncode}: {tail[0] if tail else ''}"[:120]}
        walls.append(m.wall_s)
        peaks.append(m.peak_rss_bytes)
        cpus.append(m.cpu_s or 0.0)
    return {"wall_s": statistics.median(walls), "peak": statistics.median(peaks),
            "cpu_s": statistics.median(cpus), "walls": [round(w, 2) for w in walls]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", type=Path, metavar="TRACE",
                   help="trace files or directories of rank files (default: the bundled h200-speedrun and "
                        "nccl-a100 samples)")
    p.add_argument("--runs", type=int, default=3, help="runs per tool and input; medians are shown (3)")
    p.add_argument("--big", type=Path, default=DEFAULT_BIG, help=f"generated big trace set ({DEFAULT_BIG})")
    p.add_argument("--big-runs", type=int, default=1, help="runs per tool on the big set (1)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds before a run is abandoned")
    p.add_argument("--no-hta", action="store_true", help="measure speedtrace only")
    p.add_argument("--machine", default=f"{os.cpu_count()}-core CPU box ({platform.machine()})")
    p.add_argument("--append", type=Path, metavar="FILE",
                   help="also append the table, with its date, machine, versions and command, to FILE")
    args = p.parse_args(argv)

    workers = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="speedtrace-bench-"))
    try:
        inputs = []
        for i, src in enumerate(args.inputs or DEFAULT_INPUTS):
            if src.is_dir():
                inputs.append((label_of(src), src, args.runs))
                continue
            if not src.is_file():
                print(f"skipped {src}: not found", file=sys.stderr)
                continue
            d = tmp / f"input-{i}"   # HTA wants a directory
            d.mkdir()
            shutil.copy(src, d / src.name)
            inputs.append((label_of(src), d, args.runs))
        if args.big.is_dir() and trace_files(args.big):
            inputs.append((f"generated {len(trace_files(args.big))}-rank set", args.big, args.big_runs))
        else:
            print(f"skipped the big set: {args.big} not found "
                  f"(make it with: python benchmarks/make_big_trace.py {args.big})", file=sys.stderr)
        if not inputs:
            print("no inputs", file=sys.stderr)
            return 1

        st_cmd, st_what = speedtrace_command(inputs[0][1])
        print(f"speedtrace side: {st_what}", file=sys.stderr)
        base = statistics.median(measure([sys.executable, "-c", BASELINE]).peak_rss_bytes for _ in range(3))

        rows = []
        for label, d, runs in inputs:
            sizes = sorted((uncompressed_size(f) for f in trace_files(d)), reverse=True)
            at_once = sum(sizes[: min(workers, len(sizes))])
            print(f"{label}: {sum(sizes) / 1e6:.0f} MB ...", file=sys.stderr, flush=True)
            st = run_many([a.replace("{path}", str(d)) for a in st_cmd], runs, args.timeout)
            ld = run_many([sys.executable, "-c", LOAD_ONLY, str(d)], runs, args.timeout)
            hta = ({"error": "not run"} if args.no_hta
                   else run_many([sys.executable, "-c", HTA_SCRIPT, str(d)], runs, args.timeout))
            rows.append((label, sum(sizes), at_once, hta, st, ld))
            print(f"  hta {hta}\n  speedtrace {st}\n  load only {ld}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = render(rows, base)
    print(table)
    if args.append:
        cmd = "python benchmarks/bench_report.py " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(args.append, "a") as f:
            f.write(f"\n## Trace loading and report: HTA vs speedtrace ({datetime.date.today()})\n\n"
                    f"- machine: {args.machine}\n- versions: {versions()}\n- command: `{cmd.strip()}`\n"
                    f"- speedtrace side: {st_what}\n"
                    f"- wall time and peak summed RSS of the process tree (medians of runs as noted; "
                    f"peak less {base / 1e6:.0f} MB, the RSS of a bare `import speedtrace.analysis`); "
                    f"'at once' = the uncompressed size of the files parsed concurrently "
                    f"({workers} worker processes)\n\n{table}\n")
    return 0


def render(rows, base) -> str:
    def s(r):
        return f"{r['wall_s']:.2f}" if "wall_s" in r else r["error"]

    def mb(r):
        return f"{max(r['peak'] - base, 0) / 1e6:.0f}" if "peak" in r else "-"

    def cpu(r):
        return f"{r['cpu_s']:.2f}" if "cpu_s" in r else "-"

    def ratio(key, a, b):
        return f"{a[key] / b[key]:.1f}x" if key in a and key in b and b[key] else "-"

    def per(r, at_once):
        return f"{max(r['peak'] - base, 0) / at_once:.2f}" if "peak" in r else "-"

    lines = ["| input | uncompressed MB | HTA s | speedtrace s | speed ratio | HTA CPU s | "
             "speedtrace CPU s | CPU ratio | HTA peak MB | speedtrace peak MB | "
             "speedtrace peak / at once | load only: s, CPU s, peak MB, peak / at once |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, size, at_once, hta, st, ld in rows:
        lines.append(f"| {label} | {size / 1e6:.1f} | {s(hta)} | {s(st)} | {ratio('wall_s', hta, st)} "
                     f"| {cpu(hta)} | {cpu(st)} | {ratio('cpu_s', hta, st)} | {mb(hta)} | {mb(st)} "
                     f"| {per(st, at_once)} (of {at_once / 1e6:.0f} MB) "
                     f"| {s(ld)}, {cpu(ld)}, {mb(ld)}, {per(ld, at_once)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
