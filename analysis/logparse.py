"""Read a speedrun training log (trainer-record-233.md §7) into its final result and step clock.

A record log opens with the full source text of the trainer, which contains the very f-strings
that print the log lines (``print0(f"step:{step}/{train_steps} val_loss:...")``). Only lines that
match a log format *in full*, with numbers in every field, are read, so the listing is never
mistaken for log output. The two formats are::

    step:{s}/{total} val_loss:{loss:.4f} train_time:{ms:.0f}ms step_avg:{avg:.2f}ms   (validation)
    step:{s}/{total} train_time:{ms:.0f}ms step_avg:{avg:.2f}ms                      (training)

The official result of a run is its final validation line, the one whose step equals the total.
When the log has the trainer's separator line (100 "="), nothing before its first one is read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

_NUM = r"\d+(?:\.\d+)?"
VAL_LINE = re.compile(
    rf"step:(\d+)/(\d+) val_loss:({_NUM}|nan|inf) train_time:(\d+)ms step_avg:{_NUM}ms"
)
TRAIN_LINE = re.compile(rf"step:(\d+)/(\d+) train_time:(\d+)ms step_avg:{_NUM}ms")
SEPARATOR = "=" * 100


class LogProblem(Exception):
    """A log that cannot give a result (the message is the reason it is left out)."""


@dataclass(frozen=True)
class RunLog:
    """One finished run: its final validation line and the training lines' clock.

    ``step_ms`` maps a step count k to the train_time (ms) printed on the training line
    ``step:k/total``, i.e. the clock after k training steps. Validation lines are not in it:
    they are read after a synchronize, the training lines without one, and mixing the two kinds
    of reading would move the queued GPU work of the last steps from one stage to another.
    """

    path: Path
    total_steps: int
    final_loss: float
    final_time_ms: int
    step_ms: dict[int, int] = field(default_factory=dict)

    @property
    def final_time_s(self) -> float:
        return self.final_time_ms / 1000.0


def parse_log_text(text: str, path: Path | str = "<text>") -> RunLog:
    """Parse the text of one log; raise ``LogProblem`` if it has no usable final validation line.

    When a file holds several runs one after another (each starts with a validation line at
    step 0, or shows a different total), the last run that reached its final validation line
    is the one returned.
    """
    finished: RunLog | None = None
    step_ms: dict[int, int] = {}
    total: int | None = None
    bad_final: str | None = None
    lines = text.splitlines()
    # The trainer prints a line of 100 "=" right after the source listing: when present, the
    # listing before it cannot contribute even a fully formed line (say, inside a docstring).
    if SEPARATOR in lines:
        lines = lines[lines.index(SEPARATOR) + 1:]
    for raw in lines:
        line = raw.rstrip()
        if m := TRAIN_LINE.fullmatch(line):
            step, n, ms = int(m[1]), int(m[2]), int(m[3])
            if n != total:
                step_ms, total = {}, n
            step_ms[step] = ms
            continue
        m = VAL_LINE.fullmatch(line)
        if not m:
            continue
        step, n, loss, ms = int(m[1]), int(m[2]), float(m[3]), int(m[4])
        if step == 0 or n != total:
            # a new run starts: forget the previous run's clock
            step_ms, total = {}, n
        if step == n:
            if not math.isfinite(loss):
                bad_final = f"final val_loss is {m[3]}"
                continue
            finished = RunLog(Path(path), n, loss, ms, dict(step_ms))
    if finished is None:
        raise LogProblem(bad_final or "no final validation line 'step:N/N val_loss:X train_time:Tms ...'")
    return finished


def parse_log(path: Path | str) -> RunLog:
    """Parse one log file (see ``parse_log_text``); unreadable files raise ``LogProblem`` too."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LogProblem(f"cannot read: {exc.strerror or exc}") from None
    return parse_log_text(text, path)


def stage_bounds(total_steps: int) -> list[tuple[int, int]]:
    """The training stages as half-open step ranges [start, end).

    The record schedules 1450 steps in three equal stages, ends at round(i/3 · 1450), then runs
    a 40-step extension: [0,483) [483,967) [967,1450) [1450,1490). Other totals keep the same
    proportions: scheduled = round(total · 1450/1490), three equal stages of it, and the rest as
    the extension (which may be empty for very short runs).
    """
    scheduled = round(total_steps * 1450 / 1490)
    ends = [round(scheduled * i / 3) for i in (1, 2, 3)] + [total_steps]
    starts = [0] + ends[:-1]
    return list(zip(starts, ends))


def stage_step_ms(run: RunLog) -> list[float | None]:
    """Mean step time (ms) of each stage of ``stage_bounds(run.total_steps)``.

    Each stage spans from the last logged training step of the previous stage (step 0 at clock
    0 for the first stage) to its own last logged training step k: (T(k) − T(k_prev)) /
    (k − k_prev). With every step logged, as the trainer does, these are exactly the stage
    boundaries. A stage without a logged step of its own, or following such a stage, is None.
    """
    out: list[float | None] = []
    anchor: tuple[int, int] | None = (0, 0)
    for start, end in stage_bounds(run.total_steps):
        inside = [k for k in run.step_ms if start < k <= end]
        if not inside or anchor is None:
            out.append(None)
            anchor = (max(inside), run.step_ms[max(inside)]) if inside else None
            continue
        k = max(inside)
        k0, t0 = anchor
        out.append((run.step_ms[k] - t0) / (k - k0))
        anchor = (k, run.step_ms[k])
    return out
