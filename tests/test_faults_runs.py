"""Fault injection, runs: `vledge compress` interrupted, refused, out of space or short of calibration data.

Already covered elsewhere (not repeated here): an existing --out refused by the Python API and a leftover
work folder needing --resume (test_compress); a bundle write that fails or is interrupted leaving
nothing (test_bundle); the calibration shortfall in CalibrationData itself (test_quantize).

"The same result" below is bit-identity: distillation is seeded and runs on one thread, ONNX export and
quantization are deterministic, and a resumed run reads the student back from lossless safetensors; so
every bundle file (sha256 in the manifest) and every metric equals those of an uninterrupted run.
"""

import errno
import json
import logging
import shutil
import signal
import time

import pytest

from faults import assert_clean_failure, run_vledge, start_vledge
from tiny_clip import make_tiny_clip_folder
from vledge.bundle import MANIFEST
from vledge.compress import compress, resolve_config
from vledge.errors import ConfigError, OutputError

RECIPE = {  # ~1.5 s of distillation on one thread: a wide window to interrupt in
    "data": "digits",
    "distill": {"epochs": 4, "batch_size": 64, "max_samples": 768, "patience": None, "num_threads": 1},
    "quantize": {"calibration_samples": 32},
    "eval_samples": 64,
    "tolerance": 0.99,  # a random teacher: these tests are about files, not accuracy
}
# In-process runs: a shorter distillation, and more calibration samples than digits/train holds (1,438).
SHORT = {**RECIPE, "distill": {**RECIPE["distill"], "epochs": 1, "max_samples": 128},
         "quantize": {"calibration_samples": 2000}, "eval_samples": 32}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_tiny_clip_folder(tmp_path_factory.mktemp("runs") / "teacher")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "recipe.json"
    path.write_text(json.dumps(RECIPE))
    return path


@pytest.fixture
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def manifest(bundle) -> dict:
    return json.loads((bundle / MANIFEST).read_text())


