"""`speedtrace train`: run the bundled record-233 trainer (directly or under torchrun)."""

from __future__ import annotations

from pathlib import Path

from speedtrace.commands.trainer_options import (
    add_trainer_options,
    device_from,
    set_allocator_env,
    trainer_config_from,
)

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
    add_trainer_options(parser, out_default=".")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="stop the unchanged schedule after N steps (then validate)")
    parser.add_argument("--warmup", choices=["full", "stage1", "none"], default="full",
                        help="compile warm-up: the record's 14 steps, only those of the start "
                             "stage, or none (default: full)")
    parser.add_argument("--dry-run", action="store_true",
                        help="build the model, print its parameter table and total, do not train")
    parser.add_argument("--val-every", type=int, default=None, metavar="N",
                        help="validate every N steps and at the end; 0: only at the end; "
                             "-1: never (default: the config's, 250 or 20)")
    parser.add_argument("--sync-steps", action="store_true",
                        help="synchronize around each training step and report the median step time")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="replay each micro-batch's forward and backward as CUDA graphs (CUDA only; "
                             "not in the record: it takes the host's launch work off the step)")


def run(args) -> int:
    from speedtrace.errors import SpeedtraceError

    cfg = trainer_config_from(args)
    if args.steps is not None and args.steps < 1:
        raise SpeedtraceError(f"--steps {args.steps}: must be at least 1")
    set_allocator_env()
    if args.dry_run:
        from speedtrace.trainer.distributed import world_from_env

        env = world_from_env()
        if env is None or env[0] == 0:
            print_parameter_table(cfg, env[1] if env else 1)
        return 0
    device = device_from(args)
    if args.cuda_graphs and device != "cuda":
        raise SpeedtraceError("--cuda-graphs needs a CUDA device")
    from speedtrace.trainer.distributed import setup, teardown

    place = setup(device, cfg.micro_batches)
    try:
        _train(cfg, args, place)
    finally:
        teardown(place)
    return 0


def _train(cfg, args, place) -> None:
    from speedtrace.trainer.logs import RunLog
    from speedtrace.trainer.train import Trainer, resolve_data

    out = Path(args.out)
    data = resolve_data(cfg, args.data, out, place)
    log = RunLog(out, enabled=place.is_main)
    arguments = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    log.header(cfg, arguments=arguments, world_size=place.world_size, cuda=place.device.type == "cuda")
    trainer = Trainer(cfg, place.device, data, out, rank=place.rank, world_size=place.world_size,
                      process_group=place.group, compile=args.compile or None, val_every=args.val_every,
                      sync_steps=args.sync_steps, start_step=args.start_step, seed=args.seed, log=log,
                      cuda_graphs=args.cuda_graphs)
    trainer.warmup(args.warmup)
    trainer.run(args.steps)


def print_parameter_table(cfg, world_size: int) -> None:
    """--dry-run: every parameter's shape, size, optimizer and comms, without allocating weights."""
    import torch

    from speedtrace.trainer.distributed import check_world_size
    from speedtrace.trainer.model import GPT
    from speedtrace.trainer.optimizer import PARAM_TABLE, effective_comms, param_rows

    grad_accum = check_world_size(world_size, cfg.micro_batches)
    with torch.device("meta"):
        model = GPT.for_training(cfg, world_size=world_size)
    rows = param_rows(model, world_size=world_size, grad_accum=grad_accum)
    print(f"{cfg.name} config, world size {world_size}, grad accumulation {grad_accum}")
    print(f"{'label':<16}{'shape':<24}{'count':>14}  {'optimizer':<10}{'comms':<16}{'comms at 8 GPUs':<16}")
    for r in rows:
        shape = "(" + ", ".join(str(d) for d in r["shape"]) + ")"
        at8 = effective_comms(PARAM_TABLE[r["label"]], 8, 1)
        print(f"{r['label']:<16}{shape:<24}{r['count']:>14,}  {r['optim']:<10}{r['comms']:<16}{at8:<16}")
    print(f"{'total':<40}{sum(r['count'] for r in rows):>14,}")
