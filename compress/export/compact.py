"""Short names in the ONNX graphs a bundle ships.

The exporter and the quantizers name every value after its place in the module tree
("/text_model/encoder/layers.0/self_attn/q_proj/MatMul_output_0_quantized_scale"); those names were a
tenth of a small tower's file. Every internal value, initializer and node gets a short unique name
instead, and doc strings go. The graph's inputs and outputs keep theirs (runtimes feed and read by name),
and so does everything outside the graph (opsets, producer, metadata). Renaming every occurrence of a
name the same way changes nothing a runtime computes.

Names that point into a graph (``keep_fp32``, calibration ranges) refer to the FP32 export, which is
never compacted: compaction runs on the files about to ship, right before the verify gate loads them.
"""

from __future__ import annotations

import itertools
import logging
import string
from pathlib import Path

from vledge.bundle import TowerSpec
from vledge.errors import ExportError

log = logging.getLogger(__name__)

# C90 identifiers, as the ONNX IR spec asks of names: a letter first, then letters, digits or underscores.
_FIRST = string.ascii_letters
_REST = string.ascii_letters + string.digits + "_"


def short_name(i: int) -> str:
    """The ``i``-th shortest identifier: a..Z (52), then aa, ab, ... (52 x 63), and so on."""
    first, i = _FIRST[i % len(_FIRST)], i // len(_FIRST)
    rest = ""
    while i:
        i -= 1
        rest += _REST[i % len(_REST)]
        i //= len(_REST)
    return first + rest


class _Names:
    """Old name -> short name, the same old name always to the same new one; ``keep`` names stay."""

    def __init__(self, keep: set[str]):
        self.keep, self.given, self._next = keep, {}, 0

    def __call__(self, name: str) -> str:
        if not name or name in self.keep:  # "" is an omitted optional input
            return name
        if name not in self.given:
            new = short_name(self._next)
            while new in self.keep:
                self._next += 1
                new = short_name(self._next)
            self._next += 1
            self.given[name] = new
        return self.given[name]


def compact_model_(model) -> int:
    """Rename, in place, every value and node of ``model``'s graph (subgraphs included) except the main
    graph's inputs and outputs; returns how many value names changed."""
    graph = model.graph
    values = _Names({v.name for v in (*graph.input, *graph.output)})
    _compact_graph_(graph, values, itertools.count())
    return len(values.given)


def _compact_graph_(graph, values: _Names, node_ids) -> None:
    from onnx import AttributeProto

    graph.doc_string = ""
    for tensor in graph.initializer:
        tensor.name, tensor.doc_string = values(tensor.name), ""
    for sparse in graph.sparse_initializer:
        sparse.values.name = values(sparse.values.name)
    for info in (*graph.input, *graph.output, *graph.value_info):
        info.name, info.doc_string = values(info.name), ""
    for annotation in graph.quantization_annotation:
        annotation.tensor_name = values(annotation.tensor_name)
    for node in graph.node:
        node.input[:] = [values(name) for name in node.input]
        node.output[:] = [values(name) for name in node.output]
        # Unique node names, not empty ones: profilers and TensorRT name layers after them.
        node.name, node.doc_string = short_name(next(node_ids)), ""
        for attribute in node.attribute:
            attribute.doc_string = ""
            if attribute.type == AttributeProto.GRAPH:
                _compact_graph_(attribute.g, values, node_ids)
            elif attribute.type == AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    _compact_graph_(subgraph, values, node_ids)
            elif attribute.type == AttributeProto.TENSOR:
                attribute.t.name = ""  # a Constant's value: its name is never referenced


def compact_onnx(src: str | Path, dest: str | Path) -> dict:
    """Write ``src`` with compact names to ``dest`` (may be ``src``); returns its bytes before and after.
    Raises ``ExportError`` when the file cannot be read as ONNX."""
    import onnx

    src, dest = Path(src), Path(dest)
    before = src.stat().st_size
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # protobuf and onnx raise many unrelated types
        raise ExportError(f"cannot read {src} as ONNX to compact its names: {type(exc).__name__}: {exc}") from exc
    compact_model_(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return {"bytes_before": before, "bytes_after": dest.stat().st_size}


def compact_towers(towers: dict[str, tuple[TowerSpec, list[Path]]], folder: str | Path
                   ) -> tuple[dict[str, tuple[TowerSpec, list[Path]]], dict]:
    """Each ONNX tower's files (a fallback such as the 7-bit copy included) compacted into ``folder`` under
    their own names; OpenVINO towers pass unchanged. Returns the towers as they now are, and per ONNX
    tower the bytes before and after."""
    folder = Path(folder)
    compacted, record = {}, {}
    for kind, (spec, files) in towers.items():
        if spec.format != "onnx":
            compacted[kind] = (spec, files)
            continue
        written = [folder / Path(f).name for f in files]
        sizes = [compact_onnx(src, dest) for src, dest in zip(files, written)]
        compacted[kind] = (spec, written)
        record[kind] = {key: sum(s[key] for s in sizes) for key in ("bytes_before", "bytes_after")}
        log.info("compact %s tower: %.1f -> %.1f KB", kind, record[kind]["bytes_before"] / 1e3,
                 record[kind]["bytes_after"] / 1e3)
    return compacted, record
