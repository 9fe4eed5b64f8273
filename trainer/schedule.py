"""The record's training schedule as plain functions of the step number.

Stages (batch size, sequence length, attention windows, MTP weights, lr multiplier) come from
``TrainConfig.stages``; their boundaries are ``round(cumulative duration * scheduled steps)``,
which for the speedrun gives [0, 483) [483, 967) [967, 1450) and the extension [1450, 1490).
Nothing here touches a model: the loop (``speedtrace.trainer.train``) reads these values and
applies them (YaRN when the long window changes, the embed split after the split step).
docs/trainer.md, "The schedule", lays them out for both configs.
"""

from __future__ import annotations

from itertools import accumulate

from speedtrace.trainer.config import Stage, TrainConfig


def _boundaries(cfg: TrainConfig) -> list[tuple[int, int]]:
    scheduled = cfg.stages[:-1]
    if any(s.duration is None for s in scheduled) or cfg.stages[-1].duration is not None:
        raise ValueError("stages must be the scheduled stages (with durations) then one extension stage")
    n = cfg.num_scheduled_iterations
    cuts = [round(c * n) for c in accumulate(s.duration for s in scheduled)]
    if cuts[-1] != n:
        raise ValueError(f"stage durations must add up to 1 (they cover {cuts[-1]} of {n} steps)")
    ends = [0, *cuts, cfg.total_steps]
    return list(zip(ends[:-1], ends[1:]))


class Schedule:
    """Every scheduled quantity of one ``TrainConfig``, by step.

    ``step`` runs from 0 to ``total_steps``; step ``total_steps`` only validates (it belongs to
    the extension stage, at the end of it).
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.boundaries = _boundaries(cfg)
        self.total_steps = cfg.total_steps
        # Transitions are the first steps of stages 2, 3, ... and of the extension.
        self.transitions = [start for start, _ in self.boundaries[1:]]
        # The embed/lm_head split happens at the start of the third stage, made odd so that it
        # falls on an Adam step (Adam parameters update on odd steps only).
        self.split_step = cfg.split_step if cfg.split_step is not None else self.boundaries[2][0] | 1
        self.yarn_changes = self._yarn_changes()

    # -- stages ------------------------------------------------------------------------------
    def stage_of(self, step: int) -> int:
        """Index into ``cfg.stages`` of the stage that ``step`` belongs to."""
        self._check(step)
        for i, (_, end) in enumerate(self.boundaries):
            if step < end:
                return i
        return len(self.boundaries) - 1

    def stage(self, step: int) -> Stage:
        return self.cfg.stages[self.stage_of(step)]

    def progress(self, step: int) -> float:
        """Fraction t in [0, 1] of the way through the step's stage (1.0 at ``total_steps``)."""
        i = self.stage_of(step)
        start, end = self.boundaries[i]
        return min(1.0, (step - start) / (end - start))

    # -- per-step values ---------------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        """Multiplier of every base learning rate: the stage's, then a linear cooldown to final_lr."""
        cfg = self.cfg
        lr = self.stage(step).lr_mul
        n = cfg.num_scheduled_iterations
        cd_start = int(n * (1 - cfg.cooldown_frac))
        if step >= cd_start:
            t = min(1.0, (step - cd_start) / (n - cd_start))
            lr = lr * (1 - t) + cfg.final_lr * t
        return lr

    def momentum(self, step: int) -> float:
        """NorMuon momentum: linear warm-up, flat, linear cool-down over the last steps."""
        cfg = self.cfg
        self._check(step)
        lo, hi = cfg.momentum_min, cfg.momentum_max
        cd_start = self.total_steps - cfg.momentum_cooldown_steps
        if step < cfg.momentum_warmup_steps:
            return lo + step / cfg.momentum_warmup_steps * (hi - lo)
        if step > cd_start:
            return hi - (step - cd_start) / cfg.momentum_cooldown_steps * (hi - lo)
        return hi

    def windows_blocks(self, step: int) -> tuple[int, int]:
        """(short, long) attention windows of a training step, in blocks of ``cfg.block_size``."""
        return tuple(self.stage(step).windows)

    def windows_tokens(self, step: int) -> tuple[int, int]:
        short, long = self.windows_blocks(step)
        return short * self.cfg.block_size, long * self.cfg.block_size

    def final_windows_tokens(self) -> tuple[int, int]:
        """Windows of the final validation: the long window widened without another YaRN update."""
        short, _ = self.windows_blocks(self.total_steps)
        return short * self.cfg.block_size, self.cfg.final_long_window * self.cfg.block_size

    def batch_size(self, step: int) -> int:
        """Global tokens per step (all micro-batches of all ranks)."""
        return self.stage(step).batch_size

    def seq_len(self, step: int) -> int:
        """Longest document piece the aligned loader keeps (train_max_seq_len)."""
        return self.stage(step).seq_len

    def mtp_weights(self, step: int) -> tuple[float, ...]:
        """Multi-token-prediction weights, linear from the stage's start to its end values."""
        stage, t = self.stage(step), self.progress(step)
        return tuple(a + (b - a) * t for a, b in zip(stage.mtp_start, stage.mtp_end))

    # -- events ------------------------------------------------------------------------------
    def _yarn_changes(self) -> list[tuple[int, int, int]]:
        changes = []
        for start, _ in self.boundaries[1:]:
            old, new = self.windows_blocks(start - 1)[1], self.windows_blocks(start)[1]
            if new != old:
                changes.append((start, old, new))
        return changes

    def yarn_history(self, step: int) -> list[tuple[int, int]]:
        """The (old, new) long windows in TOKENS of every YaRN update applied by the time ``step`` runs."""
        b = self.cfg.block_size
        return [(old * b, new * b) for s, old, new in self.yarn_changes if s <= step]

    def warmup_steps(self, mode: str = "full", start_step: int = 0) -> list[int]:
        """Steps the compile warm-up runs.

        ``full`` is the record's list: 0, 1 and the two steps either side of every transition,
        which reaches every shape and graph variant. ``stage1`` keeps only the part of that list
        inside the stage training starts in (stage 1 unless ``start_step`` says otherwise), so a
        short trace of one stage compiles just what it needs. ``none`` runs no warm-up.
        """
        full = sorted({0, 1} | {s + o for s in self.transitions for o in (-2, -1, 0, 1) if s + o >= 0})
        if mode == "full":
            return full
        if mode == "none":
            return []
        if mode == "stage1":
            i = self.stage_of(start_step)
            start, end = self.boundaries[i]
            return [s for s in full if start <= s < end]
        raise ValueError(f"unknown warm-up mode {mode!r}; choose from full, stage1, none")

    def _check(self, step: int) -> None:
        if not 0 <= step <= self.total_steps:
            raise ValueError(f"step {step} is outside the schedule [0, {self.total_steps}]")
