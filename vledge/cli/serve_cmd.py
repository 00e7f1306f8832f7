"""`vledge serve`: the local HTTP service (classify, embed, health, Prometheus metrics, a page at /)."""

from __future__ import annotations

import argparse

from vledge.cli.options import add_device_flags


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="a local HTTP service: /v1/classify, /v1/embed/*, /healthz, /metrics, a page at /",
                       description="Every flag can also be set as a VLEDGE_* environment variable (flags win): "
                                   "VLEDGE_BUNDLE, VLEDGE_HOST, VLEDGE_PORT, VLEDGE_DEVICE, VLEDGE_STRICT, VLEDGE_IMAGE_DEVICE, "
                                   "VLEDGE_TEXT_DEVICE, VLEDGE_THREADS, "
                                   "VLEDGE_PRELOAD, VLEDGE_IDLE_UNLOAD, VLEDGE_MAX_BODY_MB, VLEDGE_MAX_LABELS, "
                                   "VLEDGE_MAX_TEXTS, VLEDGE_MAX_TEXT_CHARS, VLEDGE_MAX_IMAGE_PIXELS, "
                                   "VLEDGE_MAX_CONCURRENCY, VLEDGE_MAX_CONNECTIONS.")
    p.add_argument("bundle", nargs="?", default=None, help="the bundle folder (or VLEDGE_BUNDLE)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="default 8765")
    add_device_flags(p, from_environment=True)
    p.add_argument("--image-device", help="run the image tower elsewhere (default: --device)")
    p.add_argument("--text-device", help="run the text tower elsewhere, e.g. cpu beside --device NPU (default: --device)")
    p.add_argument("--threads", type=int, help="backend threads per tower call (default: the backend's)")
    p.add_argument("--preload", action=argparse.BooleanOptionalAction, default=None,
                   help="load the model at start (default: on the first request)")
    p.add_argument("--idle-unload", type=float, metavar="SECONDS", help="unload the model after this idle time (0: never)")
    p.add_argument("--max-body-mb", type=float, help="largest request body (default 20)")
    p.add_argument("--max-labels", type=int, help="most labels a classify request (default 1000)")
    p.add_argument("--max-texts", type=int, help="most texts an embed request (default 256)")
    p.add_argument("--max-concurrency", type=int, help="requests in inference at once (default 2)")
    p.add_argument("--max-connections", type=int, help="open connections before 503 (default 256)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from vledge.serve.server import serve
    from vledge.serve.settings import ServeConfig

    flags = {k: getattr(args, k) for k in ("bundle", "host", "port", "device", "strict", "image_device", "text_device", "threads",
                                           "preload", "idle_unload",
                                           "max_body_mb", "max_labels", "max_texts", "max_concurrency",
                                           "max_connections")}
    serve(ServeConfig.resolve(flags))
    return 0
