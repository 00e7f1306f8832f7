"""The teacher itself as the student: no distillation, its own towers quantized for the target and gated
(test_gate checks it is offered, measured, when a distilled student fails); a LoRA teacher's size counted whole."""

from types import SimpleNamespace

import pytest

from tiny_clip import make_tiny_clip_folder
from vledge.bundle_files import read_manifest
from vledge.compress import compress, resolve_config
from vledge.compress.bundle.package import weights_on_disk
from vledge.compress.students import TEACHER, get_student
from vledge.errors import ConfigError

FAST = {"data": "digits", "eval_samples": 96, "quantize": {"calibration_samples": 32},
        "distill": {"epochs": 1, "batch_size": 64, "max_samples": 128, "patience": None}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    # 4 + 4 layers of width 256 (6.4M parameters): weights, not graph structure (about 120 KB a tower), make its bytes.
    return make_tiny_clip_folder(tmp_path_factory.mktemp("clip") / "teacher", width=256, layers=4)


def test_the_teacher_as_student_is_quantized_without_distillation_and_gated(teacher, tmp_path):
    # A random teacher's top-1 is chance: the gate is opened here, and fidelity is read off the cosines.
    config = resolve_config("cpu", overrides={**FAST, "student": TEACHER, "tolerance": 0.99})
    report = compress(teacher, out=tmp_path / "bundle", config=config)
    distill = next(s for s in report.stages if s.name == "distill")
    assert report.passed and "its own towers, no distillation" in distill.summary and distill.seconds < 1
    m = report.metrics
    assert m["student_params"] == m["teacher_params"] and m["param_ratio"] == 1.0
    assert m["size_ratio"] >= 3.5, m["size_ratio"]  # FP32 safetensors against INT8 towers; measured 3.9x
    assert min(m["cosine"].values()) >= 0.99, m["cosine"]  # bundle against the FP32 teacher, held-out data
    manifest = read_manifest(tmp_path / "bundle")
    assert manifest.provenance["student"] == TEACHER and manifest.towers["image"].precision == "int8"


def test_a_lora_teacher_counts_its_base_and_its_adapter(tmp_path):
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    for folder, size in ((base, 4000), (adapter, 300)):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * size)
    merged = SimpleNamespace(source={"path": str(base), "adapter": str(adapter)})
    assert weights_on_disk(adapter, merged) == 4300  # compress given the adapter folder alone
    assert weights_on_disk(base, merged) == 4300  # or the base with --adapter
    assert weights_on_disk(base, SimpleNamespace(source={"path": str(base)})) == 4000


def test_teacher_is_listed_and_is_not_an_architecture(capsys):
    from vledge.cli import main

    assert main(["students", "--no-cost"]) == 0
    assert capsys.readouterr().out.startswith("teacher\n  the teacher's own towers, no distillation")
    with pytest.raises(ConfigError, match="student 'teacher' is the teacher itself, not an architecture to build"):
        get_student(TEACHER)
