"""The opened towers checked against what the manifest says of them, at load rather than at the first call.

Where a framework reports a tower's inputs and outputs (``Runtime.ports``), their names, dtypes and fixed
sizes must be the manifest's, the image input the preprocessing size, a fixed text length the
tokenizer's ``max_length`` and the output ``embed_dim`` wide. Then each tower runs once on the largest
input the bundle can give it (``max_length`` tokens of the tokenizer's highest id), so a position or
vocabulary table too small for the tokenizer fails here with a ``BundleError`` naming it. ONNX Runtime
refuses an index past a table; OpenVINO's CPU plugin reads zeros there, so on OpenVINO this run shows
only a failure to run or an output of the wrong size or NaNs.
"""

from __future__ import annotations

import numpy as np

from vledge.errors import BundleError
from vledge.runtimes.base import Port, Runtime
from vledge.text import TextTokenizer


def check_towers(runtime: Runtime, tokenizer: TextTokenizer) -> None:
    """Raise ``BundleError`` where an opened tower disagrees with the manifest or fails on its largest input."""
    for kind in runtime.manifest.towers:
        ports = runtime.ports(kind)
        if ports is not None:
            _check_ports(runtime, kind, *ports)
        _probe(runtime, kind, tokenizer)


def _expected_sizes(runtime: Runtime, kind: str) -> list[int | None]:
    """The size each input axis must have when the opened graph fixes it (None: any; the batch axis)."""
    manifest = runtime.manifest
    if kind == "image":
        size = manifest.preprocess.image_size
        return [None, 3, size, size]
    return [None, manifest.tokenizer.max_length]


def _check_ports(runtime: Runtime, kind: str, inputs: list[Port], outputs: list[Port]) -> None:
    manifest = runtime.manifest
    tower = manifest.towers[kind]
    file = runtime.tower_choices[kind].file if kind in runtime.tower_choices else tower.file
    listed = {t.name: t for t in tower.inputs}
    if sorted(p.name for p in inputs) != sorted(listed):
        raise BundleError(
            f"the {kind} tower {file} takes inputs {sorted(p.name for p in inputs)}, but vledge.json lists "
            f"{sorted(listed)}; re-run vledge compress"
        )
    expected = _expected_sizes(runtime, kind)
    for port in inputs:
        spec = listed[port.name]
        if port.dtype != spec.dtype:
            raise BundleError(f"the {kind} tower {file} takes {port.name} as {port.dtype}, but vledge.json says "
                              f"{spec.dtype}; re-run vledge compress")
        if port.shape is None:
            continue
        if len(port.shape) != len(spec.shape):
            raise BundleError(f"the {kind} tower {file} takes {port.name} with {len(port.shape)} axes, but vledge.json "
                              f"gives it {len(spec.shape)}; re-run vledge compress")
        for axis, (got, want) in enumerate(zip(port.shape, spec.shape)):
            need = want if isinstance(want, int) else expected[axis] if axis < len(expected) else None
            if got is not None and need is not None and axis > 0 and got != need:
                raise BundleError(
                    f"the {kind} tower {file} takes {port.name} of shape {_show(port.shape)}, but vledge.json "
                    f"(shape {spec.shape}, preprocessing and tokenizer) gives it {need} on axis {axis}; "
                    "re-run vledge compress"
                )
    if not outputs or not outputs[0].dtype.startswith("float"):
        raise BundleError(f"the {kind} tower {file} does not output float embeddings "
                          f"({[(p.name, p.dtype) for p in outputs]}); re-run vledge compress")
    shape = outputs[0].shape
    if shape is not None and (len(shape) != 2 or shape[1] not in (None, manifest.embed_dim)):
        raise BundleError(f"the {kind} tower {file} outputs shape {_show(shape)}, but vledge.json says "
                          f"(batch, {manifest.embed_dim}) (embed_dim); re-run vledge compress")


def _show(shape: list) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _probe(runtime: Runtime, kind: str, tokenizer: TextTokenizer) -> None:
    manifest = runtime.manifest
    shapes = runtime.input_shapes(kind)
    first = next(iter(shapes.values()))
    batch = first[0] if isinstance(first[0], int) else 1
    specs = manifest.towers[kind].inputs
    if kind == "image":
        size = manifest.preprocess.image_size
        feeds = {specs[0].name: np.zeros((batch, 3, size, size), dtype=specs[0].dtype)}
        what = f"a {size} x {size} image"
    else:
        length = manifest.tokenizer.max_length
        top = tokenizer.backend.get_vocab_size(with_added_tokens=True) - 1
        ids, mask = specs
        feeds = {ids.name: np.full((batch, length), top, dtype=ids.dtype),
                 mask.name: np.ones((batch, length), dtype=mask.dtype)}
        what = f"{length} tokens (the tokenizer's max_length) of id {top} (its highest)"
    try:
        out = runtime.run(kind, feeds)
    except Exception as exc:  # each framework raises its own types
        raise BundleError(
            f"the {kind} tower fails on {what}: {type(exc).__name__}: {str(exc)[:300]}; its tables may be smaller "
            "than the tokenizer or preprocessing in vledge.json needs: re-run vledge compress"
        ) from None
    # Values (NaN, inf, a constant) are the self-test's to judge (runtimes/selftest.py): it can move the
    # tower to the next placement of the chain, where this check could only refuse the bundle.
    if out.shape != (batch, manifest.embed_dim):
        raise BundleError(
            f"the {kind} tower gives {out.shape} on {what}, not {batch} embeddings of embed_dim "
            f"{manifest.embed_dim}; re-run vledge compress"
        )
