"""The import contract: the folders of `ioi/` are layers, each importing only those below it.

task ← models ← methods ← runs ← present ← the CLI ← the dashboard's pages. Every import counts,
including those inside functions (a lazy import still ties the layers), and no cycle is allowed
between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("task", "models", "methods", "runs", "present", "cli", "pages")
MAX_LINES = 400
LONG_REASON = "Longer than 400 lines because"


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "app_pages" or module == "streamlit_app":
        return LAYERS.index("pages")
    if module in ("ioi", "ioi.__init__"):
        return -1  # the package root holds only the version
    if parts[1] in ("cli", "__main__"):
        return LAYERS.index("cli")
    return LAYERS.index(parts[1])


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"] or ["ioi"]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    files = [*(REPO / "ioi").rglob("*.py"), *(REPO / "app_pages").glob("*.py"), REPO / "streamlit_app.py"]
    return {module_name(f): f for f in files}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports (at module level or inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "ioi":
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {m: imports_of(p, known) - {m} for m, p in modules.items()}


def test_every_ioi_module_is_in_a_layer():
    for module in project_modules():
        layer_of(module)  # raises ValueError for a folder that is not a layer


def test_no_import_runs_against_the_layers():
    bad = [
        f"{m} ({LAYERS[layer_of(m)]}) imports {d} ({LAYERS[layer_of(d)]})"
        for m, deps in graph().items()
        for d in deps
        if layer_of(d) > layer_of(m)
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_modules_stay_small_or_say_why():
    long = [
        f"{m}: {n} lines"
        for m, p in project_modules().items()
        if (n := len(p.read_text().splitlines())) > MAX_LINES and LONG_REASON not in p.read_text()[:2000]
    ]
    assert not long, "split these modules or give the reason at their top:\n" + "\n".join(long)


def test_the_contract_catches_a_violation(tmp_path):
    """The walk sees a lazy import inside a function (the kind that hid the old cycles)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from ioi.runs.cache import cache_root\n")
    assert imports_of(src, set(project_modules())) == {"ioi.runs.cache"}
    assert layer_of("ioi.runs.cache") > layer_of("ioi.task.data")
