"""`speedtrace profile`: profile training steps of the bundled trainer and write a trace set."""

from __future__ import annotations

from speedtrace.commands.trainer_options import (
    add_trainer_options,
    device_from,
    set_allocator_env,
    trainer_config_from,
)

DESCRIPTION = """\
Build and warm up the bundled record-233 trainer, run --startup-steps steps under a profiler
session that is thrown away (a process's first session is slower throughout), time --unprofiled
steps without the profiler, then run --wait + --warmup + --active steps under torch.profiler
(validation off). Writes OUT/trace/rank-N.trace.json.gz per rank and OUT/trace/run.json (config, variant, reverted changes,
versions, device, profiler mode, unprofiled and profiled step and host times, dilation and its
target, whether the host held the steps up, the hypervisor's steal time, step markers).

Dilation = median profiled step time / median unprofiled step time, both timed between
device synchronisations, leaving out the last active step (its end writes the trace). Targets on the
speedrun config: 1.03 in timing mode, 1.05 in full mode; above its target the command warns and
says whether the host held the steps up: the profiled ones only (the profiler's host work, or a host
slower than before, lengthened them) or the unprofiled ones too (the host was slower than the GPU at
the time: run again when it is quiet), and names any CPU time a hypervisor took meanwhile.

modes:
  timing  on CUDA the trainer replays each micro-batch's forward and backward as CUDA graphs
          (--cuda-graphs auto), so its host work ends long before the GPU's and the profiler's
          host cost does not lengthen the step; traced with CPU+CUDA activities: kernels, phases,
          optimizer ranges and gap causes, but no CPU ops inside forward and backward. A step that
          is not graphed (--cuda-graphs off) is traced CUDA-only, steps marked by marker kernels.
  full    CPU+CUDA activities on the trainer as the record runs it (no graphs): every CPU op,
          launch and record_function range
Shapes, stacks and memory (--record-shapes, --with-stack, --profile-memory) are opt-in: they
dilate the step several-fold, and `speedtrace report` then warns which numbers they distort.
Inductor's per-launch ranges are off too (--launch-records turns them on): while a profiler runs,
Inductor launches every kernel through a slow path that adds one, the largest part of the host time
a profiler adds to a compiled step (benchmarks/RESULTS.md). Launches still appear as runtime/driver
calls linked to their kernels, inside the same annotations.

examples:
  speedtrace profile --config tiny --device cpu --out runs/tiny
  speedtrace profile --config speedrun --data DIR --start-step 10 --mode full --out runs/record
  speedtrace profile --config speedrun --data DIR --start-step 10 --mode full --variant parent --out runs/parent
  speedtrace diff runs/parent/trace runs/record/trace
  torchrun --standalone --nproc_per_node=2 -m speedtrace profile --config tiny --device cpu --out runs/two
        (one trace per rank; gloo on a CPU, NCCL on GPUs)
  speedtrace profile --config speedrun --data DIR --start-step 10 --out runs/timing   # graphed"""


def add_arguments(parser):
    add_trainer_options(parser, out_default="profile-out")
    parser.add_argument("--unprofiled", type=int, default=10, metavar="N",
                        help="steps timed without the profiler first (default 10)")
    parser.add_argument("--startup-steps", type=int, default=1, metavar="N",
                        help="steps under a discarded profiler session before the unprofiled ones, so that "
                             "the profiler's start-up is not timed (default 1)")
    parser.add_argument("--wait", type=int, default=0, metavar="W", help="profiler schedule: wait steps (0)")
    parser.add_argument("--warmup", type=int, default=2, metavar="U", help="profiler schedule: warm-up steps (2)")
    parser.add_argument("--active", type=int, default=6, metavar="A",
                        help="profiler schedule: traced steps (6; the last is left out of the dilation)")
    parser.add_argument("--mode", choices=["timing", "full"], default="timing",
                        help="what the trace holds and what it costs (see modes above; default: timing)")
    parser.add_argument("--activities", choices=["cuda", "cpu+cuda", "cpu"], default=None,
                        help="override the activities the mode chooses")
    parser.add_argument("--record-shapes", action="store_true", help="opt-in: dilates the step")
    parser.add_argument("--with-stack", action="store_true", help="opt-in: dilates the step")
    parser.add_argument("--profile-memory", action="store_true", help="opt-in: dilates the step")
    parser.add_argument("--launch-records", action="store_true",
                        help="opt-in: keep Inductor's own profiler range around every kernel launch "
                             "(kernel file, grid); its slow launch path dilates a compiled step")
    parser.add_argument("--cuda-graphs", choices=["auto", "on", "off"], default="auto",
                        help="replay each micro-batch's forward and backward as CUDA graphs, so that the "
                             "host's launches leave the step (auto: on in timing mode on CUDA)")
    parser.add_argument("--compile-warmup", choices=["full", "stage1", "none"], default="stage1",
                        help="trainer compile warm-up before timing (default: the start stage's steps)")


def run(args) -> int:
    from speedtrace.errors import SpeedtraceError

    for name in ("startup_steps", "unprofiled", "wait", "warmup", "active"):
        if getattr(args, name) < 0:
            raise SpeedtraceError(f"--{name.replace('_', '-')} must not be negative")
    # Every unprofiled and profiled step must lie inside the schedule.
    cfg = trainer_config_from(args, steps=args.unprofiled + args.wait + args.warmup + args.active)
    set_allocator_env()
    from speedtrace.profiling.trainer_profile import profile_trainer

    if args.unprofiled < 10 or args.active < 6:
        print("speedtrace profile: note: the dilation needs at least 10 unprofiled and 6 active steps "
              "to meet its definition", flush=True)
    try:
        profile_trainer(args, cfg, device_from(args))
    except ValueError as exc:
        raise SpeedtraceError(str(exc)) from None
    return 0
