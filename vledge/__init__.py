"""vledge: compress jointly trained vision-language models and run them on edge devices.

On a device: ``model = vledge.load("bundle/")`` gives an :class:`EdgeModel`; ``model.classify(frame)``
a :class:`Prediction`; ``vledge.stream(model, "rtsp://...")`` a :class:`Stream` of :class:`FrameResult`.
Nothing here imports a framework until it is used.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Any, Sequence

from vledge.version import __version__ as __version__

if TYPE_CHECKING:
    from vledge.compress.pipeline import CompressReport
    from vledge.prediction import Prediction
    from vledge.runtimes.model import EdgeModel
    from vledge.video.stream import FrameResult, RegionScores, Stream

__all__ = ["EdgeModel", "FrameResult", "Prediction", "RegionScores", "Stream", "compress", "load", "stream"]

# Exported names and where they live, imported on first use (``import vledge`` stays light).
_LAZY = {
    "EdgeModel": "vledge.runtimes.model",
    "Prediction": "vledge.prediction",
    "Stream": "vledge.video.stream",
    "FrameResult": "vledge.video.stream",
    "RegionScores": "vledge.video.stream",
}

from vledge.spin_wait import prefer_passive_waits as _prefer_passive_waits

_prefer_passive_waits()  # before torch loads, unless the user chose a policy; see vledge/spin_wait.py


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vledge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def load(path: str | os.PathLike, device: str = "auto", strict: bool = False, backend: str | None = None, *,
         trusted_keys: Sequence | None = None, manifest_sha256: str | None = None,
         **options) -> EdgeModel:
    """Load a bundle for inference: an :class:`EdgeModel` (``classify``, ``encode_image``, ``encode_text``,
    ``info``). ``device`` is ``"auto"`` (the bundle target's placement, falling back along its chain),
    a device (``"cpu"``, ``"cuda"``, ``"NPU"``, ...) or ``"backend:device"``; ``strict`` raises instead of
    falling back. ``trusted_keys`` (public key files or keys) requires a ``vledge sign`` signature by one of
    them; ``manifest_sha256`` pins the exact manifest. All options: :func:`vledge.runtimes.load`. Imports no
    framework until called."""
    from vledge.runtimes import load as _load

    return _load(path, device=device, strict=strict, backend=backend, trusted_keys=trusted_keys,
                 manifest_sha256=manifest_sha256, **options)


def stream(model: EdgeModel, source: str | int | os.PathLike | IO[bytes], **options) -> Stream:
    """Classify the frames of a video file, URL or camera as they come; see :class:`vledge.video.Stream`.

    Returns a :class:`Stream`: iterate it for :class:`FrameResult` (one per classified frame), or call its
    ``events()`` for events only. Options: ``labels``, ``templates``, ``events`` (an
    :class:`~vledge.events.EventConfig`), ``fps``, ``regions``, ``batch_size``, ``live``, ``realtime``,
    ``timeout``, ``reconnect``. Frames are decoded as RGB. Needs the ``video`` extra (PyAV) when it starts.
    """
    from vledge.video.stream import Stream

    return Stream(model, source, **options)


def compress(teacher: str | os.PathLike, *, out: str | os.PathLike, target: str | None = None,
             **kwargs) -> CompressReport:
    """Compress a teacher into a verified edge bundle; see :func:`vledge.compress.compress` (needs torch)."""
    from vledge.compress.pipeline import compress as _compress

    return _compress(teacher, out=out, target=target, **kwargs)
