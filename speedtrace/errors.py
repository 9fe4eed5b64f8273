"""Errors and warnings shared by every command.

A ``SpeedtraceError`` is bad input the user can fix: the CLI prints its message on one line of
stderr and exits with status 2, with no traceback and no partial output. Messages name the file.
"""

from __future__ import annotations

import sys


class SpeedtraceError(Exception):
    """Bad input (unreadable, truncated or non-trace file, missing path, duplicate ranks...)."""


def warn(message: str) -> None:
    """A problem that does not stop the work (printed at once on stderr)."""
    print(f"speedtrace: warning: {message}", file=sys.stderr)
