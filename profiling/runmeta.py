"""What run.json records about the environment a trace was taken in."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def git_revision() -> str | None:
    """The speedtrace checkout's commit (with '-dirty' when modified), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_properties() -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        return []
    props = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        props.append({
            "id": i, "name": p.name, "num_sms": p.multi_processor_count,
            "total_memory_bytes": p.total_memory, "capability": f"{p.major}.{p.minor}",
        })
    return props


def cpu_steal_ms(stat: str = "/proc/stat") -> float | None:
    """CPU time the hypervisor has taken from this (virtual) machine so far, over all its CPUs, in
    ms (Linux: the steal column of /proc/stat, in clock ticks); None where it cannot be read."""
    try:
        with open(stat) as f:
            fields = f.readline().split()
        return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, AttributeError):
        return None


def environment() -> dict:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "triton": triton_version,
        "cuda": None if torch.version.cuda is None else str(torch.version.cuda),
        "devices": device_properties(),
        "host": platform.node(),
    }
