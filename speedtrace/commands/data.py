"""`speedtrace data` (not built yet)."""

from speedtrace.errors import SpeedtraceError


def add_arguments(parser):
    pass


def run(args):
    raise SpeedtraceError("'data' is not built yet")
