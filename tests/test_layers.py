"""analysis/ imports one way: base and event types <- decode <- timeline <- metrics <- sections
<- renderers (docs/architecture.md). A module imports only from its own layer or those before it,
and no two modules of a layer import each other in a cycle.

Run it as a script to print the import graph, layer by layer:

    python tests/test_layers.py
"""

from __future__ import annotations

import ast
from pathlib import Path

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"

# Layer of every module of analysis/, in data-flow order. A new module must be placed here.
LAYERS: dict[str, list[str]] = {
    "base": ["memo", "intervals", "fmt", "tables", "sections", "html_page", "select_backward", "events"],
    "decode": ["screen", "decode", "load", "logparse"],
    "timeline": ["links", "timeline", "gaps", "kernels", "host", "comm_queue", "collectives", "tracks"],
    "metrics": ["sums", "metrics", "noise", "kernel_match", "diff_verdict", "diff", "report", "runs",
                "cross_rank", "hta"],
    "sections": ["report_sections", "diff_sections"],
    "renderers": ["render", "render_html", "html_figures", "figures", "figures_timeline", "figures_summary", "figures_diff",
                  "figures_geometry", "perfetto"],
}
ORDER = list(LAYERS)
LAYER_OF = {m: ORDER.index(layer) for layer, mods in LAYERS.items() for m in mods}


def imports_of(path: Path) -> set[str]:
    """The analysis modules a file imports (module level and inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "speedtrace.analysis":
                out.update(a.name for a in node.names)
            elif node.module.startswith("speedtrace.analysis."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[2] for a in node.names if a.name.startswith("speedtrace.analysis."))
    return out


def graph() -> dict[str, set[str]]:
    return {p.stem: imports_of(p) for p in sorted(ANALYSIS.glob("*.py")) if p.stem != "__init__"}


def test_every_module_has_a_layer():
    missing = sorted(set(graph()) - set(LAYER_OF))
    assert not missing, f"place these modules in LAYERS (tests/test_layers.py): {missing}"


def test_imports_run_one_way():
    bad = [f"{m} ({ORDER[LAYER_OF[m]]}) imports {d} ({ORDER[LAYER_OF[d]]})"
           for m, deps in graph().items() for d in deps
           if m in LAYER_OF and d in LAYER_OF and LAYER_OF[d] > LAYER_OF[m]]
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)


def test_no_cycles():
    g = graph()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in g.get(m, ()):
            if d == m or d not in g:
                continue
            assert state.get(d) != 1, "import cycle: " + " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in g:
        if m not in state:
            visit(m, [])


if __name__ == "__main__":
    g = graph()
    for layer in ORDER:
        print(f"{layer}:")
        for m in LAYERS[layer]:
            if m in g:
                deps = sorted(g[m], key=lambda d: (LAYER_OF.get(d, 99), d))
                print(f"  {m:<16} <- {', '.join(deps) if deps else '-'}")
