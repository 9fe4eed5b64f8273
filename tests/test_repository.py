"""The repository stands on its own: the docs name every analysis module, and no product file
points outside the checkout (data outside it is for tests that skip without it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ["speedtrace", "analysis", "trainer", "kernels", "profiling", "benchmarks", "notebooks", "docs"]


def test_architecture_names_every_analysis_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [p.stem for p in (ROOT / "analysis").glob("*.py")
               if p.stem != "__init__" and f"`{p.stem}`" not in doc]
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_no_product_file_refers_outside_the_repository():
    pattern = re.compile(r"\.\./shared|/work/shared")
    found = []
    for top in PRODUCT + ["README.md", "pyproject.toml"]:
        base = ROOT / top
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
        for p in files:
            if p.suffix not in (".py", ".md", ".toml", ".ipynb", ".sh", ".txt"):
                continue
            if pattern.search(p.read_text(errors="replace")):
                found.append(str(p.relative_to(ROOT)))
    assert not found, f"files referring to data outside the repository: {found}"
