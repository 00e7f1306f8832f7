"""The pipeline and its stage rooms form no import circle, counting imports inside functions too."""

import ast
from pathlib import Path

COMPRESS = Path(__file__).resolve().parents[1] / "compress"
ROOMS = ("export", "prune", "verify", "bundle")
MODULES = ("pipeline", "stages", "config", "report", "workdir")


def _module_name(path: Path) -> str:
    parts = [p for p in path.relative_to(COMPRESS).with_suffix("").parts if p != "__init__"]
    return ".".join(["vledge.compress", *parts])


def _imports(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text())
    guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).rstrip(".")
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    files = [p for room in ROOMS for p in (COMPRESS / room).glob("*.py")] + [COMPRESS / f"{m}.py" for m in MODULES]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {m for m in _imports(path, package) if m in modules and m != name}
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as the path around it), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_graph_covers_every_room():
    graph = _graph()
    assert len(graph) >= 20
    for room in ROOMS:
        assert any(m.startswith(f"vledge.compress.{room}.") for m in graph), room
    assert "vledge.compress.verify.gate" in graph["vledge.compress.pipeline"]  # edges inside functions count


def test_no_import_circle():
    graph = _graph()
    assert _circle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the check itself finds one
    assert _circle(graph) is None, f"import circle: {' -> '.join(_circle(graph))}"
