"""Reading version-1 quantize configs: one flat dict that all five schemes shared, each reading some keys.

Recipes and bundles written before per-scheme configs hold that dict. A key the target's scheme reads is
kept; one it does not read is dropped when it holds the old default (it never had an effect), and
raises otherwise, since the recipe asked for something this scheme cannot do.
"""

from __future__ import annotations

from dataclasses import fields

from vledge.errors import ConfigError

FLAT_DEFAULTS = {
    "calibration_samples": 128, "calibration_batch": 8, "per_channel": True, "image_op_types": None,
    "text_op_types": None, "keep_fp32": [], "ort_cpu_format": {"image": "auto", "text": "auto"},
    "cpu_preset": "auto", "weights_only": False, "weight_bits": 7,
}


def flat_fields(cls, data: dict) -> dict:
    """The keys of a version-1 dict (without ``version``) that config type ``cls`` reads."""
    known = {f.name for f in fields(cls)}
    out = {}
    for key, value in data.items():
        if key in known or key not in FLAT_DEFAULTS:
            out[key] = value  # unknown keys are left for the caller's check, which names them
        elif not _is_default(key, value):
            raise ConfigError(
                f"a version-1 quantize config sets {key}={value!r}, which scheme {cls.scheme!r} does not read "
                "(it had no effect); remove it, or choose a target whose scheme reads it"
            )
    return out


def _is_default(key: str, value) -> bool:
    if key == "ort_cpu_format":
        return isinstance(value, dict) and all(v == "auto" for v in value.values())
    return value == FLAT_DEFAULTS[key]
