"""Reading versioned config dataclasses back from JSON: one check of the version and of unknown keys."""

from __future__ import annotations

from vledge.errors import ConfigError
from vledge.registry import did_you_mean


def versioned_fields(cls, data: dict, version: int) -> dict:
    """``data`` without its ``version`` key, after checking the version and that every key is a field of ``cls``."""
    data = dict(data)
    found = data.pop("version", version)
    if found != version:
        raise ConfigError(f"{cls.__name__} version {found!r} is not supported (this vledge reads {version})")
    known = cls.__dataclass_fields__
    for key in data:
        if key not in known:
            raise ConfigError(f"{cls.__name__}: unknown key {key!r}.{did_you_mean(key, known)} Known: {', '.join(known)}")
    return data
