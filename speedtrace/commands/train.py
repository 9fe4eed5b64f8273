"""`speedtrace train` (not built yet)."""

from speedtrace.errors import SpeedtraceError


def add_arguments(parser):
    pass


def run(args):
    raise SpeedtraceError("'train' is not built yet")
