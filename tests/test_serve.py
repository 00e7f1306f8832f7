"""`vledge serve` on 127.0.0.1: results equal to the library's, bad requests answered 4xx while the service
stays up, one model shared, load on first use or at start, unload when idle, metrics, settings."""

import http.client
import io
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

from PIL import Image  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

import vledge  # noqa: E402
from bundles import build_bundle, sample_images  # noqa: E402
from vledge.errors import ConfigError, ServiceError, VledgeError  # noqa: E402
from vledge.serve import ServeConfig  # noqa: E402
from vledge.serve.client import Client, encode_multipart  # noqa: E402
from vledge.serve.server import BackgroundServer  # noqa: E402

LABELS = ["a t-shirt", "a trouser", "a bag", "a sneaker"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("serve") / "bundle")


@pytest.fixture(scope="module")
def model(bundle):
    return vledge.load(bundle)


@pytest.fixture(scope="module")
def server(bundle):
    with BackgroundServer(ServeConfig(bundle=str(bundle), host="127.0.0.1")) as running:
        yield running


@pytest.fixture
def client(server):
    c = Client(server.url)
    yield c
    c.close()


def png(pixels) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def metric(client, name, **labels) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.request("GET", "/metrics").body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_results_are_the_librarys_exactly(client, model):
    images = [png(x) for x in sample_images(3)]
    for data in images:
        assert client.classify(data, LABELS, top_k=3) == model.classify(Image.open(io.BytesIO(data)), LABELS, top_k=3).top
    assert client.classify(images[0], top_k=2) == model.classify(Image.open(io.BytesIO(images[0])), top_k=2).top
    assert np.array_equal(client.embed_image(images), model.encode_image([Image.open(io.BytesIO(d)) for d in images]))
    raw = client.request("POST", "/v1/embed/image", images[1], {"Content-Type": "image/png"}).json()
    assert np.array_equal(np.asarray(raw["embeddings"], np.float32), model.encode_image(Image.open(io.BytesIO(images[1]))))
    assert np.array_equal(client.embed_text(["a bag", "a shoe"]), model.encode_text(["a bag", "a shoe"]))
    assert client.health()["model_loaded"] is True


def test_bad_requests_are_4xx_and_the_service_stays_up(client, server):
    image = png(sample_images(1)[0])
    multipart = lambda fields, files: encode_multipart(fields, files)  # noqa: E731
    cases = []
    cases.append(("no body", client.request("POST", "/v1/classify", b""), 400, "not_multipart"))
    body, ctype = multipart({"labels": "a,b"}, [])
    cases.append(("no image field", client.request("POST", "/v1/classify", body, {"Content-Type": ctype}), 400, "no_image"))
    body, ctype = multipart({"labels": "a,b"}, [("image", "notes.txt", b"this is a text file, not a picture")])
    cases.append(("not an image", client.request("POST", "/v1/classify", body, {"Content-Type": ctype}), 400, "not_image"))
    body, ctype = multipart({"labels": ",".join(f"label {i}" for i in range(10_000))}, [("image", "x.png", image)])
    cases.append(("10,000 labels", client.request("POST", "/v1/classify", body, {"Content-Type": ctype}), 422,
                  "too_many_labels"))
    body, ctype = multipart({"labels": "a,b", "top_k": "many"}, [("image", "x.png", image)])
    cases.append(("bad top_k", client.request("POST", "/v1/classify", body, {"Content-Type": ctype}), 400, "bad_top_k"))
    body, ctype = multipart({"labels": "a,b", "templates": "no placeholder"}, [("image", "x.png", image)])
    cases.append(("bad template", client.request("POST", "/v1/classify", body, {"Content-Type": ctype}), 400, "bad_request"))
    big = b"\0" * (50 * 1024 * 1024)
    cases.append(("50 MB body", client.request("POST", "/v1/embed/image", big, {"Content-Type": "image/png"}), 413,
                  "too_large"))
    cases.append(("malformed JSON", client.request("POST", "/v1/embed/text", b'{"texts": ["a",', 
                                                   {"Content-Type": "application/json"}), 400, "bad_json"))
    cases.append(("JSON of the wrong shape", client.request("POST", "/v1/embed/text", b'{"texts": "a"}'), 400, "bad_texts"))
    cases.append(("no JSON body", client.request("POST", "/v1/embed/text", b""), 400, "no_body"))
    cases.append(("raw non-image", client.request("POST", "/v1/embed/image", b"GIF89a not really"), 400, "not_image"))
    cases.append(("wrong content type", client.request("POST", "/v1/classify", b"x", {"Content-Type": "text/plain"}),
                  415, "not_multipart"))
    cases.append(("broken multipart", client.request("POST", "/v1/classify", b"--x\r\ngarbage",
                                                     {"Content-Type": "multipart/form-data; boundary=x"}), 400, None))
    cases.append(("unknown path", client.request("GET", "/v1/nothing"), 404, "not_found"))
    cases.append(("wrong method", client.request("GET", "/v1/classify"), 405, "method_not_allowed"))
    for name, reply, status, reason in cases:
        assert reply.status == status, (name, reply.status, reply.body[:200])
        assert reply.content_type.startswith("application/json"), name
        if reason:
            assert reply.json()["reason"] == reason, name
    assert client.health()["status"] == "ok"
    assert client.classify(image, ["a", "b"], top_k=1)[0][0] in ("a", "b")
    assert metric(client, "vledge_request_errors_total", endpoint="/v1/classify", status="422",
                  reason="too_many_labels") >= 1
    assert metric(client, "vledge_request_errors_total", endpoint="/v1/embed/image", status="413", reason="too_large") >= 1


