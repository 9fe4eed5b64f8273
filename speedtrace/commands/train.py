"""`speedtrace train`: run the bundled record-233 trainer (directly or under torchrun)."""

from __future__ import annotations

import os

from speedtrace.trainer.config import REVERTIBLE  # plain dataclasses: no torch at import

DESCRIPTION = """\
Run the bundled modded-nanogpt record-233 trainer. Under `torchrun --nproc_per_node=K` (K = 1, 2,
4 or 8) each rank does 8/K gradient-accumulation micro-batches, as in the record. Logs follow the
record's format (<out>/logs/<uuid>.txt on rank 0, echoed to stdout), and the run ends with one
JSON summary line (final val loss, train time, median synchronized step time with --sync-steps,
peak memory on CUDA).

examples:
  speedtrace train --config tiny --device cpu            # 60 steps, synthetic data, ~2 minutes
  speedtrace train --config speedrun --dry-run           # parameter table, no training
  torchrun --nproc_per_node=8 $(which speedtrace) train --config speedrun --data DIR
  speedtrace train --config speedrun --data DIR --steps 60 --warmup stage1 --val-every -1 --sync-steps
  speedtrace train --config speedrun --data DIR --start-step 967 --steps 20 --revert mlp-select"""


def add_arguments(parser):
    parser.add_argument("--config", default="speedrun", choices=["speedrun", "tiny"],
                        help="speedrun: the record (default); tiny: the same topology, minutes on a CPU")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="stop the unchanged schedule after N steps (then validate)")
    parser.add_argument("--start-step", type=int, default=0, metavar="S",
                        help="start from fresh weights with the schedule state of step S")
    parser.add_argument("--warmup", choices=["full", "stage1", "none"], default="full",
                        help="compile warm-up: the record's 14 steps, only those of the start "
                             "stage, or none (default: full)")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="token shards (*train_*.bin, *val_*.bin); the tiny config makes "
                             "synthetic ones in OUT/tiny-data when not given")
    parser.add_argument("--out", metavar="DIR", default=".", help="output directory (default: .)")
    parser.add_argument("--variant", choices=["record", "parent"], default="record",
                        help="parent: revert all four kernel changes of PR #233")
    parser.add_argument("--revert", metavar="CHANGE,...", default=None,
                        help="restore the parent's behaviour for these changes: " + ", ".join(REVERTIBLE))
    parser.add_argument("--dry-run", action="store_true",
                        help="build the model, print its parameter table and total, do not train")
    parser.add_argument("--val-every", type=int, default=None, metavar="N",
                        help="validate every N steps and at the end; 0: only at the end; "
                             "-1: never (default: the config's, 250 or 20)")
    parser.add_argument("--sync-steps", action="store_true",
                        help="synchronize around each training step and report the median step time")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile on CPU too (always on with CUDA)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay each micro-batch's forward and backward as CUDA graphs (CUDA only; "
                             "not in the record: it takes the host's launch work off the step)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0)")


def run(args) -> int:
    # The record sets the allocator option before torch is imported; it matters on CUDA only.
    os.environ.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")
    from speedtrace.trainer.train import run_from_args

    return run_from_args(args)
