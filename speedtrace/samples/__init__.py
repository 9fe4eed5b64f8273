"""Small real trace sets shipped inside the package, so ``speedtrace report`` works out of the box.

Regenerate them with ``python -m speedtrace.samples.make_samples --data DATA`` (sources in
ATTRIBUTION.md).
"""

from __future__ import annotations

from pathlib import Path

from speedtrace.errors import SpeedtraceError

HERE = Path(__file__).resolve().parent

# name -> one line saying what the trace set is
SAMPLES: dict[str, str] = {
    "h200-record": "the bundled trainer, record 233, one H200, five stage-1 steps (full mode: CPU+CUDA, no shapes)",
    "h200-parent": "the bundled trainer with --variant parent (PR #233 reverted), same steps and mode",
    "h200-speedrun": "the original record-233 trainer, one H200, one profiler step (CPU+CUDA, no shapes)",
    "nccl-a100": "one A100 rank of a 2-rank NCCL job, three profiler steps (HTA test data, MIT)",
    "h100x8-normuon": "all 8 ranks of an 8xH100 modded-nanogpt run (NorMuon record), four profiler "
                      "steps with NCCL collectives (MIT, Keller Jordan)",
}
DEFAULT_SAMPLE = "h200-record"


def sample_path(name: str = DEFAULT_SAMPLE) -> Path:
    """The directory of the bundled sample ``name``; SpeedtraceError listing them when unknown."""
    if name not in SAMPLES:
        raise SpeedtraceError(f"no bundled sample named {name!r}; {list_samples(inline=True)}")
    path = HERE / name
    if not path.is_dir():
        raise SpeedtraceError(f"{path}: bundled sample missing from this installation")
    return path


def list_samples(inline: bool = False) -> str:
    """The sample names with their descriptions (one per line, or one line when ``inline``)."""
    if inline:
        return "samples: " + ", ".join(
            f"{n}{' (default)' if n == DEFAULT_SAMPLE else ''}" for n in SAMPLES)
    width = max(map(len, SAMPLES))
    return "\n".join(
        f"{n:<{width}}  {d}{'  [default]' if n == DEFAULT_SAMPLE else ''}" for n, d in SAMPLES.items())
