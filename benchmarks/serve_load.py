"""`vledge serve` under load on loopback: CLIENTS concurrent clients x REQUESTS requests each.

Starts `vledge serve` in a process of its own on 127.0.0.1, waits for it, measures its RSS (psutil), then
every client (a thread with its own kept-alive connection) sends REQUESTS requests: four in five
``POST /v1/classify`` (a sample image and a label list, both cycling), one in five ``POST /v1/embed/text``.
Every answer is compared with what the library returns in this process for the same input (exact
equality of scores and of embeddings); any non-2xx status, exception or difference is an error.
Reports p50/p99/max latency, throughput, the server's RSS before and after, and the server's own request
count from /metrics. Knobs at the top. Run from the repository root:

    .venv/bin/python benchmarks/serve_load.py [BUNDLE]

Without BUNDLE it builds the tests' tiny bundle (needs the compress extra). Writes
benchmarks/results/serve_load.json. Sends traffic to 127.0.0.1 only.
"""

import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

import vledge
from vledge.serve.client import Client

CLIENTS = int(os.environ.get("CLIENTS", 8))
REQUESTS = int(os.environ.get("REQUESTS", 500))  # per client
SERVER_ARGS = ["--threads", "1", "--max-concurrency", "2", "--preload"]
LABEL_SETS = [["a t-shirt", "a trouser", "a pullover", "a shirt", "an ankle boot"],
              ["a shoe", "a bag", "a coat"],
              ["a dress", "a sandal", "a sneaker", "a bag", "a pullover", "a coat", "a shirt"]]
TEXTS = [["a photo of a trouser"], ["a bag", "an ankle boot", "a person at the door"]]
SAMPLES = sorted(Path("benchmarks/samples").glob("*.png"))
OUT = Path("benchmarks/results/serve_load.json")
HOST = "127.0.0.1"


def bundle_path() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    sys.path.insert(0, "tests")
    from bundles import build_bundle

    return str(build_bundle(Path(tempfile.mkdtemp(prefix="serve-load-")) / "bundle"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    client, deadline = Client(url, timeout=5), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()}")
        try:
            if client.health()["model_loaded"]:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def requests_plan(images: list[bytes]) -> list[tuple]:
    """(kind, payload, labels) for request number i, the same for every client (shifted by client)."""
    plan = []
    for i in range(len(images) * len(LABEL_SETS) * 5):
        if i % 5 == 4:
            plan.append(("text", tuple(TEXTS[i % len(TEXTS)]), None))
        else:
            plan.append(("classify", i % len(images), tuple(LABEL_SETS[i % len(LABEL_SETS)])))
    return plan


def main() -> dict:
    bundle = bundle_path()
    images = [p.read_bytes() for p in SAMPLES]
    model = vledge.load(bundle, threads=1)
    plan = requests_plan(images)
    expected = {}
    for kind, payload, labels in plan:
        if kind == "classify":
            expected[(payload, labels)] = model.classify(Image.open(io.BytesIO(images[payload])), list(labels), top_k=5).top
        else:
            expected[payload] = model.encode_text(list(payload))
    port = free_port()
    url = f"http://{HOST}:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "vledge", "-q", "serve", bundle, "--host", HOST, "--port",
                             str(port), *SERVER_ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(url, proc)
        server = psutil.Process(proc.pid)
        rss_before = server.memory_info().rss
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client_loop(k: int) -> None:
            client, mine, bad = Client(url, timeout=60), [], []
            for i in range(REQUESTS):
                kind, payload, labels = plan[(i + k * 7) % len(plan)]
                start = time.perf_counter()
                try:
                    if kind == "classify":
                        got = client.classify(images[payload], list(labels), top_k=5)
                        ok = got == expected[(payload, labels)]
                    else:
                        ok = np.array_equal(client.embed_text(list(payload)), expected[payload])
                except Exception as exc:  # counted as an error, the run goes on
                    ok, got = False, repr(exc)
                mine.append(time.perf_counter() - start)
                if not ok:
                    bad.append(f"client {k} request {i} ({kind}): {got!r}"[:300])
            client.close()
            with lock:
                latencies.extend(mine)
                errors.extend(bad)

        start = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        rss_after = server.memory_info().rss
        metrics = Client(url).request("GET", "/metrics").body.decode()
        served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                     if line.startswith("vledge_requests_total{") and '/v1/' in line)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    lat = sorted(latencies)
    result = {
        "clients": CLIENTS, "requests_per_client": REQUESTS, "requests": len(lat), "errors": len(errors),
        "first_errors": errors[:5], "server_counted_v1_requests": served,
        "p50_ms": round(statistics.median(lat) * 1e3, 2), "p99_ms": round(lat[int(0.99 * (len(lat) - 1))] * 1e3, 2),
        "max_ms": round(lat[-1] * 1e3, 2), "throughput_rps": round(len(lat) / wall, 1), "wall_s": round(wall, 2),
        "server_rss_mb_before": round(rss_before / 2**20, 1), "server_rss_mb_after": round(rss_after / 2**20, 1),
        "server_args": SERVER_ARGS, "bundle": bundle if len(sys.argv) > 1 else "the tests' tiny bundle",
        "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
