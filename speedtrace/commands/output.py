"""Where a command's file output goes: the checks before the work, and one atomic write.

Every command that writes a file (``report``/``diff`` with ``-o``, ``timeline``, ``annotate``)
checks the path before loading anything, so a typo costs no analysis time, and writes through a
temporary file beside the target, so a failed write never leaves half a page behind.
"""

from __future__ import annotations

import os
import tempfile

from speedtrace.errors import SpeedtraceError


def check_output_file(out: str | None, what: str) -> str:
    """``out`` when it can be written as a new file; SpeedtraceError naming it otherwise."""
    if not out:
        raise SpeedtraceError("give the file to write with -o FILE")
    if os.path.isdir(out):
        raise SpeedtraceError(f"{out}: is a directory; give a file name for the {what}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise SpeedtraceError(f"{out}: directory {parent} does not exist")
    return out


def write_file(path: str, data: str | bytes, what: str) -> None:
    """Write ``data`` to ``path`` whole or not at all, with the mode a new file gets."""
    target = os.path.abspath(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w",
                           **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
                f.write(data)
            # mkstemp makes the file private; give it the mode any new file would have.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise SpeedtraceError(f"{path}: cannot write the {what}: {exc.strerror or exc}") from None
