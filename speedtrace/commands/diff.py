"""`speedtrace diff` (not built yet)."""

from speedtrace.errors import SpeedtraceError


def add_arguments(parser):
    pass


def run(args):
    raise SpeedtraceError("'diff' is not built yet")
