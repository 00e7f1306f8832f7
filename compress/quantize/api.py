"""The quantize stage's public functions: ``quantize`` one tower by its scheme's config, and configs by name."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from vledge.bundle import TowerSpec
from vledge.compress.quantize.base import KINDS, SchemeConfig, config_type, handler_for, schemes
from vledge.errors import ConfigError

log = logging.getLogger(__name__)


def quantize(onnx_path: str | Path, kind: str, config: SchemeConfig, calibration=None,
             out_dir: str | Path = ".") -> TowerSpec:
    """Quantize one FP32 ONNX tower into ``out_dir/{kind}_encoder.<ext>`` with the scheme ``config`` is for.

    ``config`` is a scheme's config (``default_config("ort-cpu")``, ``OrtCpuConfig(weight_bits=8)``, ...):
    its type chooses the handler. ``calibration`` is a ``CalibrationData``; schemes that calibrate raise
    ``ConfigError`` without it. Returns the tower's ``TowerSpec`` (file name relative to ``out_dir``,
    format, precision, shapes) with a ``quantization`` dict recording scheme, method, format, settings,
    node counts and reasons.
    """
    if not isinstance(config, SchemeConfig):
        raise ConfigError(f"quantize needs a scheme's config such as default_config('ort-cpu'), got {config!r}")
    handler = handler_for(config)
    if kind not in KINDS:
        raise ConfigError(f"tower kind must be 'image' or 'text', got {kind!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ConfigError(f"ONNX tower to quantize not found: {onnx_path}; export it first (export_onnx)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    spec = handler(onnx_path, kind, calibration, out_dir, config)
    log.info("quantize %s tower: %s %s -> %s (%s) in %.1f s", kind, config.scheme, spec.quantization.get("method", ""),
             spec.file, spec.precision, time.perf_counter() - start)
    return spec


def quantize_towers(onnx_paths: dict[str, str | Path], config: SchemeConfig, calibration=None,
                    out_dir: str | Path = ".") -> dict[str, TowerSpec]:
    """``quantize`` for each ``{kind: onnx_path}``."""
    return {kind: quantize(path, kind, config, calibration, out_dir) for kind, path in onnx_paths.items()}


def scheme_names() -> list[str]:
    """The registered scheme names (what the targets table's ``quantization`` column holds)."""
    return sorted(schemes())


def default_config(scheme: str, **overrides) -> SchemeConfig:
    """The config of ``scheme`` (a name from the targets table, e.g. ``"ort-cpu"``) at its defaults,
    with ``overrides`` applied; an unknown name raises with a "did you mean"."""
    return config_type(scheme)(**overrides)


def config_from_dict(data: dict, scheme: str | None = None) -> SchemeConfig:
    """Read a config ``to_dict`` wrote. ``scheme`` names the scheme where ``data`` does not (a version-1
    flat dict from a recipe or bundle written before per-scheme configs)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a quantize config is a JSON object, got {data!r}")
    name = data.get("scheme", scheme)
    if name is None:
        raise ConfigError("this quantize config names no scheme; add \"scheme\": one of " + ", ".join(scheme_names()))
    return config_type(name).from_dict(data)


def config_for_target(scheme: str | None, value) -> SchemeConfig | None:
    """What ``CompressConfig.quantize`` holds for a target whose scheme is ``scheme``: ``value`` as a
    config of that scheme (None: its defaults; a dict: read with ``config_from_dict``)."""
    if scheme is None:
        if value is not None:
            raise ConfigError("this target quantizes nothing, so CompressConfig.quantize must be null")
        return None
    config = default_config(scheme) if value is None else value
    named = config.get("scheme", scheme) if isinstance(config, dict) else getattr(config, "scheme", None)
    if named == scheme and isinstance(config, dict):
        config = config_from_dict(config, scheme)
    if not isinstance(config, SchemeConfig) or config.scheme != scheme:
        got = named if isinstance(named, str) else type(config).__name__
        raise ConfigError(f"the target quantizes with scheme {scheme!r}, but CompressConfig.quantize is a {got!r} "
                          f"config; pass default_config({scheme!r}) or a dict of its settings")
    return config