def test_a_chunked_body_over_the_limit_is_413_too(server):
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    chunks = (b"\0" * (1 << 20) for _ in range(30))  # 30 MB with no Content-Length
    conn.request("POST", "/v1/embed/image", body=chunks, headers={"Content-Type": "image/png"}, encode_chunked=True)
    reply = conn.getresponse()
    assert reply.status == 413 and json.loads(reply.read())["reason"] == "too_large"
    conn.close()


def test_concurrent_requests_share_one_model(server, model):
    images = [png(x) for x in sample_images(4, seed=3)]
    expected = [model.classify(Image.open(io.BytesIO(d)), LABELS, top_k=4).top for d in images]
    failures = []

    def worker(k):
        c = Client(server.url)
        try:
            for i in range(15):
                got = c.classify(images[(i + k) % 4], LABELS, top_k=4)
                if got != expected[(i + k) % 4]:
                    failures.append((k, i))
        except Exception as exc:  # reported below
            failures.append(repr(exc))
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    assert metric(Client(server.url), "vledge_model_loads_total") == 1


def test_metrics_say_placement_and_tower_state(client):
    client.embed_text("a bag")
    assert metric(client, "vledge_model_loaded") == 1
    assert metric(client, "vledge_tower_loaded", tower="image") == 1
    assert metric(client, "vledge_tower_placement", tower="text", backend="onnxruntime", device="cpu") == 1
    assert metric(client, "vledge_request_seconds_count", endpoint="/v1/embed/text") >= 1
    assert metric(client, "vledge_requests_total", endpoint="/v1/embed/text", status="200") >= 1


def test_metrics_say_each_towers_own_placement(tmp_path):
    pytest.importorskip("openvino")
    bundle = build_bundle(tmp_path / "b", target="intel-cpu")  # ONNX towers: both backends open them
    with BackgroundServer(ServeConfig(bundle=str(bundle), device="openvino:CPU", text_device="onnxruntime:cpu",
                                      preload=True)) as running:
        c = Client(running.url)
        assert metric(c, "vledge_tower_placement", tower="image", backend="openvino", device="CPU") == 1
        assert metric(c, "vledge_tower_placement", tower="text", backend="onnxruntime", device="cpu") == 1
        c.close()


