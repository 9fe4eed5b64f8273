"""Compare groups of training runs: the statistics of the record READMEs' table (metrics.md,
"Run comparison"), plus the mean step time of each training stage.

``load_group`` reads the logs of one group, ``compare`` turns groups into the
``speedtrace.runs/1`` document, ``render_text`` and ``render_markdown`` print it. scipy is
imported only when a p-value is computed.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from speedtrace.analysis.logparse import LogProblem, RunLog, parse_log, stage_bounds, stage_step_ms
from speedtrace.analysis.tables import md_escape
from speedtrace.errors import SpeedtraceError, warn

SCHEMA = "speedtrace.runs/1"
DEFAULT_TARGET = 3.28


@dataclass
class RunGroup:
    """The usable runs of one group and the logs left out of it (file, reason)."""

    name: str
    runs: list[RunLog]
    left_out: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.runs[0].total_steps


def load_group(name: str, paths: list[Path]) -> RunGroup:
    """Parse every log of a group; logs without a final validation line are warned about and
    left out. Raises ``SpeedtraceError`` when no log is usable or the logs disagree on the total
    number of steps."""
    runs, left_out = [], []
    for path in paths:
        try:
            runs.append(parse_log(path))
        except LogProblem as exc:
            warn(f"{path}: {exc}; left out of group '{name}'")
            left_out.append((Path(path), str(exc)))
    if not runs:
        raise SpeedtraceError(f"{name}: no usable log (each lacks a final validation line)")
    totals = sorted({r.total_steps for r in runs})
    if len(totals) > 1:
        listing = ", ".join(f"{r.path.name}: {r.total_steps}" for r in runs)
        raise SpeedtraceError(f"{name}: logs disagree on the total steps ({listing})")
    return RunGroup(name, runs, left_out)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _sample_std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _constant(values: list[float]) -> bool:
    return all(v == values[0] for v in values)


def loss_p_value(losses: list[float], target: float) -> float | None:
    """One-sided one-sample t-test that the mean loss is below ``target`` (None if undefined:
    fewer than two runs, or all losses equal)."""
    if len(losses) < 2 or _constant(losses):
        return None
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _finite_or_none(stats.ttest_1samp(losses, target, alternative="less").pvalue)


def time_p_value(candidate: list[float], baseline: list[float]) -> float | None:
    """Welch's t-test, one-sided: the candidate's mean time is below the baseline's (None if
    undefined: fewer than two runs on a side, or no spread on both sides)."""
    if len(candidate) < 2 or len(baseline) < 2 or (_constant(candidate) and _constant(baseline)):
        return None
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(candidate, baseline, equal_var=False, alternative="less")
    return _finite_or_none(res.pvalue)


def _mean_per_stage(per_run: list[list[float | None]]) -> list[float | None]:
    """Per stage, the mean over the runs that logged it (None if none did)."""
    out = []
    for column in zip(*per_run):
        known = [v for v in column if v is not None]
        out.append(statistics.fmean(known) if known else None)
    return out


def compare(groups: list[RunGroup], target: float = DEFAULT_TARGET) -> dict:
    """The ``speedtrace.runs/1`` document; ``groups[0]`` is the baseline."""
    base_times = [r.final_time_s for r in groups[0].runs]
    base_losses = [r.final_loss for r in groups[0].runs]
    out = []
    for i, group in enumerate(groups):
        times = [r.final_time_s for r in group.runs]
        losses = [r.final_loss for r in group.runs]
        stages = [stage_step_ms(r) for r in group.runs]
        out.append({
            "name": group.name,
            "runs": len(group.runs),
            "steps": group.total_steps,
            "time_mean_s": statistics.fmean(times),
            "time_std_s": _sample_std(times),
            "time_delta_s": statistics.fmean(times) - statistics.fmean(base_times) if i else 0.0,
            "time_p": time_p_value(times, base_times) if i else None,
            "loss_mean": statistics.fmean(losses),
            "loss_std": _sample_std(losses),
            "loss_delta": statistics.fmean(losses) - statistics.fmean(base_losses) if i else 0.0,
            "loss_p": loss_p_value(losses, target),
            "losses": losses,
            "times_s": times,
            "stage_step_ms": _mean_per_stage(stages),
            "stages": [list(b) for b in stage_bounds(group.total_steps)],
            "logs": [
                {"file": r.path.name, "loss": r.final_loss, "time_s": r.final_time_s,
                 "stage_step_ms": s}
                for r, s in zip(group.runs, stages)
            ],
            "left_out": [{"file": p.name, "reason": why} for p, why in group.left_out],
        })
    return {"schema": SCHEMA, "target_loss": target, "groups": out}


# ----------------------------------------------------------------------------- rendering

COLUMNS = ["Runs", "Steps", "Time μ", "Time σ", "Time +/-", "Time p", "Loss μ", "Loss σ", "Loss +/-", "p"]
STAGE_NAMES = ["stage 1", "stage 2", "stage 3", "extension"]


def _num(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    # p-values span orders of magnitude; 0.0000 would hide how small a Welch p is
    if x is not None and 0 < x < 5e-5:
        return f"{x:.1e}"
    return _num(x)


def _delta(x: float) -> str:
    return f"{x:+.4f}"


def _row(g: dict) -> list[str]:
    return [str(g["runs"]), str(g["steps"]), _num(g["time_mean_s"]), _num(g["time_std_s"]),
            _delta(g["time_delta_s"]), _p(g["time_p"]), _num(g["loss_mean"]), _num(g["loss_std"]),
            _delta(g["loss_delta"]), _p(g["loss_p"])]


def _stage_cells(g: dict) -> list[str]:
    return [f"{_num(v, 2)} [{a},{b})" for v, (a, b) in zip(g["stage_step_ms"], g["stages"])]


def render_text(doc: dict) -> str:
    """The README-style table, each run's loss and time, then the mean step time per stage."""
    groups = doc["groups"]
    w = max(10, *(len(g["name"]) for g in groups)) + 2
    lines = [" " * w + "".join(f"{c:>10}" for c in COLUMNS)]
    lines += [f"{g['name']:<{w}}" + "".join(f"{c:>10}" for c in _row(g)) for g in groups]
    lines.append(f"(p: one-sided t-test that the mean loss is below {doc['target_loss']}; "
                 "Time p: Welch's t-test, one-sided, that the group is faster than the baseline)")
    for g in groups:
        lines += ["", f"{g['name']}:",
                  "  losses = [" + ", ".join(f"{x:.4f}" for x in g["losses"]) + "]",
                  "  times  = [" + ", ".join(f"{x:.4f}" for x in g["times_s"]) + "]"]
        lines += [f"  left out: {e['file']} ({e['reason']})" for e in g["left_out"]]
    lines += ["", "Mean step time per stage, ms [steps):"]
    lines += [f"{g['name']:<{w}}" + "".join(f"{c:>20}" for c in _stage_cells(g)) for g in groups]
    return "\n".join(lines) + "\n"


