"""vledge: compress jointly trained vision-language models and run them on edge devices."""

__version__ = "0.1.0"

from vledge.spin_wait import prefer_passive_waits as _prefer_passive_waits

_prefer_passive_waits()  # before torch loads, unless the user chose a policy; see vledge/spin_wait.py


def load(path, device: str = "auto", strict: bool = False, backend: str | None = None, *, trusted_keys=None,
         manifest_sha256: str | None = None, **options):
    """Load a bundle for inference; see :func:`vledge.runtimes.load`. Imports no framework until called."""
    from vledge.runtimes import load as _load

    return _load(path, device=device, strict=strict, backend=backend, trusted_keys=trusted_keys,
                 manifest_sha256=manifest_sha256, **options)


def stream(model, source, **options):
    """Classify the frames of a video file, URL or camera as they come; see :class:`vledge.video.Stream`.

    Returns an iterator of :class:`~vledge.video.FrameResult`. Options: ``labels``, ``templates``,
    ``events`` (an :class:`~vledge.events.EventConfig`), ``fps``, ``regions``, ``batch_size``, ``live``,
    ``realtime``, ``timeout``, ``reconnect``. Needs the ``video`` extra (PyAV) when it starts.
    """
    from vledge.video.stream import Stream

    return Stream(model, source, **options)


def compress(teacher, *, out, target: str = "cpu", **kwargs):
    """Compress a teacher into a verified edge bundle; see :func:`vledge.compress.compress` (needs torch)."""
    from vledge.compress.pipeline import compress as _compress

    return _compress(teacher, out=out, target=target, **kwargs)
