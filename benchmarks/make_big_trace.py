"""Write a large synthetic trace set for the loader benchmark: rank-N.trace.json, ~SIZE GB in all.

    python benchmarks/make_big_trace.py /tmp/big-trace [--size-gb 1.0] [--ranks 8] [--source TRACE]

Each rank file repeats the events of a real trace (default: the bundled h200-speedrun sample, one
record-233 step on an H200) copy after copy, so the per-category mix, kernel args and nesting are
the real ones. Each copy is shifted to start after the previous one ends and stretched by a random factor
of 1 ± 2 % around its own start (an affine map keeps every parent around its children); GPU
activity durations are also shortened by up to 5 % (a shorter leaf stays inside its parent and
never collides with its stream neighbours). Correlation, External and flow ids are offset per
copy so they stay unique. Files are written event by event, never held whole in memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

import msgspec

DEFAULT_SOURCE = (Path(__file__).resolve().parents[1] / "speedtrace" / "samples" / "h200-speedrun"
                  / "rank-0.trace.json.gz")
GPU_CATS = {"kernel", "Kernel", "gpu_memcpy", "gpu_memset"}
ID_ARGS = ("correlation", "External id")


def read_source(path: Path) -> dict:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return msgspec.json.decode(data)


def _max_id(events) -> int:
    top = 0
    for e in events:
        a = e.get("args") or {}
        for k in ID_ARGS:
            if isinstance(a.get(k), int):
                top = max(top, a[k])
        if isinstance(e.get("id"), int):
            top = max(top, e["id"])
    return top


def _copy(events, *, shift: float, t0: float, stretch: float, id_offset: int, device: int,
          pid_offset: int, rng: random.Random, with_metadata: bool):
    """One repetition of the source events (a generator of new dicts)."""
    for e in events:
        if e.get("ph") == "M" and not with_metadata:
            continue
        e = dict(e)
        gpu = e.get("cat") in GPU_CATS or e.get("cat") == "gpu_user_annotation"
        if isinstance(e.get("ts"), (int, float)):
            e["ts"] = round(shift + t0 + (e["ts"] - t0) * stretch, 3)
        if isinstance(e.get("dur"), (int, float)):
            dur = e["dur"] * stretch
            if e.get("cat") in GPU_CATS:
                dur *= rng.uniform(0.95, 1.0)
            e["dur"] = round(dur, 3)
        if isinstance(e.get("id"), int):
            e["id"] += id_offset
        if isinstance(e.get("pid"), int):
            # GPU rows live under the device id; CPU rows under a per-rank process id.
            e["pid"] = device if (gpu or e["pid"] == 0) else e["pid"] + pid_offset
        args = e.get("args")
        if isinstance(args, dict):
            args = dict(args)
            for k in ID_ARGS:
                if isinstance(args.get(k), int):
                    args[k] += id_offset
            if "device" in args and gpu:
                args["device"] = device
            e["args"] = args
        yield e


def write_rank(out: Path, rank: int, ranks: int, src: dict, target_bytes: int, seed: int) -> Counter:
    events = src["traceEvents"]
    timed = [e["ts"] for e in events if e.get("ph") == "X" and isinstance(e.get("ts"), (int, float))]
    t0 = min(timed)
    span = max(e["ts"] + e.get("dur", 0) for e in events
               if e.get("ph") == "X" and isinstance(e.get("ts"), (int, float))) - t0
    id_step = _max_id(events) + 1
    rng = random.Random(seed * 1000 + rank)
    enc = msgspec.json.Encoder()
    head = {k: v for k, v in src.items() if k not in ("traceEvents", "traceName")}
    props = (src.get("deviceProperties") or [{}])[0]
    head["deviceProperties"] = [{**props, "id": d} for d in range(ranks)]
    dist = dict(src.get("distributedInfo") or {})
    dist.update(rank=rank, world_size=ranks, backend=dist.get("backend", "nccl"))
    dist["pg_config"] = [{"pg_name": "0", "pg_desc": "default_pg", "backend_config": "cuda:nccl",
                          "pg_size": ranks, "ranks": list(range(ranks))}]
    head["distributedInfo"] = dist
    counts: Counter = Counter()
    path = out / f"rank-{rank}.trace.json"
    with open(path, "wb") as f:
        # The header as Kineto spaces it: HTA finds the rank with the pattern '"rank":\s+N'.
        f.write(json.dumps(head).encode()[:-1] + b', "traceEvents": [\n')
        written, rep, first = 0, 0, True
        while written < target_bytes:
            copy = _copy(events, shift=rep * span * 1.05, t0=t0, stretch=rng.uniform(0.98, 1.02),
                         id_offset=rep * id_step, device=rank, pid_offset=rank * 100_000, rng=rng,
                         with_metadata=rep == 0)
            for e in copy:
                line = enc.encode(e)
                f.write(line if first else b",\n" + line)
                first = False
                written += len(line) + 2
                counts[(e.get("ph"), e.get("cat"))] += 1
            rep += 1
        f.write(b'\n], "traceName": ' + enc.encode(str(path)) + b"}\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, help="folder for rank-N.trace.json (created if missing)")
    p.add_argument("--size-gb", type=float, default=1.0, help="total uncompressed size (1.0)")
    p.add_argument("--ranks", type=int, default=8, help="rank files (8)")
    p.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="trace whose events are repeated (default: the bundled h200-speedrun sample)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-copy stretch factors (0)")
    args = p.parse_args(argv)
    if not args.source.exists():
        print(f"{args.source}: source trace not found", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    src = read_source(args.source)
    per_rank = int(args.size_gb * 1e9 / args.ranks)
    total: Counter = Counter()
    for rank in range(args.ranks):
        c = write_rank(args.out_dir, rank, args.ranks, src, per_rank, args.seed)
        total += c
        print(f"rank-{rank}.trace.json: {os.path.getsize(args.out_dir / f'rank-{rank}.trace.json') / 1e6:.0f} MB, "
              f"{sum(c.values())} events", flush=True)
    src_counts = Counter((e.get("ph"), e.get("cat")) for e in src["traceEvents"])
    n_src, n_out = sum(src_counts.values()), sum(total.values())
    print(f"\n{'ph':>2} {'cat':<22} {'events':>10} {'share':>7} {'source share':>12}")
    for (ph, cat), n in total.most_common():
        print(f"{ph or '':>2} {cat or '-':<22} {n:>10} {n / n_out:>7.2%} {src_counts[(ph, cat)] / n_src:>12.2%}")
    size = sum(os.path.getsize(args.out_dir / f"rank-{r}.trace.json") for r in range(args.ranks))
    print(f"\n{args.ranks} files, {n_out} events, {size / 1e9:.2f} GB in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
