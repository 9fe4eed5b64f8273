"""`speedtrace compare-runs` (not built yet)."""

from speedtrace.errors import SpeedtraceError


def add_arguments(parser):
    pass


def run(args):
    raise SpeedtraceError("'compare-runs' is not built yet")
