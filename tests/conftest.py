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
    """A path under ../shared/data; the test is skipped when that data is not beside the repo."""
    p = SHARED.joinpath("data", *parts)
    if not p.exists():
        pytest.skip(f"{p} not present")
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
        if "gpu" in item.keywords:
            item.add_marker(skip)
