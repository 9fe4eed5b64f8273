"""Configurations of the bundled trainer: the record-233 speedrun and a tiny CPU twin.

Every constant of the record lives here (docs/trainer.md describes what each one does); model,
optimizer, data and schedule code read them from a ``TrainConfig`` and hard-code none.
The tiny config keeps the architecture and layer topology (11 layers, 6 heads, the same paired,
long-window, value-embedding and skip layers, the same stage structure) at small widths, short
sequences and a small vocabulary, so that its 60 steps fit a CPU.

Which PR #233 changes to revert, and where a run may start, are checked here once
(``check_reverts``, ``reverts_for``, ``check_start_step``) for the Python API and both commands.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from speedtrace.errors import SpeedtraceError

# The kernel changes of PR #233 that ``--revert`` can undo one at a time (parent 699e93c8);
# docs/trainer.md, "The four changes of PR #233".
REVERTIBLE = ("transpose-kernels", "mlp-select", "tall-polar-express", "fused-nesterov")
# record: PR #233 as merged; parent: all four changes reverted.
VARIANTS = ("record", "parent")


class ConfigError(SpeedtraceError, ValueError):
    """A trainer setting that cannot be used (an unknown config or change, a step outside the
    schedule). A SpeedtraceError, so the CLI prints it on one line and exits 2; a ValueError for
    Python callers."""


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 50304          # GPT-2's 50257 padded up to a multiple of 128
    bos_id: int = 50256
    num_layers: int = 11
    model_dim: int = 768
    num_heads: int = 6
    head_dim: int = 128
    mlp_dim: int = 3072              # 4 * model_dim
    gate_dim: int = 12               # gates read the first 12 dims of their input
    num_value_embeds: int = 5
    ve_layers: tuple[int, ...] = (1, 2, 8, 9, 10)     # layer i uses ve_layers.index(i)
    paired_layers: tuple[int, ...] = (0, 2, 5, 9)
    long_window_layers: tuple[int, ...] = (3, 10)      # window pattern S,S,S,L,S,S,-,S,S,S,L
    mlp_only_layer: int = 6          # no attention, receives the skip
    skip_save_layer: int = 3
    parallel_start: int = 7          # two residual lanes from here; backout taken after it
    # Rotary tables are sized for the longest per-rank stream (a validation micro-batch).
    max_seq_len: int = 262_144
    # Softcap z = a * sigmoid((logit + b) / c)
    softcap_a: float = 23.0
    softcap_b: float = 5.0
    softcap_c: float = 7.5
    attn_scale: float = 0.1          # initial softmax scale (updated by YaRN)
    bigram_mul_a: int = 36313        # hash = ((a*tok[p]) ^ (b*tok[p-1])) % (bigram_vocab - 1)
    bigram_mul_b: int = 27191

    @property
    def bigram_vocab(self) -> int:
        return self.num_value_embeds * self.vocab_size   # 251,520; id bigram_vocab-1 reserved

    @property
    def num_attn_layers(self) -> int:
        return self.num_layers - 1


@dataclass(frozen=True)
class Stage:
    """One training stage. Windows are (short, long) in units of ``TrainConfig.block_size``."""

    duration: float | None           # fraction of the scheduled iterations; None = extension
    seq_len: int                     # train_max_seq_len: longest document piece
    batch_size: int                  # global tokens per step (all micro-batches of all ranks)
    windows: tuple[int, int]
    lr_mul: float
    mtp_start: tuple[float, ...]     # multi-token-prediction weights at the stage start
    mtp_end: tuple[float, ...]       # ... and at its end (linear in between)


@dataclass(frozen=True)
class TrainConfig:
    name: str
    model: ModelConfig
    stages: tuple[Stage, ...]        # the scheduled stages, then the extension stage last
    num_scheduled_iterations: int = 1450
    num_extension_iterations: int = 40
    final_long_window: int = 20      # blocks; set for the final validation without YaRN
    block_size: int = 128            # window unit, tokens
    micro_batches: int = 8           # grad_accum * world_size is always 8
    cooldown_frac: float = 0.60
    final_lr: float = 0.15
    momentum_warmup_steps: int = 300  # 0.85 -> 0.95
    momentum_cooldown_steps: int = 50  # 0.95 -> 0.85 over the last 50 steps
    momentum_min: float = 0.85
    momentum_max: float = 0.95
    val_tokens: int = 10_485_760
    val_batch_size: int = 2_097_152  # global tokens per validation step
    val_every: int = 250
    adam_lr: float = 0.008
    adam_eps: float = 1e-10
    adam_wd: float = 0.005
    muon_lr: float = 0.023
    muon_beta2: float = 0.95
    muon_wd: float = 1.2
    # Weights init: std = 0.5 * dim**-0.5, uniform bound sqrt(3) * std
    lm_head_init_std: float = 0.005
    value_embed_init_std: float = 0.01
    bigram_lambda_init: float = 0.05
    post_lambda_lane1_init: float = 1.5
    resid_lambda_init: float = 1.1 ** 0.5
    # Schedule facts derived from the above, kept explicit for the tests.
    split_step: int | None = None    # embed/lm_head untie; None -> start of stage 3, forced odd
    reverts: frozenset[str] = field(default_factory=frozenset)

    @property
    def total_steps(self) -> int:
        return self.num_scheduled_iterations + self.num_extension_iterations

    def with_reverts(self, reverts: Iterable[str]) -> "TrainConfig":
        """This config with the parent's behaviour for the changes named (``check_reverts``)."""
        return replace(self, reverts=check_reverts(reverts))


