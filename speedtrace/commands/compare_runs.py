"""`speedtrace compare-runs`: the record READMEs' statistics table over groups of training logs."""

from __future__ import annotations

import math

from speedtrace.errors import SpeedtraceError

DESCRIPTION = """\
Compare groups of speedrun training logs: runs, steps, mean and sample std of the final
train_time and val_loss, their differences from the baseline (the first group), Welch's
one-sided t-test on the times, the one-sided t-test that the mean loss is below the target,
and the mean step time of each training stage.

Each GROUP is a directory (its *.txt files; the group is named after the directory) or
NAME=GLOB (the glob is expanded by speedtrace, relative to the current directory).
Logs without a final validation line are named on stderr and left out.

examples:
  speedtrace compare-runs logs/baseline logs/pr233
  speedtrace compare-runs 'before=runs/a/*.txt' 'after=runs/b/*.txt' --format json
"""


def add_arguments(parser):
    parser.add_argument("groups", nargs="+", metavar="GROUP",
                        help="baseline first, then candidates: a directory of logs or NAME=GLOB")
    parser.add_argument("--target", type=float, default=3.28,
                        help="validation loss to beat (default: 3.28)")
    parser.add_argument("--format", choices=["text", "md", "json"], default="text",
                        help="output format (default: text)")


def expand_group(arg: str) -> tuple[str, list]:
    """A GROUP argument -> (group name, sorted log paths). Raises ``SpeedtraceError`` naming the
    argument when it is a plain file, does not exist, or yields no logs."""
    import glob
    from pathlib import Path

    path = Path(arg)
    if path.is_dir():
        name = path.resolve().name or str(path)
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise SpeedtraceError(f"{arg}: no *.txt logs in this directory")
        return name, files
    if path.exists():
        raise SpeedtraceError(f"{arg}: is a file; give a directory of logs or NAME=GLOB")
    if "=" not in arg:
        raise SpeedtraceError(f"{arg}: no such directory")
    name, pattern = arg.split("=", 1)
    if not name:
        raise SpeedtraceError(f"{arg}: empty group name in NAME=GLOB")
    if Path(pattern).is_dir():
        return name, expand_group(pattern)[1]
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not files:
        raise SpeedtraceError(f"{pattern}: no log files match")
    return name, files


def run(args) -> int:
    import json

    from speedtrace.analysis.runs import compare, load_group, render_markdown, render_text

    if not math.isfinite(args.target):
        raise SpeedtraceError(f"--target {args.target}: not a finite loss")
    expanded = [expand_group(a) for a in args.groups]
    names = [name for name, _ in expanded]
    if len(set(names)) < len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise SpeedtraceError(f"{dup}: two groups have this name; name them with NAME=GLOB")
    groups = [load_group(name, files) for name, files in expanded]
    doc = compare(groups, args.target)
    if args.format == "json":
        out = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    elif args.format == "md":
        out = render_markdown(doc)
    else:
        out = render_text(doc)
    print(out, end="")
    return 0
