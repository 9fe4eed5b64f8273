"""The trainer options that `speedtrace train` and `speedtrace profile` share, defined once.

``add_trainer_options`` declares them; ``trainer_config_from`` turns them into a checked
``TrainConfig`` (the checks themselves are the trainer's: ``speedtrace.trainer.config``). Light at
import time: the trainer's config module is plain dataclasses, and torch is imported only by
``device_from``.
"""

from __future__ import annotations

import os

from speedtrace.trainer.config import (
    CONFIGS,
    REVERTIBLE,
    VARIANTS,
    TrainConfig,
    check_start_step,
    get_config,
    reverts_for,
)


def add_trainer_options(parser, *, out_default: str) -> None:
    """--config, --device, --start-step, --variant, --revert, --data, --out, --compile, --seed."""
    parser.add_argument("--config", default="speedrun", choices=list(CONFIGS),
                        help="speedrun: the record (default); tiny: the same topology at small widths, "
                             "minutes on a CPU")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--start-step", type=int, default=0, metavar="S",
                        help="first step run: fresh weights with the schedule state of step S (default: 0)")
    parser.add_argument("--variant", choices=list(VARIANTS), default="record",
                        help="parent: revert all four kernel changes of PR #233 (default: record)")
    parser.add_argument("--revert", metavar="CHANGE,...", default=None,
                        help="restore the parent's behaviour for these changes: " + ", ".join(REVERTIBLE))
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="token shards (*train_*.bin, *val_*.bin); the tiny config makes "
                             "synthetic ones in OUT/tiny-data when not given")
    parser.add_argument("--out", metavar="DIR", default=out_default,
                        help=f"output directory (default: {out_default})")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile on CPU too (always on with CUDA)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0)")


def revert_names(text: str | None) -> list[str]:
    """The names of a ``--revert`` list (comma-separated, blanks ignored)."""
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def trainer_config_from(args, steps: int = 1) -> TrainConfig:
    """The TrainConfig the options ask for, with its reverts; ``steps`` steps from --start-step
    must fit the schedule. Bad values raise the trainer's ConfigError (a SpeedtraceError)."""
    cfg = get_config(args.config).with_reverts(reverts_for(args.variant, revert_names(args.revert)))
    check_start_step(cfg, args.start_step, steps)
    return cfg


def device_from(args) -> str:
    """--device, or cuda when a CUDA device is available, else cpu."""
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def set_allocator_env() -> None:
    """The record sets this allocator option before torch is imported; it matters on CUDA only."""
    os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")
