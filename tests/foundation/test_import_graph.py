"""No import cycles: none between modules of a part, none between the parts.

The graph is read from the source (ast), so it sees every import a module
can make: at the top, inside functions, and under TYPE_CHECKING. A cycle
hidden in a function or behind TYPE_CHECKING is still two modules that
cannot be understood, tested or moved one without the other.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
# Source folder -> import name (pyproject's package-dir). Generated code (tunewire.v1) is a leaf.
FOLDERS = {
    "tunewire": "tunewire",
    "gateway": "tunewire.gateway",
    "trainer": "tunewire.trainer",
    "datasets": "tunewire.datasets",
}
# Parts by import-name prefix, most specific first; anything else under `tunewire.` is
# the shared layer (errors, identity, addresses, version, the tiny model).
PARTS = (
    ("tunewire.gateway", "gateway"),
    ("tunewire.trainer", "trainer"),
    ("tunewire.datasets", "datasets"),
    ("tunewire.cli", "cli"),
    ("tunewire.client", "client"),
    ("tunewire.models", "models"),
    ("tunewire", "shared"),
)


@functools.cache
def module_files() -> dict[str, Path]:
    modules = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if folder == "tunewire" and parts and f"tunewire.{parts[0]}" in FOLDERS.values():
                continue  # a folder mapped elsewhere
            modules[name] = path
    return modules


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; otherwise the name is an attribute.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@functools.cache
def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def part_of(module: str) -> str:
    return next(
        part for prefix, part in PARTS if module == prefix or module.startswith(prefix + ".")
    )


def test_the_checker_finds_a_cycle_and_the_graph_is_read():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    edges = graph()
    assert "tunewire.datasets.scanner" in edges["tunewire.datasets.validate"]
    # Function-level imports count.
    assert "tunewire.datasets.report_proto" in edges["tunewire.datasets.api"]


def test_no_module_cycle_inside_any_part():
    # datasets/ had two (validate <-> parallel in functions, scanner <-> valid_records
    # under TYPE_CHECKING); every part is held to none.
    assert cycles(graph()) == []


def test_no_cycle_between_the_parts():
    parts: dict[str, set[str]] = {}
    for name, targets in graph().items():
        parts.setdefault(part_of(name), set()).update(
            part_of(t) for t in targets if part_of(t) != part_of(name)
        )
    found = cycles(parts)
    assert found == [], f"parts importing each other: {found}; " + "; ".join(
        f"{a} -> {b}: "
        + ", ".join(
            f"{m} -> {t}"
            for m, targets in sorted(graph().items())
            if part_of(m) == a
            for t in sorted(targets)
            if part_of(t) == b
        )
        for cycle in found
        for a in cycle
        for b in cycle
        if b in parts.get(a, ())
    )


def test_code_outside_datasets_uses_only_its_door():
    """tunewire.datasets.api is the library's one public module for the product's code."""
    # Benchmarks are callers too; tests may look behind the door at the units they test.
    through_the_side = []
    bench = {p.stem: p for p in (REPO / "bench").glob("*.py")}
    edges = dict(graph())
    modules = module_files()
    for path in bench.values():
        edges[f"bench.{path.stem}"] = imports_of(path, f"bench.{path.stem}", modules)
    for name, targets in sorted(edges.items()):
        if name.startswith("tunewire.datasets"):
            continue
        through_the_side += [
            f"{name} -> {t}"
            for t in sorted(targets)
            if t.startswith("tunewire.datasets.") and t != "tunewire.datasets.api"
        ]
    assert through_the_side == []


def test_generated_modules_have_one_alias_each():
    """tunewire.v1's modules are imported as `from tunewire.v1 import X_pb2 as X_pb` (and
    `X_pb2_grpc as X_grpc`): a short name that always means the same module."""
    wrong = []
    roots = [*FOLDERS, "bench", "tests", "scripts"]
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Import):
                    wrong += [where for a in node.names if a.name.startswith("tunewire.v1.")]
                if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                    "tunewire.v1"
                ):
                    continue
                if node.module != "tunewire.v1":
                    wrong.append(f"{where}: import the module, not names from it")
                    continue
                for alias in node.names:
                    stem = alias.name.removesuffix("_pb2_grpc").removesuffix("_pb2")
                    kind = "_grpc" if alias.name.endswith("_pb2_grpc") else "_pb"
                    if alias.asname != stem + kind:
                        wrong.append(f"{where}: {alias.name} as {alias.asname}, not {stem + kind}")
    assert wrong == []


def external_roots(path: Path) -> set[str]:
    """The top-level names of the third-party modules `path` imports anywhere in its body."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph().get(module, ()))
    return seen


def test_mlx_is_imported_only_where_a_worker_or_the_cli_runs():
    """The daemon and the gateway must start, and stay small, without mlx: only the worker
    processes (and the CLI's model commands, which run in the user's own process) import it,
    not even through a function-level import of a shared module."""
    files = module_files()
    uses_mlx = {m for m, path in files.items() if external_roots(path) & {"mlx", "mlx_lm"}}
    allowed = ("tunewire.trainer.worker", "tunewire.models")
    assert all(m.startswith(allowed) for m in uses_mlx), sorted(uses_mlx)
    servers = [
        m
        for m in files
        if part_of(m) == "gateway"
        or (part_of(m) == "trainer" and not m.startswith("tunewire.trainer.worker"))
    ]
    leaks = {m: sorted(reachable(m) & uses_mlx) for m in servers if reachable(m) & uses_mlx}
    assert leaks == {}, f"server modules that reach mlx: {leaks}"


def test_the_gateway_and_the_trainer_never_import_each_other():
    crossing = [
        f"{m} -> {t}"
        for m, targets in sorted(graph().items())
        for t in sorted(targets)
        if {part_of(m), part_of(t)} == {"gateway", "trainer"}
    ]
    assert crossing == []