def render_markdown(doc: dict) -> str:
    """The same content as GitHub tables."""
    groups = [dict(g, name=md_escape(g["name"])) for g in doc["groups"]]
    lines = ["| | " + " | ".join(COLUMNS) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
    lines += [f"| {g['name']} | " + " | ".join(_row(g)) + " |" for g in groups]
    lines += ["", f"p: one-sided t-test that the mean loss is below {doc['target_loss']}; "
              "Time p: Welch's t-test, one-sided, that the group is faster than the baseline.", ""]
    lines += ["| | Run | Loss | Time (s) |", "|---|---|---:|---:|"]
    for g in groups:
        lines += [f"| {g['name']} | {md_escape(r['file'])} | {r['loss']:.4f} | {r['time_s']:.4f} |"
                  for r in g["logs"]]
        lines += [f"| {g['name']} | {md_escape(e['file'])} | left out: {md_escape(e['reason'])} | |"
                  for e in g["left_out"]]
    lines += ["", "Mean step time per stage (ms, steps [start,end)):", "",
              "| | " + " | ".join(STAGE_NAMES) + " |", "|---" + "|---:" * len(STAGE_NAMES) + "|"]
    lines += [f"| {g['name']} | " + " | ".join(_stage_cells(g)) + " |" for g in groups]
    return "\n".join(lines) + "\n"