def leftovers(out) -> list[str]:
    """What a run left at or beside --out: the bundle, its work folder (OUT.work), staging folders (.OUT.tmp-*)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith((out.name, f".{out.name}.")))


def wait_for_line(proc, fragment: str, timeout: float = 180) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if fragment in line:
            return lines
    proc.kill()
    raise AssertionError(f"never saw {fragment!r}:\n{''.join(lines)}")


def wait_for_path(proc, paths, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = [p for p in paths if p.exists()]
        if found:
            return found[0]
        time.sleep(0.005)
    proc.kill()
    raise AssertionError(f"none of {paths} appeared (exit {proc.returncode})")


def test_sigint_then_sigkill_mid_stage_leave_no_bundle_and_resume_gives_the_same_bundle(teacher, recipe, tmp_path):
    args = ("compress", "--teacher", teacher, "--target", "cpu", "--config", recipe)
    baseline_out, out = tmp_path / "baseline", tmp_path / "interrupted" / "bundle"
    work = out.parent / "bundle.work"
    baseline = start_vledge(*args, "--out", baseline_out)  # uninterrupted, alongside

    # 1. SIGINT once distillation has begun: the student is built, its training not finished.
    first = start_vledge(*args, "--out", out)
    seen = wait_for_line(first, "M parameters (teacher ")  # the student is built
    first.send_signal(signal.SIGINT)
    _, rest = first.communicate(timeout=120)
    err = "".join(seen) + rest
    assert first.returncode == 130 and "vledge compress: interrupted" in err and "Traceback" not in err, err
    assert " distill: " not in err  # it stopped inside the stage (no stage line)
    assert leftovers(out) == ["bundle.work"]
    assert [p.name for p in work.iterdir()] == [".lock"]  # nothing finished, nothing half-kept: only the run's lock

    # 2. --resume, killed (SIGKILL: no cleanup at all) while exporting or quantizing.
    with open(tmp_path / "second.log", "w") as log:
        second = start_vledge(*args, "--out", out, "--resume", stderr=log)
        stage = wait_for_path(second, [work / "export.tmp", work / "quantize.tmp"])
        second.kill()
        second.wait(timeout=60)
    assert second.returncode == -signal.SIGKILL
    assert (work / "distill" / "done.json").is_file() and stage.exists()  # a stage cut in its middle
    assert leftovers(out) == ["bundle.work"]

    # 3. --resume again: completes, reusing the distilled student, with the uninterrupted run's bundle.
    third = run_vledge(*args, "--out", out, "--resume")
    assert third.returncode == 0, third.stderr
    assert "(resumed)" in next(line for line in third.stderr.splitlines() if " distill: " in line)
    assert leftovers(out) == ["bundle"]  # the work folder removed once the bundle is in place
    _, baseline_err = baseline.communicate(timeout=300)
    assert baseline.returncode == 0, baseline_err
    expected, got = manifest(baseline_out), manifest(out)
    assert got["files"] == expected["files"]  # every tower, the tokenizer: byte for byte
    assert got["metrics"] == expected["metrics"]


def test_cli_refuses_an_existing_out_and_an_unwritable_out_before_any_work(teacher, recipe, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    refused = run_vledge("compress", "--teacher", teacher, "--target", "cpu", "--config", recipe, "--out", existing)
    assert_clean_failure(refused, "compress", f"{existing} already exists; pass --overwrite to replace it")
    assert (existing / "keep.txt").read_text() == "mine"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    refused = run_vledge("compress", "--teacher", teacher, "--target", "cpu", "--config", recipe, "--out", blocker / "bundle")
    err = assert_clean_failure(refused, "compress", f"cannot write to {blocker}: it is a file, not a folder; "
                                                    "choose a writable --out")
    assert "load:" not in err  # refused before the teacher was even read


def test_unwritable_work_dir_and_report_are_refused_before_any_work(teacher, tmp_path, capsys):
    from vledge.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match=rf"cannot write to {blocker}/work \(Not a directory\); choose a writable --work-dir"):
        compress(teacher, out=tmp_path / "out", config=resolve_config("cpu", overrides=SHORT), work_dir=blocker / "work")
    assert main(["compress", "--teacher", str(teacher), "--target", "cpu", "--out", str(tmp_path / "out"),
                 "--json", str(blocker / "report.json")]) == 2
    err = capsys.readouterr().err
    assert f"vledge compress: error: cannot write to {blocker}: it is a file, not a folder; choose a writable --json" in err
    assert leftovers(tmp_path / "out") == []


def test_full_disk_while_saving_a_stage_is_a_named_error(teacher, tmp_path, monkeypatch, one_torch_thread):
    import safetensors.torch
    from safetensors import SafetensorError

    def disk_full(*args, **kwargs):  # what safetensors raises on ENOSPC (seen on a full tmpfs)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    out = tmp_path / "out"
    with pytest.raises(OutputError) as info:
        compress(teacher, out=out, config=resolve_config("cpu", overrides=SHORT))
    assert str(info.value) == (
        f"cannot write {out}.work/distill.tmp/model/model.safetensors (No space left on device); finished stages are "
        f"kept in {out}.work: free some space (or choose --out and --work-dir on another disk) and run again with --resume"
    )
    assert info.value.__cause__ is None and leftovers(out) == ["out.work"]


def test_full_disk_while_writing_the_bundle_keeps_the_work_and_resume_finishes(teacher, tmp_path, monkeypatch, caplog,
                                                                                one_torch_thread):
    out = tmp_path / "out"
    config = resolve_config("cpu", overrides=SHORT)
    copy = shutil.copyfile

    def copy_until_full(src, dst, *args, **kwargs):
        if f"/.{out.name}.tmp-" in str(dst):  # the final bundle's staging folder
            raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))
        return copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_until_full)
    with pytest.raises(OutputError, match=rf"cannot write {tmp_path}/\.out\.tmp-[\w-]+/image_encoder.onnx \(No space left "
                                          rf"on device\); finished stages are kept in {out}.work: .* --resume"):
        compress(teacher, out=out, config=config)
    assert leftovers(out) == ["out.work"]  # no bundle, no staging folder; the distilled student kept
    assert (tmp_path / "out.work" / "distill" / "done.json").is_file()

    monkeypatch.undo()  # space freed
    with caplog.at_level(logging.WARNING, logger="vledge.compress.quantize.calibration"):
        report = compress(teacher, out=out, config=config, resume=True)
    assert report.passed and [s.name for s in report.stages if s.reused] == ["distill"]
    assert leftovers(out) == ["out"] and manifest(out)["config"]["quantize"]["calibration_samples"] == 2000
    # fewer calibration samples than asked: a warning, and the run goes on
    assert "calibration asked for 2000 samples but digits/train gave only 1438; continuing with 1438" in caplog.text


def test_labels_to_compile_are_checked_before_any_work(teacher, tmp_path):
    config = resolve_config("cpu", overrides=SHORT)
    with pytest.raises(ConfigError, match=r"labels to compile name 'cat' more than once; list each label once"):
        compress(teacher, out=tmp_path / "out", config=config, labels=["cat", "dog", "cat"])
    with pytest.raises(ConfigError, match=r"labels to compile must be a non-empty list of non-empty strings"):
        compress(teacher, out=tmp_path / "out", config=config, labels=["cat", ""])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["eval", "{teacher}", "--data", "digits", "--batch-size", "0"], "batch_size and max_samples must be at least 1"),
    (["eval", "{teacher}", "--data", "digits", "--json", "{blocker}/m.json"], "choose a writable --json"),
    (["check", "{teacher}", "--teacher", "{teacher}", "--json", "{blocker}/m.json"], "choose a writable --json"),
    (["compress", "--teacher", "{teacher}", "--target", "cpu", "--out", "{tmp}/b", "--labels", "{tmp}/labels.json"],
     "labels file {tmp}/labels.json is not valid JSON"),
])
def test_cli_bad_arguments_are_clean_messages(teacher, tmp_path, capsys, argv, message):
    from vledge.cli import main

    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "labels.json").write_text("[cat, dog]")
    fill = {"teacher": teacher, "blocker": tmp_path / "a-file", "tmp": tmp_path}
    assert main([a.format(**fill) for a in argv]) == 2
    assert message.format(**fill) in capsys.readouterr().err
