"""The notebooks in notebooks/: committed without outputs, and each runs top to bottom on a CPU,
showing at least one plotly figure and no error.

They run in a kernel of this interpreter (a kernelspec written for the test that points at
``sys.executable``), so they use the package installed in this environment whatever ``python``
on PATH is, and a fresh virtual environment needs no ``ipykernel install``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
EXPECTED = ["01_report_and_timeline.ipynb", "02_before_after_pr233.ipynb",
            "03_multi_rank_nccl.ipynb", "04_profile_your_step.ipynb"]


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_documented_notebooks_are_there():
    assert set(EXPECTED) <= {p.name for p in notebook_paths()}


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for cell in code:
        assert cell.get("outputs") == [], f"{path.name}: a cell has outputs (clear them before committing)"
        assert cell.get("execution_count") is None, f"{path.name}: a cell has an execution count"
    # Documentation first: every code cell follows a markdown cell that says why it is there.
    for before, cell in zip(nb["cells"], nb["cells"][1:]):
        if cell["cell_type"] == "code":
            assert before["cell_type"] == "markdown", f"{path.name}: a code cell without a sentence before it"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A Jupyter kernelspec for this very interpreter, found through JUPYTER_PATH."""
    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "speedtrace-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "speedtrace tests", "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(root), os.environ.get("JUPYTER_PATH")])))
    # No kernel of the test writes to the user's Jupyter runtime directory.
    mp.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
    yield "speedtrace-test"
    mp.undo()


@pytest.mark.slow
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.name)
def test_runs_top_to_bottom_with_figures(path, kernel_name):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.read(path, as_version=4)
    # Run where a reader would: in notebooks/.
    client = nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=120, allow_errors=False,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if PLOTLY_MIME in o.get("data", {})]
    assert figures, f"{path.name}: no plotly figure among the outputs"
    for o in figures:
        fig = o["data"][PLOTLY_MIME]
        assert fig.get("data"), f"{path.name}: a figure without traces"
