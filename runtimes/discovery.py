"""Finding the runtime backends: every ``*_backend`` module of this package registers one when imported.

A new backend is one new file, ``runtimes/<name>_backend.py``: nothing lists the backends. Importing a
backend module must stay cheap (its framework is imported inside its methods), since every one is
imported whenever ``vledge.runtimes`` is.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

SUFFIX = "_backend"
_FOLDER = Path(__file__).resolve().parent


def backend_modules() -> list[str]:
    """The import names of this package's backend modules, sorted."""
    return sorted(f"{__package__}.{info.name}" for info in pkgutil.iter_modules([str(_FOLDER)])
                  if info.name.endswith(SUFFIX) and not info.ispkg)


def discover_backends() -> None:
    """Import every backend module, each registering its backend in ``vledge.runtimes.base.RUNTIMES``."""
    for module in backend_modules():
        importlib.import_module(module)
