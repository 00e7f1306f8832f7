"""Run the service: in the foreground (``vledge serve``) or in a background thread of a program or test."""

from __future__ import annotations

import logging
import threading
import time

from vledge.errors import VledgeError, require
from vledge.serve.settings import ServeConfig

log = logging.getLogger(__name__)


def _uvicorn_config(app, config: ServeConfig, port: int | None = None, log_level: str = "info"):
    uvicorn = require("uvicorn", "serve")
    return uvicorn.Config(app, host=config.host, port=config.port if port is None else port, log_level=log_level,
                          access_log=False, limit_concurrency=config.max_connections, lifespan="on",
                          timeout_keep_alive=5)


def serve(config: ServeConfig) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM end it cleanly)."""
    uvicorn = require("uvicorn", "serve")
    from vledge.serve.app import create_app

    log.info("serving %s on http://%s:%d (preload=%s, idle_unload=%s s)", config.bundle, config.host, config.port,
             config.preload, config.idle_unload or "never")
    app = create_app(config)
    if config.preload:  # here rather than in the app's start-up: a bundle that cannot load is one named error
        app.state.holder.preload()
    server = uvicorn.Server(_uvicorn_config(app, config))
    server.run()
    if not server.started:
        raise VledgeError(f"the service did not start on {config.host}:{config.port}; see the log above")


class BackgroundServer:
    """``with BackgroundServer(config) as server: server.url`` — uvicorn in a daemon thread, on the given
    host and a free port (``port=0``), stopped and joined on exit."""

    def __init__(self, config: ServeConfig, *, port: int = 0, loader=None, start_timeout: float = 60.0):
        from vledge.serve.app import create_app

        self.app = create_app(config, loader=loader)
        uvicorn = require("uvicorn", "serve")
        self._server = uvicorn.Server(_uvicorn_config(self.app, config, port, log_level="warning"))
        self._config = config
        self._thread = threading.Thread(target=self._run, name="vledge-serve", daemon=True)
        self._start_timeout = start_timeout
        self.url = ""

    def _run(self) -> None:
        try:
            self._server.run()
        except SystemExit:  # uvicorn's way of saying the start failed; it has logged why
            pass

    def __enter__(self) -> "BackgroundServer":
        if self._config.preload:
            self.app.state.holder.preload()  # a bundle that cannot load raises its own error here
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise VledgeError("the background service did not start; see the log")
            time.sleep(0.02)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __exit__(self, *exc) -> None:
        self.stop()
