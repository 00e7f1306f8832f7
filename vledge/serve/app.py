"""The HTTP service: ``create_app(config)`` returns a Starlette app (the ``serve`` extra).

Routes: ``POST /v1/classify`` (multipart: ``image`` file, ``labels``, optional ``top_k``, ``templates``),
``POST /v1/embed/image`` (multipart ``image`` fields, or a raw image body), ``POST /v1/embed/text``
(JSON ``{"texts": [...]}``), ``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /`` (a page to try it).
Every error is JSON ``{"error": message, "reason": word}`` with a 4xx status for a bad request, 503 when
the model cannot load; decoding and inference run in worker threads, at most ``max_concurrency`` at once.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from importlib import resources

from vledge.errors import ConfigError, VledgeError, require
from vledge.serve.guard import REASON_KEY, Guard
from vledge.serve.holder import ModelHolder
from vledge.serve.metrics import Metrics
from vledge.serve.settings import ServeConfig

log = logging.getLogger(__name__)

MAX_IMAGES = 64  # image fields in one embed request


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def create_app(config: ServeConfig, *, loader=None):
    """The service's ASGI app for ``config``; ``loader`` replaces ``vledge.load`` (tests)."""
    require("starlette", "serve")
    require("python_multipart", "serve")
    require("prometheus_client", "serve")
    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    metrics = Metrics()
    holder = ModelHolder(config, metrics, loader)
    limiter = anyio.CapacityLimiter(config.max_concurrency)
    page = resources.files("vledge.serve").joinpath("page.html").read_text(encoding="utf-8")

    async def run_model(endpoint: str, fn):
        """fn(model) in a worker thread, timed; a model that cannot load is a 503."""
        def work():
            start = time.perf_counter()
            try:
                with holder.use() as model:
                    return fn(model)
            finally:
                metrics.inference.labels(endpoint).observe(time.perf_counter() - start)
        try:
            return await anyio.to_thread.run_sync(work, limiter=limiter)
        except ApiError:
            raise
        except ConfigError as exc:  # the request's labels or templates were refused by the model
            raise ApiError(400, "bad_request", str(exc)) from None
        except VledgeError as exc:
            raise ApiError(503, "model_unavailable", f"the model cannot run: {exc}") from None

    async def classify(request):
        form = await _form(request, config)
        image = _image_bytes(form.getlist("image"), 1)[0]
        labels = _labels(form.getlist("labels"), config)
        templates = _templates(form.get("templates"))
        top_k = _int_field(form.get("top_k"), "top_k", 5, 1, 10_000)

        def fn(model):
            return model.classify(_decode(image, config), labels, top_k=top_k, templates=templates).top

        ranked = await run_model("/v1/classify", fn)
        return _json({"labels": [{"label": name, "score": score} for name, score in ranked]})

    async def embed_image(request):
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            images = _image_bytes((await _form(request, config)).getlist("image"), MAX_IMAGES)
        else:
            body = await request.body()
            if not body:
                raise ApiError(400, "no_body", "send the image as the body, or as multipart field 'image'")
            images = [body]

        def fn(model):
            return model.encode_image([_decode(data, config) for data in images])

        vectors = await run_model("/v1/embed/image", fn)
        return _json({"embeddings": vectors.tolist(), "dim": int(vectors.shape[1])})

    async def embed_text(request):
        texts = _texts(await _json_body(request), config)
        vectors = await run_model("/v1/embed/text", lambda model: model.encode_text(texts))
        return _json({"embeddings": vectors.tolist(), "dim": int(vectors.shape[1])})

    async def healthz(request):
        return _json({"status": "ok", "model_loaded": holder.loaded, "bundle": config.bundle})

    async def metrics_page(request):
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def index(request):
        return HTMLResponse(page)

    async def api_error(request, exc: ApiError):
        request.scope[REASON_KEY] = exc.reason
        return _json({"error": exc.message, "reason": exc.reason}, exc.status)

    async def http_error(request, exc: HTTPException):
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        request.scope[REASON_KEY] = reason
        return _json({"error": str(exc.detail), "reason": reason}, exc.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if config.preload:
            await anyio.to_thread.run_sync(holder.preload)  # a bundle that cannot load stops the start
        async with anyio.create_task_group() as tasks:
            if config.idle_unload:
                tasks.start_soon(_unload_when_idle, holder, config.idle_unload)
            yield
            tasks.cancel_scope.cancel()

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
            Route("/v1/classify", classify, methods=["POST"]),
            Route("/v1/embed/image", embed_image, methods=["POST"]),
            Route("/v1/embed/text", embed_text, methods=["POST"]),
        ],
        middleware=[Middleware(Guard, metrics=metrics, limit=config.max_body_bytes)],
        exception_handlers={ApiError: api_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.holder, app.state.metrics, app.state.config = holder, metrics, config
    return app


async def _unload_when_idle(holder: ModelHolder, idle: float) -> None:
    import anyio

    while True:
        await anyio.sleep(min(1.0, idle / 4))
        holder.unload_if_idle()


def _json(data, status: int = 200):
    from starlette.responses import Response

    try:
        body = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or inf: a broken tower, said so rather than sent as invalid JSON
        return Response(json.dumps({"error": "the model returned NaN or inf", "reason": "non_finite"}), 500,
                        media_type="application/json")
    return Response(body, status, media_type="application/json")


async def _form(request, config: ServeConfig):
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(415 if content_type else 400, "not_multipart",
                       "send multipart/form-data with an 'image' file field (e.g. curl -F image=@photo.jpg)")
    return await request.form(max_files=MAX_IMAGES, max_fields=64, max_part_size=config.max_body_bytes)


async def _json_body(request):
    body = await request.body()
    if not body:
        raise ApiError(400, "no_body", 'send a JSON body, e.g. {"texts": ["a photo of a cat"]}')
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None


def _image_bytes(fields, most: int) -> list[bytes]:
    files = [f for f in fields if hasattr(f, "file")]
    if not files:
        raise ApiError(400, "no_image", "the multipart body has no 'image' file field")
    if len(files) > most:
        raise ApiError(413, "too_many_images", f"{len(files)} images given; at most {most} a request")
    out = []
    for upload in files:
        upload.file.seek(0)
        data = upload.file.read()
        if not data:
            raise ApiError(400, "not_image", f"the image {upload.filename!r} is empty")
        out.append(data)
    return out


def _decode(data: bytes, config: ServeConfig):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > config.max_image_pixels:  # the header is read, the pixels are not
            raise ApiError(413, "image_too_large",
                           f"the image is {img.width} x {img.height}; at most {config.max_image_pixels} pixels")
        img.load()
        return img
    except ApiError:
        raise
    except UnidentifiedImageError:
        raise ApiError(400, "not_image", "the file is not an image this service can decode") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(400, "not_image", f"the image cannot be decoded: {exc}") from None


def _labels(fields, config: ServeConfig) -> list[str] | None:
    """Labels as one comma-separated field, a JSON array field, or repeated fields; none: the compiled set."""
    labels: list[str] = []
    for value in fields:
        if not isinstance(value, str):
            raise ApiError(400, "bad_labels", "labels are text fields, not files")
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ApiError(400, "bad_labels", f"labels look like JSON but are not: {exc}") from None
            if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
                raise ApiError(400, "bad_labels", "a JSON labels field is a list of strings")
            labels += [x.strip() for x in parsed if x.strip()]
        else:
            labels += [x.strip() for x in text.split(",") if x.strip()]
        if len(labels) > config.max_labels:
            raise ApiError(422, "too_many_labels", f"more than {config.max_labels} labels; send fewer")
    too_long = [x for x in labels if len(x) > config.max_text_chars]
    if too_long:
        raise ApiError(422, "label_too_long", f"a label is over {config.max_text_chars} characters")
    if fields and not labels:
        raise ApiError(400, "bad_labels", "the labels field is empty")
    return labels or None


def _templates(value) -> list[str] | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(400, "bad_templates", "templates is a text field")
    return [t.strip() for t in value.split(",") if t.strip()] or None


def _int_field(value, name: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"bad_{name}", f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ApiError(400, f"bad_{name}", f"{name} must be in [{low}, {high}], got {number}")
    return number


def _texts(data, config: ServeConfig) -> list[str]:
    if isinstance(data, dict) and isinstance(data.get("text"), str) and "texts" not in data:
        data = {"texts": [data["text"]]}
    texts = data.get("texts") if isinstance(data, dict) else None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "bad_texts", 'send {"texts": ["a photo of a cat", ...]} (a non-empty list of strings)')
    if len(texts) > config.max_texts:
        raise ApiError(422, "too_many_texts", f"{len(texts)} texts; at most {config.max_texts} a request")
    if any(len(t) > config.max_text_chars for t in texts):
        raise ApiError(422, "text_too_long", f"a text is over {config.max_text_chars} characters")
    return texts


__all__ = ["ApiError", "create_app"]
