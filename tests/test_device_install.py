"""A device install (``pip install "vledge[onnx]"``: no torch, no test stack), simulated in a child process
whose imports of every other optional package fail: every command's ``--help`` works, and a realistic
call of every command either works or ends in one line naming the extra to install, exit code 2,
never a traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bundles import build_bundle

# What "vledge[onnx]" does not install (the compress, openvino, bench, sign, video, serve and test extras).
NOT_ON_A_DEVICE = ("torch", "torchvision", "transformers", "safetensors", "optimum", "onnx", "onnxscript", "nncf",
                   "peft", "accelerate", "torch_pruning", "tqdm", "openvino", "matplotlib", "psutil",
                   "cryptography", "av", "starlette", "uvicorn", "multipart", "python_multipart",
                   "prometheus_client", "sklearn", "selenium", "hypothesis", "pytest")

DRIVER = """
import contextlib, importlib.abc, io, json, logging, sys, traceback

BLOCKED = set({blocked!r})

class DeviceInstall(importlib.abc.MetaPathFinder):
    # finds what the usual finders find, except the blocked packages: as if they were not installed

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                return spec
        return None

assert not BLOCKED & {{m.split(".")[0] for m in sys.modules}}
sys.meta_path[:] = [DeviceInstall(list(sys.meta_path))]
from vledge.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    logging.getLogger().handlers.clear()
    code, crashed = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            crashed = traceback.format_exc()
    results.append({{"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue(), "crashed": crashed,
                    "torch": "torch" in sys.modules}})
print(json.dumps(results))
"""

COMMANDS = ("train", "eval", "compress", "check", "run", "bench", "targets", "students", "watch", "annotate", "serve",
            "labels", "keygen", "sign", "verify")
TORCH_HINT = 'pip install "vledge[compress]"'


def on_a_device(argvs, blocked=NOT_ON_A_DEVICE):
    done = subprocess.run([sys.executable, "-c", DRIVER.format(blocked=blocked), json.dumps(argvs)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def device_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("device")
    bundle = build_bundle(root / "bundle")
    photos = root / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photos / "a.png")
    (root / "labels.txt").write_text("a bag\na shoe\n")
    (root / "teacher").mkdir()
    return {"bundle": str(bundle), "photo": str(photos / "a.png"), "photos": str(photos), "root": str(root),
            "labels": str(root / "labels.txt"), "teacher": str(root / "teacher")}


def test_every_help_works_and_shows_an_example():
    results = on_a_device([["--help"]] + [[name, "--help"] for name in COMMANDS])
    assert len(results) == len(COMMANDS) + 1
    for result in results:
        assert (result["code"], result["crashed"]) == (0, None), result
        assert "examples:" in result["out"] or result["argv"] == ["--help"], result["argv"]
        assert not result["torch"]


def calls(f):
    b, r = f["bundle"], f["root"]
    needs_torch = [
        ["train", "--data", "digits", "--out", f"{r}/teacher-out"],
        ["compress", "--teacher", f["teacher"], "--target", "cpu", "--data", "digits", "--out", f"{r}/out"],
        ["check", b, "--teacher", f["teacher"], "--data", "digits"],
        ["eval", f["teacher"], "--data", "digits"],
        ["bench", b, "--teacher", f["teacher"], "--rows", "none", "--data", "digits", "--out", f"{r}/bench"],
    ]
    works = [
        ["targets"],
        ["students", "--json"],
        ["run", b, f["photo"], "--labels", "a bag,a shoe"],
        ["run", b, f["photo"], "--labels", f"@{f['labels']}", "--json"],
        ["annotate", b, f["photos"], "--out", f"{r}/labels.csv"],
        ["labels", b],
        ["verify", b],
        ["-q", "run", b, f["photo"], "--device", "cpu"],
    ]
    other_extra = {  # the extra each one names
        "video": ["watch", b, f"{r}/clip.mp4", "--labels", "a person"],
        "serve": ["serve", b, "--port", "8799"],
        "sign": ["keygen", "--out", f"{r}/keys"],
        "digits": ["eval", b, "--data", "digits"],
    }
    return needs_torch, works, other_extra


def test_every_command_works_or_names_what_to_install(device_files):
    needs_torch, works, other_extra = calls(device_files)
    results = on_a_device(needs_torch + works + list(other_extra.values()))
    assert len(results) == len(needs_torch) + len(works) + len(other_extra)
    for result in results:
        assert result["crashed"] is None, result
        assert "Traceback" not in result["err"], result
    torch_results, rest = results[:len(needs_torch)], results[len(needs_torch):]
    for result in torch_results:
        command = next(a for a in result["argv"] if not a.startswith("-"))
        assert result["code"] == 2, result
        lines = result["err"].strip().splitlines()
        assert lines[-1].startswith(f"vledge {command}: error: ") and TORCH_HINT in lines[-1], result
    for result in rest[:len(works)]:
        assert result["code"] == 0, result
    for (extra, argv), result in zip(other_extra.items(), rest[len(works):]):
        assert result["code"] == 2, result
        assert f'pip install "vledge[{extra}]"' in result["err"], result
    [run_json] = [json.loads(r["out"]) for r in rest if r["argv"][0] == "run" and "--json" in r["argv"]]
    [students] = [json.loads(r["out"]) for r in rest if r["argv"][0] == "students"]
    assert students[0]["name"] == "teacher" and len(students) > 1
    assert [r["image"] for r in run_json] == [device_files["photo"]]
    assert {t["label"] for t in run_json[0]["top"]} == {"a bag", "a shoe"}


def test_eval_of_a_bundle_on_digits_needs_only_the_digits_extra(device_files):
    blocked = tuple(m for m in NOT_ON_A_DEVICE if m != "sklearn")
    [result] = on_a_device([["eval", device_files["bundle"], "--data", "digits", "--max-samples", "32"]], blocked)
    assert (result["code"], result["crashed"]) == (0, None), result
    assert "top-1" in result["out"] or "top1" in result["out"], result["out"]
    assert not result["torch"]


def test_strict_makes_an_unreachable_device_an_error(device_files):
    b, photo = device_files["bundle"], device_files["photo"]
    strict, lenient = on_a_device([["run", b, photo, "--device", "cuda", "--strict"], ["run", b, photo, "--device", "cuda"]])
    assert strict["code"] == 2 and "vledge run: error: " in strict["err"] and strict["out"] == "", strict
    assert lenient["code"] == 0 and photo in lenient["out"], lenient


def test_the_real_entry_point_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-c", DRIVER.replace("results = []", "sys.exit(main(sys.argv[1:]))")
                           .format(blocked=NOT_ON_A_DEVICE), "train", "--data", "digits", "--out", str(tmp_path / "t")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"vledge train: error: torch is not installed and `vledge train` needs it here; install it with: {TORCH_HINT}"]
