"""`speedtrace report` (not built yet)."""

from speedtrace.errors import SpeedtraceError


def add_arguments(parser):
    pass


def run(args):
    raise SpeedtraceError("'report' is not built yet")
