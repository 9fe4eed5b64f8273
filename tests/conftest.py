import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
if os.environ.get("SPEEDTRACE_SHARED"):
    SHARED = Path(os.environ["SPEEDTRACE_SHARED"])
EXTERNAL_TRACES = SHARED / "data" / "external-traces"
RECORD_LOGS = SHARED / "data" / "record-233-logs"


def shared_path(*parts) -> Path:
    """A path under the project's data folder (../shared/data beside the checkout, or
    $SPEEDTRACE_SHARED/data). That data is not in the repository: the test is skipped without it."""
    p = SHARED.joinpath("data", *parts)
    if not p.exists():
        where = "/".join(("../shared/data",) + parts)
        pytest.skip(f"needs {where} (not in the repository; set SPEEDTRACE_SHARED to the folder holding data/)")
    return p


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        # The marker, not item.keywords: keywords also hold the names of the folders above the
        # test, so a checkout in a folder named "gpu" would skip every test.
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def run_file_in_child(test_file: str, **env) -> None:
    """Run ``test_file``'s tests in a fresh pytest process with ``env`` added, and require that
    every one of them passed (none skipped). For settings Triton and the kernels read at import
    (``TRITON_INTERPRET``), which this process has already fixed."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, tail
