"""List the import cycles between the modules of a package.

    python scripts/import_cycles.py [PACKAGE_DIR] [--deferred]

PACKAGE_DIR defaults to src/mlchain. Imports are read with the ast module (nothing is
imported) and sorted into:

- module-level: run when the module is imported (top level, class bodies, ``try``/``if``
  at top level);
- deferred: inside a function, run when the function is first called;
- type-only: under ``if TYPE_CHECKING:``; never run, not counted.

A cycle is a strongly connected group of modules; each is printed with one shortest
loop through it and the file and line of each import on that loop. Cycles that exist
only once deferred imports count are listed separately. An import names the module
itself (``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``); the
parent packages Python initialises on the way are not counted.

Exit status: 1 when there is a module-level cycle (with ``--deferred``: any cycle), else 0.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MODULE_LEVEL = "module-level"
DEFERRED = "deferred"
TYPE_ONLY = "type-only"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str      # module-level | deferred | type-only
    path: Path
    line: int


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file, for every .py file under the package folder ``root``."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with its kind."""
    def walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, kind
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, DEFERRED if kind == MODULE_LEVEL else kind)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), TYPE_ONLY)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                yield from walk(child, kind)
    yield from walk(tree, MODULE_LEVEL)


def _resolve(module: str, is_package: bool, node: ast.Import | ast.ImportFrom,
             known: dict[str, Path]) -> list[str]:
    """The package's modules an import statement names."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found: list[str] = []
    for name in candidates:
        while name and name not in known:  # `import a.b.c` of a non-module attribute: its module
            name = name.rpartition(".")[0]
        if name and name not in found:
            found.append(name)
    return found


def read_edges(root: Path) -> tuple[dict[str, Path], list[Edge]]:
    known = module_names(root)
    edges: list[Edge] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, kind in _imports(tree):
            for target in _resolve(module, path.name == "__init__.py", node, known):
                if target != module:
                    edges.append(Edge(module, target, kind, path, node.lineno))
    return known, edges


def strongly_connected(nodes: Iterable[str], graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; groups of two or more modules, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return sorted(groups, key=lambda g: (-len(g), g))


def shortest_loop(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One shortest cycle inside ``group`` (breadth-first from each member)."""
    members = set(group)
    best: list[str] = []
    for start in group:
        parent: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for child in sorted(graph.get(node, set()) & members):
                if child == start:
                    loop = [node]
                    while parent[loop[-1]] is not None:
                        loop.append(parent[loop[-1]])  # type: ignore[arg-type]
                    loop.reverse()
                    if not best or len(loop) < len(best):
                        best = loop
                    queue.clear()
                    break
                if child not in parent:
                    parent[child] = node
                    queue.append(child)
    return [*best, best[0]] if best else []


def graph_of(edges: Iterable[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
    return graph


def describe(group: list[str], graph: dict[str, set[str]], edges: list[Edge], base: Path) -> list[str]:
    where = {(e.source, e.target): e for e in reversed(edges)}  # the first import of each pair
    loop = shortest_loop(group, graph)
    lines = [f"  {len(group)} modules: {', '.join(group)}"]
    if loop:
        lines.append("    e.g. " + loop[0])
        for source, target in itertools.pairwise(loop):
            e = where[(source, target)]
            tag = "" if e.kind == MODULE_LEVEL else f", {e.kind}"
            lines.append(f"      -> {target}   ({e.path.relative_to(base)}:{e.line}{tag})")
    return lines


def report(root: Path) -> tuple[list[str], int, int]:
    """The printed report, the number of module-level cycles, and of deferred-only ones."""
    known, edges = read_edges(root)
    runtime = [e for e in edges if e.kind != TYPE_ONLY]
    module_level = [e for e in runtime if e.kind == MODULE_LEVEL]
    base = root.parent
    counts = {k: sum(1 for e in edges if e.kind == k) for k in (MODULE_LEVEL, DEFERRED, TYPE_ONLY)}
    head = (f"{root}: {len(known)} modules; imports between them: {counts[MODULE_LEVEL]} module-level, "
            f"{counts[DEFERRED]} deferred (in functions), {counts[TYPE_ONLY]} type-only (not counted)")
    lines = [head]
    ml_graph = graph_of(module_level)
    ml_groups = strongly_connected(known, ml_graph)
    lines.append(f"\nmodule-level cycles: {len(ml_groups)}")
    for group in ml_groups:
        lines += describe(group, ml_graph, module_level, base)
    all_graph = graph_of(runtime)
    all_groups = strongly_connected(known, all_graph)
    # a cycle made only by adding deferred imports: a group of the full graph that is not
    # already one module-level group
    ml_sets = [set(g) for g in ml_groups]
    deferred_groups = [g for g in all_groups if set(g) not in ml_sets]
    lines.append(f"\ncycles once deferred imports count too: {len(all_groups)} "
                 f"({len(deferred_groups)} not already module-level)")
    for group in deferred_groups:
        lines += describe(group, all_graph, runtime, base)
        inside = sorted({(e.source, e.target, e.path.relative_to(base), e.line) for e in runtime
                         if e.kind == DEFERRED and e.source in group and e.target in group})
        lines.append(f"    deferred imports inside it ({len(inside)}):")
        lines += [f"      {s} -> {t}   ({p}:{n})" for s, t, p, n in inside]
    return lines, len(ml_groups), len(deferred_groups)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package", nargs="?", default="src/mlchain", help="the package folder (default src/mlchain)")
    ap.add_argument("--deferred", action="store_true", help="exit 1 on cycles through deferred imports too")
    args = ap.parse_args(argv)
    root = Path(args.package).resolve()
    if not (root / "__init__.py").is_file():
        print(f"import_cycles: {args.package} is not a package folder (no __init__.py)", file=sys.stderr)
        return 2
    try:
        lines, module_level, deferred_only = report(root)
    except SyntaxError as exc:
        print(f"import_cycles: cannot parse {exc.filename}:{exc.lineno}: {exc.msg}", file=sys.stderr)
        return 2
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # `| head`: the reader left; say nothing more (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1 if module_level or (args.deferred and deferred_only) else 0


if __name__ == "__main__":
    sys.exit(main())
