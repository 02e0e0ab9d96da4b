"""``import qw`` stays small, and qw's modules import one another without a circle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import qw

SRC = Path(qw.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module, *, typing: bool) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is (``typing``: or type-checked); not those in functions."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            if _is_type_checking(node.test):
                pending.extend(node.body if typing else node.orelse)
            else:
                pending.extend([*node.body, *node.orelse])
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            pending.extend(node.body)
    return found


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The qw modules an import statement loads (a submodule named by ``from`` included)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = {base} | {f"{base}.{alias.name}" for alias in node.names}
    loaded: set[str] = set()
    for name in names:
        # Importing qw.a.b runs qw.a's __init__ too, unless the importer is inside qw.a.
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            target = ".".join(parts[:end])
            inside = module == target or module.startswith(target + ".")
            if target in MODULES and not inside:
                loaded.add(target)
    return loaded


def import_graph(*, typing: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = set()
        for node in _top_level_imports(tree, typing=typing):
            graph[module] |= _targets(module, node)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_walker_sees_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_walker_reads_the_imports_that_run() -> None:
    graph = import_graph(typing=False)
    assert "qw.tasks" in graph["qw.app"]
    assert "qw.worker.runtime" not in graph["qw.app"]  # under TYPE_CHECKING, and in a function
    assert "qw.worker.runtime" in import_graph(typing=True)["qw.app"]
    assert "qw.worker" in graph["qw.demo"]  # a package's __init__ runs for its submodule


def test_qw_modules_import_each_other_without_a_circle() -> None:
    assert find_cycle(import_graph(typing=False)) is None


def test_qw_modules_type_check_without_a_circle() -> None:
    # Annotations only, but a circle there is still two modules that know each other.
    assert find_cycle(import_graph(typing=True)) is None


def test_import_qw_loads_neither_the_worker_runtime_nor_pluggy_nor_the_cron_parser() -> None:
    code = "import sys, json, qw; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    packages = (
        "pluggy",
        "qw.worker",
        "qw.plugin",
        "qw.plugins",
        "qw.cli",
        "asyncio",
        "qw.schedule",
        "cronsim",
    )
    unwanted = [
        m for m in json.loads(out) if any(m == p or m.startswith(p + ".") for p in packages)
    ]
    assert unwanted == []


@pytest.mark.parametrize("name", sorted(qw.__all__))
def test_every_public_name_of_qw_resolves(name: str) -> None:
    assert getattr(qw, name) is not None


def test_worker_names_load_on_first_use() -> None:
    import qw.worker

    assert qw.Worker is qw.worker.Worker
    assert qw.current_job is qw.worker.current_job
    assert {"Worker", "WorkerConfig", "JobCancelled", "current_job"} <= set(dir(qw))
    with pytest.raises(AttributeError, match="no_such_name"):
        qw.no_such_name  # noqa: B018


def test_old_import_paths_still_work() -> None:
    from qw.app import Task, TaskCall, task_payload
    from qw.worker import Backoff as WorkerBackoff
    from qw.worker.backoff import Backoff
    from qw.worker.runtime import WorkerStats

    assert Backoff is WorkerBackoff is qw.Backoff
    assert Task is qw.Task
    assert TaskCall.__module__ == "qw.tasks"
    assert callable(task_payload)
    assert WorkerStats().lost == 0
