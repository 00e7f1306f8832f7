"""A device without torch: ``import vledge`` loads no framework, and loading a bundle never imports torch
nor ``vledge.compress`` (the same contracts, read from the source: ``tests/test_import_contracts.py``)."""

import json
import subprocess
import sys

import pytest

from bundles import build_bundle

FRAMEWORKS = ("torch", "onnxruntime", "openvino", "transformers", "torchvision")

SCRIPT = """
import json, sys
import numpy as np
FRAMEWORKS = {frameworks!r}
seen = {{}}
def loaded():
    compress = [m for m in sys.modules if m == "vledge.compress" or m.startswith("vledge.compress.")]
    return sorted(f for f in FRAMEWORKS if f in sys.modules) + sorted(compress)
import vledge
seen["import vledge"] = loaded()
import vledge.images, vledge.text, vledge.bundle, vledge.targets, vledge.runtimes
seen["import vledge.runtimes"] = loaded()
model = vledge.load({bundle!r})
image = np.zeros((28, 28), dtype=np.uint8)
result = model.classify(image, ["a bag", "a shoe"], top_k=1)
model.classify(image)
model.encode_text("a photo of a bag")
seen["load and classify"] = loaded()
seen["result"] = result.label
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("lean") / "bundle")


def run_fresh(script: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_and_classify_never_import_torch(bundle):
    seen = run_fresh(SCRIPT.format(frameworks=FRAMEWORKS, bundle=str(bundle)))
    assert seen["import vledge"] == []
    assert seen["import vledge.runtimes"] == []
    assert seen["load and classify"] == ["onnxruntime"]
    assert seen["result"] in ("a bag", "a shoe")


def test_the_device_pieces_import_their_heavy_packages_only_when_used():
    heavy = ("torch", "av", "starlette", "uvicorn", "prometheus_client", "python_multipart", "selenium")
    script = (
        "import json, sys\n"
        "import vledge, vledge.events, vledge.video, vledge.serve, vledge.annotate, vledge.relabel\n"
        "import vledge.cli.watch_cmd, vledge.cli.serve_cmd, vledge.cli.annotate_cmd, vledge.cli.labels_cmd\n"
        "from vledge.cli import _parser\n"
        "_parser()\n"
        f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))\n"
    )
    assert run_fresh(script) == []


def test_the_compress_face_and_its_bundle_room_import_without_torch():
    script = (
        "import json, sys\n"
        "import vledge.compress\n"
        "names = sorted(vledge.compress.__all__)\n"
        "from vledge.compress import write_bundle, make_probes, toolchain_versions, bundle_precision\n"
        "import vledge.compress.bundle\n"
        f"print(json.dumps([names, sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)]))\n"
    )
    names, loaded = run_fresh(script)
    assert loaded == []
    assert {"compress", "CompressConfig", "CompressReport", "resolve_config", "export_onnx", "export_openvino",
            "prune_", "verify_bundle", "verify_with_recovery", "write_bundle"} <= set(names)
