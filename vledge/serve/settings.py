"""`vledge serve` settings: defaults < ``VLEDGE_*`` environment variables < command-line flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Mapping

from vledge.errors import ConfigError

ENV_PREFIX = "VLEDGE_"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class ServeConfig:
    """Everything the service needs; each field is also ``VLEDGE_<FIELD>`` in the environment."""

    bundle: str = ""
    host: str = "127.0.0.1"  # loopback unless asked: a device's service is not exposed by default
    port: int = 8765
    device: str = "auto"
    strict: bool = False  # an unreachable device fails the load instead of falling back
    image_device: str = ""  # place one tower elsewhere (e.g. text_device="cpu" beside device="NPU"); "": device
    text_device: str = ""
    threads: int = 0  # the backend's threads per tower call (0: its default)
    preload: bool = False  # load the model at start instead of on the first request
    idle_unload: float = 0.0  # seconds without a request before the model is unloaded (0: never)
    max_body_mb: float = 20.0
    max_labels: int = 1000
    max_texts: int = 256
    max_text_chars: int = 2000
    max_image_pixels: int = 50_000_000
    max_concurrency: int = 2  # requests running inference at once; the others wait their turn
    max_connections: int = 256  # uvicorn answers 503 past this many open connections

    def __post_init__(self):
        positive = ("port", "max_body_mb", "max_labels", "max_texts", "max_text_chars", "max_image_pixels",
                    "max_concurrency", "max_connections")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"serve setting {name} must be positive, got {getattr(self, name)!r}")
        if self.idle_unload < 0 or self.threads < 0:
            raise ConfigError("idle_unload and threads must not be negative")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @classmethod
    def resolve(cls, flags: Mapping | None = None, env: Mapping[str, str] | None = None) -> "ServeConfig":
        """Defaults, then ``VLEDGE_*`` variables from ``env`` (default: os.environ), then ``flags`` not None."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw, type(getattr(cls(), f.name)))
        values.update({k: v for k, v in (flags or {}).items() if v is not None})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown serve setting(s) {unknown}")
        config = replace(cls(), **values)
        if not config.bundle:
            raise ConfigError("no bundle to serve: give BUNDLE or set VLEDGE_BUNDLE")
        return config


def _parse(name: str, raw: str, kind: type):
    variable = ENV_PREFIX + name.upper()
    text = raw.strip()
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{variable}={raw!r}: expected 1/0, true/false, yes/no")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r}: expected {'an integer' if kind is int else 'a number'}") from None
    return text
