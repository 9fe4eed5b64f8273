"""``speedtrace profile``: profile steps of the bundled trainer and write a trace set.

The trainer is built and warmed up (compiled) exactly as ``speedtrace train`` does, with
validation off; then ``profiling.capture.profile`` times ``unprofiled`` steps, profiles
``wait + warmup + active`` more, and writes ``rank-N.trace.json.gz`` per rank and ``run.json``.
"""

from __future__ import annotations

from pathlib import Path

from speedtrace.errors import SpeedtraceError
from speedtrace.profiling.capture import ProfileSettings, profile


def use_cuda_graphs(choice: str, mode: str, device: str) -> bool:
    """``--cuda-graphs``: auto means on in timing mode on CUDA, where the step's own host work
    would otherwise be the critical path under a profiler; full mode keeps every CPU op."""
    on_cuda = device.startswith("cuda")
    if choice == "on" and not on_cuda:
        raise SpeedtraceError("--cuda-graphs on needs a CUDA device")
    if choice == "auto":
        return on_cuda and mode == "timing"
    return choice == "on"


def profile_trainer(args, cfg, device: str) -> dict:
    """Profile ``cfg`` (a checked TrainConfig, its reverts applied) on ``device`` with the
    settings of ``speedtrace profile``'s parsed arguments ``args``."""
    from speedtrace.trainer.distributed import setup, teardown
    from speedtrace.trainer.logs import RunLog
    from speedtrace.trainer.schedule import Schedule
    from speedtrace.trainer.train import Trainer, resolve_data

    reverts = cfg.reverts
    out = Path(args.out)
    sched = Schedule(cfg)
    n_steps = args.unprofiled + args.wait + args.warmup + args.active
    last = args.start_step + n_steps - 1
    if sched.stage_of(args.start_step) != sched.stage_of(last):
        raise SpeedtraceError(f"steps {args.start_step}..{last} cross a stage boundary: the unprofiled "
                              "and profiled steps must share one stage (choose another --start-step)")

    graphs = use_cuda_graphs(args.cuda_graphs, args.mode, device)
    place = setup(device, cfg.micro_batches)
    try:
        data = resolve_data(cfg, args.data, out, place)
        log = RunLog(None, enabled=place.is_main, echo=True)
        trainer = Trainer(cfg, place.device, data, None, rank=place.rank, world_size=place.world_size,
                          process_group=place.group, compile=args.compile or None, val_every=-1,
                          start_step=args.start_step, seed=args.seed, log=log, cuda_graphs=graphs)
        trainer.warmup(args.compile_warmup)
        settings = ProfileSettings(
            out_dir=out / "trace", first_step=args.start_step, unprofiled=args.unprofiled,
            wait=args.wait, warmup=args.warmup, active=args.active, mode=args.mode,
            activities=args.activities, record_shapes=args.record_shapes, with_stack=args.with_stack,
            profile_memory=args.profile_memory, launch_records=args.launch_records,
            startup_steps=args.startup_steps, cuda_graphs=graphs,
            metadata={"config": cfg.name, "variant": args.variant, "reverts": sorted(reverts),
                      "start_step": args.start_step, "compile_warmup": args.compile_warmup,
                      "compiled": trainer.compiled, "stage": sched.stage_of(args.start_step)},
        )
        log_fn = print if place.is_main else (lambda *a, **k: None)
        run = profile(trainer.train_step, settings, rank=place.rank, world_size=place.world_size,
                      device=str(place.device), log=log_fn)
        if place.is_main:
            print(f"wrote {settings.out_dir}/rank-*.trace.json.gz and run.json "
                  f"(dilation {run['dilation']}); read it with: speedtrace report {settings.out_dir}")
        return run
    finally:
        teardown(place)
