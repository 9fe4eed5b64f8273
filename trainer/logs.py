"""The run log, in the record's format so that one parser reads the record's logs and ours.

Rank 0 writes ``<out>/logs/<uuid4>.txt`` and echoes chosen lines to stdout; other ranks write
nothing. The header replaces the record's embedded source listing with the command line and the
configuration; the step lines are the record's:

    step:{s}/{total} val_loss:{loss:.4f} train_time:{ms:.0f}ms step_avg:{ms/max(s,1):.2f}ms
    step:{s+1}/{total} train_time:{ms:.0f}ms step_avg:{ms/(s+1):.2f}ms
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

RULE = "=" * 100


def val_line(step: int, total: int, val_loss: float, train_ms: float, steps_done: int) -> str:
    return (f"step:{step}/{total} val_loss:{val_loss:.4f} train_time:{train_ms:.0f}ms "
            f"step_avg:{train_ms / max(steps_done, 1):.2f}ms")


def train_line(step: int, total: int, train_ms: float, steps_done: int) -> str:
    """The line after training step ``step`` (0-based), numbered step + 1 as in the record."""
    return f"step:{step + 1}/{total} train_time:{train_ms:.0f}ms step_avg:{train_ms / max(steps_done, 1):.2f}ms"


def memory_line(allocated_bytes: int, reserved_bytes: int) -> str:
    return (f"peak memory allocated: {allocated_bytes // 1024 // 1024} MiB "
            f"reserved: {reserved_bytes // 1024 // 1024} MiB")


def _versions(cuda: bool) -> list[str]:
    import torch

    lines = [f"Running Python {sys.version}",
             f"Running PyTorch {torch.__version__} compiled for CUDA {torch.version.cuda}"]
    try:
        import triton

        lines.append(f"Running Triton version {triton.__version__}")
    except ImportError:
        lines.append("Running Triton version (not installed)")
    lines.append(f"Running on {platform.node()} ({platform.platform()})")
    if cuda:
        try:
            smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            smi = "(nvidia-smi not available)"
        lines.append(smi.rstrip())
    return lines


class RunLog:
    """Log lines of one run (a no-op on ranks other than 0, or when ``out_dir`` is None)."""

    def __init__(self, out_dir: str | Path | None, *, enabled: bool = True, echo: bool = True):
        self.enabled = enabled
        self.echo = echo and enabled
        self.path = None
        if enabled and out_dir is not None:
            logs = Path(out_dir) / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            self.path = logs / f"{uuid.uuid4()}.txt"

    def __call__(self, line: str, console: bool = True) -> None:
        if not self.enabled:
            return
        if self.path is not None:
            with self.path.open("a") as f:
                print(line, file=f)
        if console and self.echo:
            print(line, flush=True)

    def header(self, cfg, *, arguments: dict | None, world_size: int, cuda: bool) -> None:
        """Command line, arguments, configuration and versions, then a rule (file only)."""
        if not self.enabled:
            return
        if self.path is not None and self.echo:
            print(self.path, flush=True)
        lines = [f"# command line: {shlex.join(sys.argv)}",
                 f"# arguments: {json.dumps(_jsonable(arguments or {}))}",
                 f"# world size {world_size}, config:",
                 json.dumps(_jsonable(dataclasses.asdict(cfg)), sort_keys=False),
                 RULE, *_versions(cuda), RULE]
        for line in lines:
            self(line, console=False)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted(x)
    return x
