"""The import graph of picochat points down, and has no cycles.

Every module under picochat/ is parsed with `ast` (imports at module level and inside
functions alike, since a function-level import is still a dependency) and each
`picochat.*` import is checked against LAYERS below. A module may import its own layer
or any layer under it; an import of a higher layer is a back-edge. Separately, an
import cycle between two modules is an error even inside one layer or one package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "picochat"

# Low to high. The key is a dotted prefix under picochat; the longest matching prefix wins.
LAYERS: dict[str, int] = {
    # 0 - plumbing every layer uses: errors, paths, logging, devices, the config dataclasses.
    "common": 0,
    "config": 0,
    # 1 - the building blocks, which know nothing of each other's callers.
    "tokenizer": 1,
    "data": 1,
    "model": 1,
    "sandbox": 1,  # the jailed code runner and graders: used by engine tools and tasks
    "run_layout": 1,  # a run on disk: stage order, latest finished stage, loading tokenizer + model
    # 2 - what is built from the blocks.
    "optim": 2,
    "engine": 2,
    "tasks": 2,
    # 3 - the training stages.
    "train": 3,
    # 4 - evaluation of trained runs (the report card reads training's outputs).
    "eval": 4,
    # 5 - the top (DESIGN.md: "train, eval -> serve, cli"): the command package, which drives the
    #     layers below (cli/train.py hands the stages eval's evaluators; cli/speedrun.py, plan.py
    #     and cost.py run and cost the pipeline; launch.py, chat.py), the server, and export.
    "cli": 5,
    "serve": 5,
    "export": 5,
    "__main__": 5,
    # A package's `commands` module (tokenizer/, data/, eval/) is that package's CLI entry; each
    # imports only its own package and lower, so it sits with its package (train/base.py calls
    # tokenizer.commands.train_main to train a missing tokenizer).
}

# Edges still pointing up, each with what removing it takes: none are left. The test fails on
# any edge not listed here AND on a listed edge that no longer exists, so this list can only shrink.
KNOWN_BACK_EDGES: set[str] = set()
KNOWN_CYCLES: list[list[str]] = []
PACKAGE_ROOT = -1  # picochat/__init__.py: imported by everything, must import nothing


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    rel = module.split(".", 1)[1] if "." in module else ""
    if not rel:
        return PACKAGE_ROOT
    parts = rel.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The picochat modules `module` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "picochat")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "picochat":
                continue
            for alias in node.names:  # `from picochat.data import sources` names a module
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    found.discard(module)
    return {m for m in found if m in known or m == "picochat"}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {m: imported_modules(m, p, known) for m, p in modules.items()}


def back_edges(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for importer, targets in sorted(graph.items()):
        for imported in sorted(targets):
            lo, hi = layer_of(importer), layer_of(imported)
            if hi > lo:
                bad.append(f"{importer} (layer {lo}) -> {imported} (layer {hi})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    missing = []
    for m in all_modules():
        try:
            layer_of(m)
        except KeyError as e:
            missing.append(str(e))
    assert not missing, "\n".join(missing)


def test_imports_point_down() -> None:
    found = back_edges(import_graph())
    bad = [e for e in found if e not in KNOWN_BACK_EDGES]
    assert not bad, "imports of a higher layer (importer -> imported):\n" + "\n".join(bad)
    gone = sorted(KNOWN_BACK_EDGES - set(found))
    assert not gone, "fixed, so remove from KNOWN_BACK_EDGES:\n" + "\n".join(gone)


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    bad = [c for c in found if c not in KNOWN_CYCLES]
    assert not bad, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in bad)
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"fixed, so remove from KNOWN_CYCLES: {gone}"


# The checker itself must be able to fail: run it on small made-up graphs.


def test_checker_reports_a_back_edge() -> None:
    graph = {"picochat.train.rl": {"picochat.eval.chat"}, "picochat.eval.chat": set()}
    assert back_edges(graph) == ["picochat.train.rl (layer 3) -> picochat.eval.chat (layer 4)"]


def test_checker_reports_a_cycle_inside_one_package() -> None:
    graph = {
        "picochat.data.download": {"picochat.data.sources"},
        "picochat.data.sources": {"picochat.data.download"},
    }
    assert cycles(graph) == [["picochat.data.download", "picochat.data.sources"]]
    assert back_edges(graph) == []


def test_function_level_and_relative_imports_are_seen(tmp_path: Path) -> None:
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from picochat.eval import chat\n    from . import sources\n")
    known = {"picochat.eval.chat", "picochat.data.sources", "picochat.data.x"}
    assert imported_modules("picochat.data.x", src, known) == {
        "picochat.eval.chat",
        "picochat.data.sources",
    }


@pytest.mark.parametrize("module", ["picochat", "picochat.common.errors", "picochat.cli"])
def test_layer_lookup(module: str) -> None:
    assert layer_of(module) in {PACKAGE_ROOT, 0, 5}
