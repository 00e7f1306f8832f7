"""What every quantization scheme shares: its config's base class and the registry that finds it.

A scheme is one module of this package that defines a ``SchemeConfig`` subclass and registers its
handler with ``@register(ThatConfig)``. Modules are found by listing the package on first lookup, so
a new scheme touches no other file. Handlers are looked up by the config's type, as torchao's
``quantize_(model, config)`` does.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, ClassVar

from vledge.compress.quantize.legacy import flat_fields
from vledge.errors import ConfigError
from vledge.registry import Registry, did_you_mean

# 2: one config per scheme, tagged with its name; 1 was one flat config every scheme shared (legacy.py).
CONFIG_VERSION = 2
KINDS = ("image", "text")

# handler(onnx_path, kind, calibration, out_dir, config) -> TowerSpec
Handler = Callable[..., object]
SCHEMES: Registry[type["SchemeConfig"]] = Registry("quantization scheme")
_HANDLERS: dict[type, Handler] = {}
_discovered = False


@dataclass
class SchemeConfig:
    """Settings every scheme reads. Subclasses add their own fields and set ``scheme``.

    - ``calibration_samples``: items drawn for calibration (``CalibrationData.from_dataset``); schemes
      that do not calibrate still use them to record the quantized tower's cosine to FP32.
    - ``keep_fp32``: graph node names left in float (the verify gate's recovery for offending layers).
      A name that matches nothing raises.
    """

    scheme: ClassVar[str] = ""
    calibration_samples: int = 128
    keep_fp32: list[str] = field(default_factory=list)

    def __post_init__(self):
        check_positive(self, "calibration_samples")
        self.keep_fp32 = check_names(self, "keep_fp32", self.keep_fp32, nullable=False)

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "SchemeConfig":
        """Read what ``to_dict`` wrote (or a version-1 flat config: see ``legacy``)."""
        data = dict(data)
        scheme = data.pop("scheme", cls.scheme)
        if scheme != cls.scheme:
            raise ConfigError(f"{cls.__name__} is the config of scheme {cls.scheme!r}, got one for {scheme!r}")
        version = data.pop("version", CONFIG_VERSION)
        if version == 1:
            data = flat_fields(cls, data)
        elif version != CONFIG_VERSION:
            raise ConfigError(f"{cls.__name__} version {version!r} is not supported (this vledge reads 1 and {CONFIG_VERSION})")
        check_keys(cls, data)
        return cls(**data)


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def check_keys(cls, data: dict) -> None:
    """Every key a field of ``cls``; a key another scheme reads says which."""
    known = field_names(cls)
    for key in data:
        if key in known:
            continue
        readers = [name for name, other in schemes().items() if key in field_names(other)]
        where = f"{cls.__name__} (scheme {cls.scheme!r})"
        if readers:
            raise ConfigError(f"{where} does not read {key!r}; schemes that do: {', '.join(readers)}. "
                              f"Remove it, or choose a target whose scheme reads it")
        raise ConfigError(f"{where}: unknown key {key!r}.{did_you_mean(key, known)} Known: {', '.join(known)}")


def check_positive(config, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


def check_bool(config, name: str) -> None:
    if not isinstance(getattr(config, name), bool):
        raise ConfigError(f"{type(config).__name__}.{name} must be true or false, got {getattr(config, name)!r}")


def check_names(config, name: str, value, nullable: bool) -> list[str] | None:
    """A list of non-empty strings. A ``nullable`` field takes None for its default and refuses an empty
    list (which would quantize nothing); the others take an empty list and refuse None."""
    where = f"{type(config).__name__}.{name}"
    if value is None and nullable:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of names, got {value!r}")
    if not value and nullable:
        raise ConfigError(f"{where} is empty: give op types such as ['MatMul'], or null for the default")
    return list(value)


def check_choice(where: str, value, choices: tuple) -> None:
    if value not in choices:
        hint = did_you_mean(str(value), [str(c) for c in choices])
        raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}.{hint}")


def register(config_type: type[SchemeConfig]):
    """Decorator: ``handler`` quantizes towers for ``config_type``, known by ``config_type.scheme``."""

    def add(handler: Handler) -> Handler:
        if not config_type.scheme:
            raise ConfigError(f"{config_type.__name__} sets no scheme name")
        SCHEMES.register(config_type.scheme, config_type)
        _HANDLERS[config_type] = handler
        return handler

    return add


def schemes() -> dict[str, type[SchemeConfig]]:
    """Every scheme name with its config type, after importing this package's modules once."""
    global _discovered
    if not _discovered:
        package = importlib.import_module("vledge.compress.quantize")
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
        _discovered = True
    return dict(SCHEMES.items())


def config_type(scheme: str) -> type[SchemeConfig]:
    schemes()
    return SCHEMES.get(scheme)


def handler_for(config: SchemeConfig) -> Handler:
    schemes()
    if type(config) not in _HANDLERS:
        raise ConfigError(f"no quantization handler is registered for {type(config).__name__}; "
                          f"pass the config of a scheme ({', '.join(SCHEMES.names())}), e.g. default_config('ort-cpu')")
    return _HANDLERS[type(config)]