def test_loaded_on_first_use_and_unloaded_when_idle(bundle):
    with BackgroundServer(ServeConfig(bundle=str(bundle), idle_unload=0.3)) as running:
        c = Client(running.url)
        assert c.health()["model_loaded"] is False
        c.embed_text("a bag")
        assert c.health()["model_loaded"] is True
        deadline = time.monotonic() + 10
        while c.health()["model_loaded"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(c, "vledge_model_loaded") == 0 and metric(c, "vledge_model_unloads_total") == 1
        assert metric(c, "vledge_tower_placement", tower="image", backend="onnxruntime", device="cpu") == 0
        c.embed_text("a bag")  # loads again
        assert metric(c, "vledge_model_loads_total") == 2
        c.close()


def test_preload_loads_at_start_and_a_bundle_that_cannot_load_is_named(bundle, tmp_path):
    with BackgroundServer(ServeConfig(bundle=str(bundle), preload=True)) as running:
        assert Client(running.url).health()["model_loaded"] is True
    with pytest.raises(VledgeError, match="bundle folder not found"):
        with BackgroundServer(ServeConfig(bundle=str(tmp_path / "absent"), preload=True)):
            pass
    with BackgroundServer(ServeConfig(bundle=str(tmp_path / "absent"))) as running:  # on first use: a 503
        c = Client(running.url)
        with pytest.raises(ServiceError, match="bundle folder not found") as caught:
            c.embed_text("a bag")
        assert caught.value.status == 503 and caught.value.reason == "model_unavailable"
        assert c.health()["status"] == "ok"


def test_a_tower_returning_nan_is_a_500_not_invalid_json(bundle):
    class NaNModel:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def encode_text(self, texts):
            return np.full((len(texts), 16), np.nan, np.float32)

    loader = lambda path, **kw: NaNModel(vledge.load(path, **kw))  # noqa: E731
    with BackgroundServer(ServeConfig(bundle=str(bundle)), loader=loader) as running:
        reply = Client(running.url).request("POST", "/v1/embed/text", b'{"texts": ["x"]}')
        assert reply.status == 500 and reply.json()["reason"] == "non_finite"


def test_the_page_is_served(client):
    reply = client.request("GET", "/")
    assert reply.status == 200 and reply.content_type.startswith("text/html") and b'id="labels"' in reply.body


def test_settings_flags_win_over_the_environment_over_defaults():
    env = {"VLEDGE_BUNDLE": "/b", "VLEDGE_PORT": "9000", "VLEDGE_PRELOAD": "yes", "VLEDGE_MAX_LABELS": "50"}
    config = ServeConfig.resolve({"port": 9100, "max_labels": None}, env)
    assert (config.bundle, config.port, config.preload, config.max_labels, config.host) == ("/b", 9100, True, 50,
                                                                                            "127.0.0.1")
    with pytest.raises(ConfigError, match="VLEDGE_IDLE_UNLOAD='soon': expected a number"):
        ServeConfig.resolve({}, {"VLEDGE_BUNDLE": "/b", "VLEDGE_IDLE_UNLOAD": "soon"})
    with pytest.raises(ConfigError, match="no bundle to serve"):
        ServeConfig.resolve({}, {})
    with pytest.raises(ConfigError, match="max_labels must be positive"):
        ServeConfig(bundle="/b", max_labels=0)


def test_vledge_serve_from_the_shell_takes_flags_and_environment(bundle, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLEDGE_MAX_LABELS": "3", "VLEDGE_PORT": "1"}  # the --port flag wins over VLEDGE_PORT
    proc = subprocess.Popen([sys.executable, "-m", "vledge", "serve", str(bundle), "--port", str(port), "--preload"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        c = Client(f"http://127.0.0.1:{port}", timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert c.health()["model_loaded"] is True  # --preload: loaded before the first request
                break
            except (ConnectionError, OSError):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.1)
        with pytest.raises(ServiceError, match="more than 3 labels"):
            c.classify(png(sample_images(1)[0]), ["a", "b", "c", "d"])
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the process ends as a signalled one would
    assert proc.returncode in (0, -signal.SIGTERM) and "shutdown complete" in err, err
    done = subprocess.run([sys.executable, "-m", "vledge", "serve", str(tmp_path / "absent"), "--preload"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bundle folder not found" in done.stderr and "Traceback" not in done.stderr
