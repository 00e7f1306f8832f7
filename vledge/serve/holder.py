"""One model shared by every request: loaded at start or on first use, unloaded after an idle time."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from typing import Callable, Iterator

from vledge.serve.metrics import Metrics
from vledge.serve.settings import ServeConfig

log = logging.getLogger(__name__)


class ModelHolder:
    """``with holder.use() as model:`` from any thread. The first user loads the model (the others wait
    for that one load); ``unload_if_idle`` drops it when no request has used it for ``idle_unload`` s."""

    def __init__(self, config: ServeConfig, metrics: Metrics, loader: Callable | None = None):
        self.config = config
        self.metrics = metrics
        self._loader = loader
        self._lock = threading.Lock()
        self._model = None
        self._users = 0
        self._last_used = time.monotonic()
        self.info: dict | None = None  # the loaded model's info(), kept after an unload

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self):
        import vledge

        start = time.perf_counter()
        options = {"threads": self.config.threads} if self.config.threads else {}
        if self.config.strict:
            options["strict"] = True
        options.update((k, getattr(self.config, k)) for k in ("image_device", "text_device") if getattr(self.config, k))
        loader = self._loader or vledge.load
        model = loader(self.config.bundle, device=self.config.device, **options)
        seconds = time.perf_counter() - start
        self.info = model.info()
        self.metrics.loads.inc()
        self.metrics.load_seconds.set(seconds)
        self.metrics.set_loaded(placements(self.info))
        log.info("model %s loaded in %.2f s on %s", self.config.bundle, seconds, self.info.get("placement"))
        return model

    @contextlib.contextmanager
    def use(self) -> Iterator:
        with self._lock:
            if self._model is None:
                self._model = self._load()  # a failure leaves it unloaded: the next request tries again
            self._users += 1
            model = self._model
        try:
            yield model
        finally:
            with self._lock:
                self._users -= 1
                self._last_used = time.monotonic()

    def preload(self) -> None:
        with self.use():
            pass

    def unload_if_idle(self) -> bool:
        """Drop the model if it is loaded, unused now, and idle for ``idle_unload`` seconds; True if dropped."""
        idle = self.config.idle_unload
        with self._lock:
            if self._model is None or self._users or not idle or time.monotonic() - self._last_used < idle:
                return False
            self._model = None
        gc.collect()  # the backend's sessions hold native memory: free it now, not at some later collection
        self.metrics.unloads.inc()
        self.metrics.set_loaded(None)
        log.info("model unloaded after %.0f s idle", idle)
        return True


def placements(info: dict) -> dict[str, tuple[str, str]]:
    """tower -> (backend, device), from a tower's own entry where ``info()`` gives one, else the model's."""
    out = {}
    for tower, entry in (info.get("towers") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        out[tower] = (str(entry.get("backend") or info.get("backend")), str(entry.get("device") or info.get("device")))
    return out
