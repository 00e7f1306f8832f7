"""The import contracts, checked on the static import graph (``tests/import_graph.py``):

- ``import vledge`` and ``import vledge.runtimes`` run no module of ``vledge.compress`` and no framework
  (torch and its family, ONNX Runtime, OpenVINO): module-level imports only, since a function's imports run
  when it is called (``tests/test_lean_import.py`` checks the same in a fresh process, with a bundle loaded);
- ``vledge.compress`` never imports the CLI, even inside a function;
- no import circle anywhere, lazy imports included: two modules that need each other cannot be read,
  moved or tested apart, whether the imports run at import time or later.
"""

import pytest

from import_graph import Edge, build_graph, cycles, describe, import_time_paths, module_files
from vledge.runtimes.discovery import backend_modules

FRAMEWORKS = ("torch", "torchvision", "transformers", "onnxruntime", "openvino")
COMPRESS = "vledge.compress"
# What the graph cannot read from an import statement: vledge.runtimes imports its backends by discovery.
DISCOVERED = {"vledge.runtimes": backend_modules()}


@pytest.fixture(scope="module")
def graph():
    return build_graph()


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("start", ["vledge", "vledge.runtimes"])
def test_importing_the_runtime_reaches_neither_a_framework_nor_compress(graph, start):
    paths = import_time_paths(graph, start, DISCOVERED)
    if start == "vledge.runtimes":  # the walk really follows the runtime's imports and its discovered backends
        assert {"vledge.runtimes.model", "vledge.runtimes.onnxruntime_backend", "numpy"} <= set(paths)
    reached = sorted(" -> ".join(path) for name, path in paths.items()
                     if _inside(name, COMPRESS) or name.split(".")[0] in FRAMEWORKS)
    assert not reached, f"import {start} runs:\n" + "\n".join(reached)


def test_compress_never_imports_the_cli(graph):
    compress = [m for m in graph if _inside(m, COMPRESS)]
    assert len(compress) > 10
    reached = {}
    queue = list(compress)
    via = {m: [m] for m in compress}
    while queue:
        module = queue.pop()
        for edge in graph[module]:
            if edge.internal and edge.target not in via:
                via[edge.target] = via[module] + [edge.target]
                queue.append(edge.target)
                if _inside(edge.target, "vledge.cli"):
                    reached[edge.target] = " -> ".join(via[edge.target])
    assert not reached, "vledge.compress imports the CLI:\n" + "\n".join(sorted(reached.values()))


def _circles(graph, in_compress: bool) -> list[str]:
    files = module_files()
    return [describe(cycle, files) for cycle in cycles(graph)
            if all(_inside(e.source, COMPRESS) for e in cycle) == in_compress]


def test_no_import_circle_outside_compress(graph):
    found = _circles(graph, in_compress=False)
    assert not found, f"{len(found)} import circle(s):\n" + "\n".join(found)


def test_no_import_circle_inside_compress(graph):
    found = _circles(graph, in_compress=True)
    assert not found, f"{len(found)} import circle(s) inside vledge.compress:\n" + "\n".join(found)


def test_the_circle_finder_finds_each_circle_once():
    def edges(pairs, lazy=False):
        return [Edge(a, b, line, lazy, True) for line, (a, b) in enumerate(pairs, 1)]

    graph = {
        "a": edges([("a", "b")]), "b": edges([("b", "a"), ("b", "c")]), "c": edges([("c", "b")], lazy=True),
        "d": edges([("d", "a")]),
    }
    found = [[(e.source, e.target) for e in cycle] for cycle in cycles(graph)]
    assert found == [[("a", "b"), ("b", "a")], [("b", "c"), ("c", "b")]]
    assert cycles({"a": edges([("a", "b")]), "b": []}) == []
