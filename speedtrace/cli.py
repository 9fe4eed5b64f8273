"""The ``speedtrace`` command: one subcommand per module in ``speedtrace.commands``.

Each command module is light at import time (argparse definitions only); the work it does is
imported inside its ``run`` so that, e.g., ``speedtrace report`` never imports torch or pandas.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from speedtrace import __version__
from speedtrace.errors import SpeedtraceError

# name -> (module under speedtrace.commands, one-line help)
COMMANDS = {
    "report": ("report", "summarise a torch.profiler trace or a directory of per-rank traces"),
    "diff": ("diff", "compare a trace (set) before and after a change"),
    "timeline": ("timeline", "draw the GPU timeline of a trace (set) as one offline HTML file"),
    "annotate": ("annotate", "write a trace with speedtrace's counters and gap/phase tracks for Perfetto"),
    "compare-runs": ("compare_runs", "compare groups of training logs statistically"),
    "train": ("train", "run the bundled record-233 speedrun trainer"),
    "profile": ("profile", "profile training steps of the bundled trainer and write a trace set"),
    "data": ("data", "make training data (synthetic shards)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speedtrace",
        description="Profile GPU training steps and explain where the time goes.",
    )
    parser.add_argument("--version", action="version", version=f"speedtrace {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"speedtrace.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=getattr(mod, "DESCRIPTION", help_text),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except SpeedtraceError as exc:
        print(f"speedtrace {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("speedtrace: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
