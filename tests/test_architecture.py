"""The layering of docs/architecture.md, checked on every import in the package (function-level
imports included): who may import whom, no import cycles, torch only on the training side."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

from tests.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "admlops_ros"

# package -> the project packages it may import (besides itself, errors and paths). The
# runtime (bundle, backends, lidar, camera) sits at the bottom; tooling sits above it.
ALLOWED: Dict[str, Set[str]] = {
    "bundle": set(),
    "backends": {"bundle"},
    "lidar": {"bundle", "backends"},
    "camera": {"bundle", "backends", "lidar"},
    "ros": {"bundle", "backends", "lidar", "camera"},
    "simulation": {"lidar"},
    "evaluation": {"bundle", "backends", "lidar", "camera", "ros", "simulation", "parallel"},
    "data": {"bundle", "backends", "lidar", "camera", "ros", "simulation", "evaluation",
             "parallel"},
    "deploy": {"bundle", "backends", "lidar", "evaluation"},
    "training": {"bundle", "backends", "lidar", "simulation", "evaluation", "data", "parallel"},
}
# A package's cli.py is the command layer of its area: it may also use the runtime (e.g.
# `admlops bundle --convert-openvino` converts with the OpenVINO backend).
RUNTIME = {"bundle", "backends", "lidar", "camera"}
TOP_LEVEL = {"errors": set(), "paths": {"errors"}, "argtypes": set(), "interrupts": set(),
             "parallel": {"errors"},
             "cli": {"errors", "interrupts"}, "__main__": {"cli"}, "__init__": set()}
TRAINING_ONLY = ("torch", "mmdet", "mmdet3d", "mmengine", "mmcv")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, known: Set[str]) -> Dict[str, int]:
    """Project modules (deepest existing) and third-party roots imported anywhere in a file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found: Dict[str, int] = {}
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = ".".join(base[:len(base) - node.level + 1] +
                                ([node.module] if node.module else []))
            else:
                root = node.module or ""
            targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in known else root
                       for a in node.names]
        for target in targets:
            while target not in known and "." in target and target.startswith("admlops_ros"):
                target = target.rsplit(".", 1)[0]
            found.setdefault(target, node.lineno)
    return found


def _graph():
    mods = _modules()
    known = set(mods)
    return mods, {m: _imports(p, m, known) for m, p in mods.items()}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_each_package_imports_only_what_its_layer_may():
    mods, graph = _graph()
    problems = []
    for mod, imports in graph.items():
        area = _area(mod)
        allowed = ALLOWED.get(area, TOP_LEVEL.get(area))
        assert allowed is not None, f"{mod}: package {area!r} has no rule in this test"
        for target, line in imports.items():
            if not target.startswith("admlops_ros.") and target != "admlops_ros":
                continue
            other = _area(target)
            if other in (area, "errors", "paths", "argtypes", "__init__") or other in allowed:
                continue
            if area == "cli" and target.endswith(".cli"):
                continue  # the entry point registers every area's commands
            if mod.endswith(".cli") and other in RUNTIME:
                continue
            problems.append(f"{mods[mod].relative_to(REPO_ROOT)}:{line} imports {target}")
    assert not problems, "layering broken (docs/architecture.md):\n" + "\n".join(problems)


def test_no_import_cycles():
    _, graph = _graph()
    edges = {m: {t for t in imps if t in graph and t != m} for m, imps in graph.items()}
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    cycles: List[List[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    # a package __init__ that re-exports its own modules is not a cycle of the code
    real = [c for c in cycles
            if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not real, f"import cycles: {real}"


def test_torch_and_openmmlab_only_on_the_training_side():
    mods, graph = _graph()
    bad = [f"{mods[m].relative_to(REPO_ROOT)}:{line} imports {t}"
           for m, imps in graph.items() if _area(m) != "training"
           for t, line in imps.items() if t.split(".")[0] in TRAINING_ONLY]
    # the mmdet3d config loader may use mmengine when the user has it (optional)
    bad = [b for b in bad if not b.startswith("admlops_ros/bundle/mmdet3d_config.py")
           or "mmengine" not in b]
    assert not bad, "\n".join(bad)
