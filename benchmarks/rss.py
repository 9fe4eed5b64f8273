"""Run a command and report its wall time and the peak summed RSS of its whole process tree.

    python benchmarks/rss.py -- speedtrace report trace.json.gz --format json

RSS is summed over the command and all its descendants (loader worker processes included),
sampled every ``interval`` seconds with psutil, so a peak shorter than that may be missed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measurement:
    wall_s: float
    peak_rss_bytes: int
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""
    cpu_s: float | None = None  # user + system time of the tree (waited-for processes), Unix only


def _children_cpu_s() -> float | None:
    try:
        import resource
    except ImportError:
        return None
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tree_rss(proc: psutil.Process) -> int:
    """Summed RSS of ``proc`` and its live descendants (processes that vanish count 0)."""
    total = 0
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in family:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], *, interval: float = 0.02, capture: bool = True, env=None,
            timeout_s: float | None = None) -> Measurement:
    """Run ``cmd`` to completion, sampling the RSS of its process tree.

    Past ``timeout_s`` the command and its descendants are killed (returncode 124).
    """
    out = subprocess.PIPE if capture else None
    cpu0 = _children_cpu_s()
    start = time.perf_counter()
    popen = subprocess.Popen(cmd, stdout=out, stderr=out, env=env)
    proc = psutil.Process(popen.pid)
    peak = 0
    # Pipes are drained by a helper thread so a chatty command cannot block on a full pipe.
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}
    threads = []
    if capture:
        import threading

        for key, stream in (("out", popen.stdout), ("err", popen.stderr)):
            t = threading.Thread(target=lambda s=stream, k=key: chunks[k].append(s.read()))
            t.start()
            threads.append(t)
    timed_out = False
    while popen.poll() is None:
        peak = max(peak, tree_rss(proc))
        if timeout_s is not None and time.perf_counter() - start > timeout_s:
            _kill_tree(proc)
            popen.wait()
            timed_out = True
            break
        time.sleep(interval)
    wall = time.perf_counter() - start
    for t in threads:
        t.join()
    code = 124 if timed_out else popen.returncode
    cpu1 = _children_cpu_s()
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return Measurement(wall, peak, code, b"".join(chunks["out"]), b"".join(chunks["err"]), cpu)


def _kill_tree(proc: psutil.Process) -> None:
    """Kill the process we started and its descendants, each by its own pid."""
    try:
        family = [*proc.children(recursive=True), proc]
    except psutil.Error:
        family = [proc]
    for p in family:
        try:
            p.kill()
        except psutil.Error:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.02, help="sampling period in s (0.02)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    m = measure(cmd, interval=args.interval, capture=False)
    cpu = f", CPU {m.cpu_s:.3f} s" if m.cpu_s is not None else ""
    print(f"wall {m.wall_s:.3f} s{cpu}, peak RSS {m.peak_rss_bytes / 1e6:.1f} MB, exit {m.returncode}",
          file=sys.stderr)
    return m.returncode


if __name__ == "__main__":
    sys.exit(main())
