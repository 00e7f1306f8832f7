"""vledge's static import graph, read with ``ast`` from the source folders (nothing is imported).

Every ``import`` statement of every module of ``vledge/``, ``compress/`` (``vledge.compress``) and
``runtimes/`` (``vledge.runtimes``) is one edge, to the longest vledge module it names, or to the top-level
name of a package outside vledge. An edge is *lazy* when the statement sits inside a function: it runs
when the function is called, not when the module is imported.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Import name -> source folder, as pyproject.toml's [tool.setuptools.package-dir] maps them.
PACKAGE_DIRS = {"vledge": ROOT / "vledge", "vledge.compress": ROOT / "compress", "vledge.runtimes": ROOT / "runtimes"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    lazy: bool
    internal: bool  # the target is a vledge module


def module_files() -> dict[str, Path]:
    """Every vledge module's import name -> its file (a package is its ``__init__.py``)."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _imports(tree: ast.Module):
    """(node, lazy) for each import statement; lazy when a function encloses it. Imports under
    ``if TYPE_CHECKING:`` never run, so they are not edges."""
    stack = [(node, False) for node in tree.body]
    while stack:
        node, lazy = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, lazy
        if _is_type_checking(node):
            stack.extend((child, lazy) for child in node.orelse)
            continue
        inside = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inside) for child in ast.iter_child_nodes(node))


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _named(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names one statement imports: ``import a.b`` -> a.b; ``from a import b`` -> a.b (maybe a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join(anchor + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def _resolve(name: str, modules: set[str]) -> tuple[str, bool]:
    """The longest vledge module ``name`` starts with, or the top-level name of an outside package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix, True
    return parts[0], False


def build_graph() -> dict[str, list[Edge]]:
    """Module -> its edges, for every vledge module."""
    files = module_files()
    names = set(files)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = {}
        for node, lazy in _imports(tree):
            for named in _named(node, module, path.name == "__init__.py"):
                target, internal = _resolve(named, names)
                if target != module:
                    edge = Edge(module, target, node.lineno, lazy, internal)
                    key = (target, lazy)
                    if key not in edges or edge.line < edges[key].line:
                        edges[key] = edge
        graph[module] = sorted(edges.values(), key=lambda e: (e.line, e.target))
    return graph


def parents(module: str) -> list[str]:
    """The packages Python imports before ``module``: ``vledge.runtimes.base`` -> vledge, vledge.runtimes."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


def import_time_paths(graph: dict[str, list[Edge]], start: str, extra: dict[str, list[str]]) -> dict[str, list[str]]:
    """Everything ``import start`` runs, each with the chain of modules that reaches it.

    Follows module-level edges, the packages a module's import runs first, and ``extra`` (module ->
    modules it imports by a rule the graph cannot see, such as backend discovery). Outside packages
    appear under their top-level name.
    """
    paths = {start: [start]}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        following = [e.target for e in graph.get(module, []) if not e.lazy]
        following += parents(module) + extra.get(module, [])
        for target in following:
            if target not in paths:
                paths[target] = paths[module] + [target]
                if target in graph:
                    queue.append(target)
    return paths


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """Every import circle (lazy edges included), each once: the shortest through each module that is in one."""
    found = {}
    for group in _strongly_connected(graph):
        for module in sorted(group):
            cycle = _shortest_cycle(graph, module, group)
            first = min(range(len(cycle)), key=lambda i: cycle[i].source)
            cycle = cycle[first:] + cycle[:first]
            found.setdefault(frozenset((e.source, e.target) for e in cycle), cycle)
    return sorted(found.values(), key=lambda cycle: [e.source for e in cycle])


def _strongly_connected(graph: dict[str, list[Edge]]) -> list[set[str]]:
    """Groups of two or more modules each reachable from every other (Tarjan, iterative)."""
    index, low, on_stack, stack, groups, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(_internal_targets(graph, root)))]
        index[root] = low[root] = counter = counter + 1
        stack.append(root), on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)
            elif child not in index:
                index[child] = low[child] = counter = counter + 1
                stack.append(child), on_stack.add(child)
                work.append((child, iter(_internal_targets(graph, child))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def _internal_targets(graph: dict[str, list[Edge]], module: str) -> list[str]:
    return list(dict.fromkeys(e.target for e in graph[module] if e.internal))


def _shortest_cycle(graph: dict[str, list[Edge]], start: str, group: set[str]) -> list[Edge]:
    """The shortest path of edges from ``start`` back to itself inside ``group`` (breadth first)."""
    came_by: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for edge in graph[module]:
            if edge.target not in group:
                continue
            if edge.target == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came_by[path[0].source])
                return path
            if edge.target not in came_by:
                came_by[edge.target] = edge
                queue.append(edge.target)
    raise ValueError(f"{start} is in no circle of {sorted(group)}")


def describe(cycle: list[Edge], files: dict[str, Path]) -> str:
    """``a -> b (a.py:12) -> a (b.py:40, lazy)``: each step with the line that imports."""
    steps = [cycle[0].source]
    for edge in cycle:
        where = f"{files[edge.source].relative_to(ROOT)}:{edge.line}{', lazy' if edge.lazy else ''}"
        steps.append(f"{edge.target} ({where})")
    return " -> ".join(steps)
