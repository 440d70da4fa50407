"""The arrows between napkin's layers point one way (docs/design.md, "Architecture"): a module imports only the
layers below it. From the bottom: the base modules (errors, results, units, validation), specs/, accounting/ (with
bench/ beside it), render/, cli/. Read from the source with ast, so every import counts, including the ones inside
functions that keep start-up fast: a lazy import is still a dependency, and two modules that import each other
are a cycle however late either import runs."""

from __future__ import annotations

import ast
from pathlib import Path

import napkin

ROOT = Path(napkin.__file__).resolve().parent

# The base modules every layer may use; they use no layer.
CORE = {"errors", "results", "units", "validation", "_version"}
# layer -> the layers it must not import
FORBIDDEN = {
    "specs": {"accounting", "bench", "cli", "render"},
    "accounting": {"bench", "cli", "render"},
    "render": {"cli"},
    "bench": {"cli", "render"},
    **{core: {"specs", "accounting", "bench", "cli", "render"} for core in CORE},
}
# The one sideways arrow, named so that no other joins it unseen: calibration re-fits step_time's constants from a
# saved bench-matmul / bench-allreduce file, read through bench's torch-free result models and loader.
ALLOWED = {("napkin.accounting.calibration", f"napkin.bench.{m}") for m in ("model_gemms", "models", "saved")}


def module_names(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package), for every .py under the package at ``root``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package at ``root`` -> the package's modules it imports (anywhere in its body)."""
    mods = module_names(root)
    top = root.name

    def owner(name: str) -> str | None:  # the module a dotted name lives in
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, package) in mods.items():
        here = name if package else name.rpartition(".")[0]
        found: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {owner(a.name) for a in node.names if a.name.split(".")[0] == top}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != top:
                    continue
                # `from napkin import render` imports the module napkin.render; `from x import f`, the module x
                found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in mods else owner(target) for a in node.names}
        graph[name] = {m for m in found if m is not None and m != name}
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {o}" for m, out in graph.items() for o in out
                  if layer(o) in FORBIDDEN.get(layer(m), set()) and (m, o) not in ALLOWED)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan 1972), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_layer_imports_a_layer_above_it():
    assert upward_imports(import_graph(ROOT)) == []


def test_no_import_cycles_between_modules():
    assert cycles(import_graph(ROOT)) == []


def test_the_walk_sees_every_layer():
    graph = import_graph(ROOT)
    assert {"napkin.specs.catalog", "napkin.accounting.params", "napkin.cli.root", "napkin.render"} <= set(graph)
    assert "napkin.accounting.params" in graph["napkin.accounting.flops"]
    assert "napkin.specs.catalog" in graph["napkin.accounting.catalog_query"]


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    pkg = tmp_path / "napkin"
    for sub in ("specs", "accounting", "cli"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "specs" / "a.py").write_text("def f():\n    from napkin.accounting.b import g\n")  # lazy, still counted
    (pkg / "accounting" / "b.py").write_text("from ..specs import a\nfrom napkin.cli import c\n")
    (pkg / "cli" / "c.py").write_text("import napkin.accounting.b\n")
    graph = import_graph(pkg)
    assert upward_imports(graph) == ["napkin.accounting.b imports napkin.cli.c",
                                     "napkin.specs.a imports napkin.accounting.b"]
    assert cycles(graph) == [["napkin.accounting.b", "napkin.cli.c", "napkin.specs.a"]]