def check_reverts(names: Iterable[str]) -> frozenset[str]:
    """``names`` as a frozenset, each one of ``REVERTIBLE``; a ConfigError names any other."""
    if isinstance(names, str):   # one name, not its characters
        names = (names,)
    names = frozenset(names)
    bad = sorted(names - set(REVERTIBLE))
    if bad:
        raise ConfigError(f"--revert {','.join(bad)}: unknown change; choose from {', '.join(REVERTIBLE)}")
    return names


def reverts_for(variant: str = "record", names: Iterable[str] = ()) -> frozenset[str]:
    """The changes a run reverts: all four for the ``parent`` variant, plus those in ``names``."""
    if variant not in VARIANTS:
        raise ConfigError(f"--variant {variant}: unknown variant; choose from {', '.join(VARIANTS)}")
    return check_reverts(names) | (frozenset(REVERTIBLE) if variant == "parent" else frozenset())


def check_start_step(cfg: TrainConfig, start_step: int, steps: int = 1) -> None:
    """A run of ``steps`` training steps from ``start_step`` must lie inside the schedule
    [0, total_steps); a ConfigError says why not."""
    total = cfg.total_steps
    if not 0 <= start_step < total:
        raise ConfigError(f"--start-step {start_step}: must be in [0, {total}) for the {cfg.name} config")
    if start_step + steps > total:
        raise ConfigError(f"--start-step {start_step}: the {steps} steps to run must end before step {total} "
                          f"(the {cfg.name} schedule's end)")


SPEEDRUN_STAGES = (
    Stage(1 / 3, 896, 8 * 2048 * 8, (1, 3), 1.0, (1.0, 0.5, 0.25), (1.0, 0.5, 0.0)),
    Stage(1 / 3, 2048, 16 * 2048 * 8, (3, 7), 1.52, (1.0, 0.5), (1.0, 0.0)),
    Stage(1 / 3, 2048, 24 * 2048 * 8, (5, 11), 1.73, (1.0,), (1.0,)),
    Stage(None, 2048, 24 * 2048 * 8, (6, 13), 1.0, (1.0,), (1.0,)),
)


def speedrun() -> TrainConfig:
    return TrainConfig(name="speedrun", model=ModelConfig(), stages=SPEEDRUN_STAGES)


def tiny() -> TrainConfig:
    """Same topology, tiny widths: 6 heads of 16 dims, 384 tokens of vocabulary, 16-token blocks.

    Per micro-batch 256 tokens in stage 1 (x2 and x3 later, as in the record), 60 steps
    (54 scheduled + 6 extension), validation every 20 steps.
    """
    model = ModelConfig(
        vocab_size=384, bos_id=256, model_dim=96, num_heads=6, head_dim=16, mlp_dim=384,
        max_seq_len=1024,
    )
    stages = (
        Stage(1 / 3, 56, 8 * 256, (1, 3), 1.0, (1.0, 0.5, 0.25), (1.0, 0.5, 0.0)),
        Stage(1 / 3, 128, 8 * 512, (3, 7), 1.52, (1.0, 0.5), (1.0, 0.0)),
        Stage(1 / 3, 128, 8 * 768, (5, 11), 1.73, (1.0,), (1.0,)),
        Stage(None, 128, 8 * 768, (6, 13), 1.0, (1.0,), (1.0,)),
    )
    return TrainConfig(
        name="tiny", model=model, stages=stages, num_scheduled_iterations=54,
        num_extension_iterations=6, block_size=16, momentum_warmup_steps=12,
        momentum_cooldown_steps=4, val_tokens=8 * 1024 * 4, val_batch_size=8 * 1024, val_every=20,
    )


CONFIGS = {"speedrun": speedrun, "tiny": tiny}


def get_config(name: str) -> TrainConfig:
    try:
        return CONFIGS[name]()
    except KeyError:
        raise ConfigError(f"unknown config {name!r}; choose from {sorted(CONFIGS)}") from None
