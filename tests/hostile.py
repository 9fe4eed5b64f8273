"""Trace sets whose names are hostile: what a crafted or merely odd trace could hold.

Each payload, if a renderer let it through as markup, would set ``window.__pwned`` (or inject an
element), so a browser test can tell that nothing ran. The names sit where the renderers show
names: kernel names (report tables, hover text, the kernel chart), annotations (phases, gap
attribution), CPU ops (gap attribution) and the directory path (the subject line).
"""

from __future__ import annotations

from pathlib import Path

from synth import Trace

IMG = "<img src=x onerror=window.__pwned=1>"
SCRIPT = "</script><script>window.__pwned=1</script>"
NEWLINE = "evil\nkernel<b>bold</b>"
BIDI = "gemm_\u202elanif_kernel"
QUOTES = "q\"uo'te onmouseover=window.__pwned=1 x=\""

KERNELS = {"img": IMG, "script": SCRIPT, "newline": NEWLINE, "bidi": BIDI, "quotes": QUOTES}

# What a reader should see for each name: control and bidi characters as visible escapes.
VISIBLE = {k: v.replace("\n", "\\x0a").replace("\u202e", "\\u202e") for k, v in KERNELS.items()}


def build(directory: Path, *, step0: int = 1, scale: float = 1.0) -> Path:
    """A one-rank trace set in ``directory`` (created): two steps, each with a phase named by a
    payload, every hostile kernel (and a plain one) on the compute stream, an NCCL kernel on a
    second stream, a memcpy, and idle gaps behind hostile CPU ops. ``scale`` stretches the
    durations, so a second set (``scale`` != 1) differs measurably from the first, for a diff."""
    directory.mkdir(parents=True, exist_ok=True)
    t = Trace(rank=0, world_size=1)
    names = list(KERNELS.values())
    for i, step in enumerate((step0, step0 + 1)):
        base = i * 1000.0
        t.step(step, base, 1000)
        t.annotation("forward", base + 1, 300)
        t.annotation(f"optimizer/{IMG}/update", base + 400, 500)
        t.annotation(SCRIPT, base + 910, 80)
        at = base + 5.0
        for j, name in enumerate(names + ["gemm_plain"]):
            start = at + 10
            dur = (20 + 5 * j) * scale
            t.cpu_op(name, at, 4)
            t.launch_kernel(name, launch_at=at + 1, start=start, dur=dur, grid=132 * (j + 1),
                            blocks_per_sm=float(j + 1), occupancy=25.0)
            # a gap after each kernel: the next launch comes late, behind a CPU op named by a payload
            t.cpu_op(names[j % len(names)], start + dur + 1, 30)
            at = start + dur + 40
        t.launch_kernel("ncclDevKernel_AllReduce_Sum_bf16_RING_LL", launch_at=at, start=at + 5,
                        dur=60 * scale, stream=20, grid=4, blocks_per_sm=0.03)
        t.launch_kernel(IMG, launch_at=at + 1, start=at + 20, dur=30, grid=264, blocks_per_sm=2.0)
        t.memcpy(start=at + 100, dur=15, launch_at=at + 90)
    t.write(directory / "rank-0.trace.json.gz")
    return directory


def hostile_dir(tmp_path: Path, label: str = "run") -> Path:
    """A directory whose own name is a payload too (``/`` cannot be in a file name)."""
    return tmp_path / f"{label}{IMG}"
