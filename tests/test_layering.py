"""The architecture is executable: every import in the project (function-level ones included) points down.

Floors, bottom up: `serving` (the Ray Serve app, engines, model zoo and artifacts, its own client) <- `tasks`
(domain logic grouped by stage, with `tasks.policy` and `tasks.decision` on top of the stages) <- `flows`
(Prefect orchestration) <- `cli`. `benchmarks/` and `tests/` may import anything; nothing imports them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("serving", "tasks", "flows", "cli")
# What each floor may not import (its own floor and the ones below it are fine).
FORBIDDEN = {"serving": {"tasks", "flows", "cli"}, "tasks": {"flows", "cli"}, "flows": {"cli"}, "cli": set()}


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every Python file of the four packages."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, project module) for every import statement in the file, wherever it sits (module level,
    function body, `if TYPE_CHECKING:`); `from pkg import name` counts as importing `pkg.name` when that is a
    module of the project."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                # the longest known prefix: `serving.app.build_app` is the module `serving.app`
                parts = name.split(".")
                while parts and ".".join(parts) not in known:
                    parts.pop()
                if parts:
                    yield node.lineno, ".".join(parts)


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {
        mod: {target for _, target in imports_of(path, known) if target != mod}
        for mod, path in modules.items()
    }


def component(module: str) -> str:
    """The package a module belongs to for the cycle rule: `tasks.<stage>` for stage modules, else the floor."""
    parts = module.split(".")
    if parts[0] == "tasks" and len(parts) >= 3:
        return ".".join(parts[:2])
    return parts[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                members.append(top)
                if top == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_floor_imports_a_floor_above_it() -> None:
    modules = project_modules()
    known = set(modules)
    violations = []
    for module, path in sorted(modules.items()):
        floor = module.split(".")[0]
        for line, target in imports_of(path, known):
            if target.split(".")[0] in FORBIDDEN[floor]:
                violations.append(
                    f"{path.relative_to(ROOT)}:{line} imports {target} ({floor} may not import {target.split('.')[0]})"
                )
    assert not violations, "imports that point up:\n" + "\n".join(violations)


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        edges.setdefault(component(module), set()).update(
            component(t) for t in targets if component(t) != component(module)
        )
    assert cycles(edges) == [], f"packages that import each other: {cycles(edges)}"


def test_no_import_cycle_between_modules() -> None:
    found = cycles(graph())
    assert found == [], f"modules that import each other: {found}"


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_cycle_finder_finds_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_import_reader_sees_function_level_and_from_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from tasks.policy import Policy\n"
        "def f():\n    from serving import engines\n    import flows.phase_gate as g\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cli import demo\n"
    )
    known = {"tasks.policy", "serving", "serving.engines", "flows.phase_gate", "cli", "cli.demo"}
    assert [t for _, t in sorted(imports_of(source, known))] == [
        "tasks.policy",
        "serving.engines",
        "flows.phase_gate",
        "cli.demo",
    ]
