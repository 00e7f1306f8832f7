"""The ASGI layer in front of every route: the body size limit, metrics, and a JSON 500 for any bug.

An oversized body is read and thrown away (up to a bound) before the 413 goes out: a client still
sending would otherwise see its connection reset and never read the answer.
"""

from __future__ import annotations

import json
import logging
import time

from vledge.serve.metrics import Metrics

log = logging.getLogger(__name__)

REASON_KEY = "vledge.reason"  # set in the ASGI scope by the error handlers, read here for the metrics


class BodyTooLarge(Exception):
    pass


class Guard:
    """Pure ASGI middleware: ``Guard(app, metrics=..., limit=bytes)``."""

    def __init__(self, app, *, metrics: Metrics, limit: int):
        self.app = app
        self.metrics = metrics
        self.limit = limit
        self.drain_limit = max(4 * limit, 64 * 1024 * 1024)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = self.metrics.endpoint(scope["path"])
        start = time.perf_counter()
        state = {"status": 500, "started": False, "received": 0, "finished": False}
        self.metrics.in_flight.inc()

        async def limited():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["finished"] = not message.get("more_body", False)
                if state["received"] > self.limit:
                    raise BodyTooLarge
            elif message["type"] == "http.disconnect":
                state["finished"] = True
            return message

        async def tracked(message):
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.limit:
                raise BodyTooLarge
            await self.app(scope, limited, tracked)
        except BodyTooLarge:
            if not state["started"]:
                if not state["finished"]:
                    await self._drain(receive, state)
                scope[REASON_KEY] = "too_large"
                await _send_json(tracked, 413, {"error": f"the request body is over the {self.limit} byte limit",
                                                "reason": "too_large"})
        except Exception:  # a bug must cost one request, never the service
            log.exception("%s %s failed", scope.get("method"), scope["path"])
            if not state["started"]:
                scope[REASON_KEY] = "internal"
                await _send_json(tracked, 500, {"error": "internal error; see the service log", "reason": "internal"})
        finally:
            self.metrics.in_flight.dec()
            status = str(state["status"])
            self.metrics.requests.labels(endpoint, status).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            if state["status"] >= 400:
                self.metrics.errors.labels(endpoint, status, scope.get(REASON_KEY, "other")).inc()

    async def _drain(self, receive, state) -> None:
        drained = 0
        while drained < self.drain_limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})
