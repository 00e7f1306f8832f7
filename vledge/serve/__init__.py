"""`vledge serve`: a local HTTP service over one shared model (the ``serve`` extra: Starlette, uvicorn,
python-multipart, prometheus-client). Nothing here imports them until an app is made."""

from vledge.serve.settings import ServeConfig

__all__ = ["ServeConfig", "create_app", "BackgroundServer"]


def create_app(config: ServeConfig, **kwargs):
    """The ASGI app; see :mod:`vledge.serve.app`."""
    from vledge.serve.app import create_app as _create_app

    return _create_app(config, **kwargs)


def __getattr__(name):
    if name == "BackgroundServer":
        from vledge.serve.server import BackgroundServer

        return BackgroundServer
    raise AttributeError(f"module 'vledge.serve' has no attribute {name!r}")
