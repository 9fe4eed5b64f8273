"""A command's input and output: which trace it reads, and where what it says goes.

``trace_path`` picks PATH or a bundled ``--sample`` the same way for every command. Every
command that writes a file (``report``/``diff`` with ``-o``, ``timeline``, ``annotate``) checks
the path before loading anything, so a typo costs no analysis time, and writes through a
temporary file beside the target, so a failed write never leaves half a page behind.
``publish`` turns a report or diff dict into the asked format (json, text, md, html) and emits it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Callable

from speedtrace.errors import SpeedtraceError, warn


def trace_path(path: str | None, sample: str | None) -> str | None:
    """PATH, or the bundled sample named by ``--sample`` (the default sample when neither is
    given); None after printing the samples for ``--sample list``."""
    from speedtrace import samples

    if sample == "list":
        print(samples.list_samples())
        return None
    if sample is not None and path is not None:
        raise SpeedtraceError("give PATH or --sample NAME, not both")
    return os.fspath(path if path is not None else samples.sample_path(sample or samples.DEFAULT_SAMPLE))


def check_output(fmt: str, output: str | None) -> None:
    """An HTML page is several megabytes of markup: never poured onto a terminal."""
    if fmt == "html" and not output:
        raise SpeedtraceError("--format html writes a file: give -o FILE (e.g. -o report.html)")


def emit(text: str, output: str | None, what: str) -> None:
    """``text`` to standard output, or to the file ``output`` (written whole or not at all, and
    a line on stderr saying where it went)."""
    if output is None:
        # The text forms use µ, ≥ and ·; never fail on a terminal that cannot show them.
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="replace")
        print(text, end="")
        return
    write_file(output, text, what)
    print(f"speedtrace: wrote the {what} to {output} ({len(text.encode()) / 1e6:.1f} MB)", file=sys.stderr)


def publish(data: dict, fmt: str, output: str | None, what: str, sections: Callable,
            figures: Callable[[], dict]) -> None:
    """A report or diff dict in ``fmt``: json is the dict itself; text, md and html draw its
    ``sections(data)`` (html with ``figures()``, built only then)."""
    from speedtrace.analysis.render import render
    from speedtrace.analysis.report import jsonable

    if fmt in ("json", "html"):
        # The JSON carries the warnings and the page shows them at its top; stderr shows them
        # to whoever runs the command. Text and md print them once, in their own output.
        for w in data["warnings"]:
            warn(w)
    if fmt == "json":
        import json

        text = json.dumps(jsonable(data), allow_nan=False, indent=1) + "\n"
    elif fmt == "html":
        from speedtrace.analysis.render_html import render_html

        text = render_html(sections(data), figures())
    else:
        text = render(sections(data), fmt)
    emit(text, output, what)


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
