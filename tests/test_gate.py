"""The verify gate's decisions: recover by keeping the drifting tower in FP32, or fail with the report."""

import re
from types import SimpleNamespace

import pytest

from vledge.bundle import TowerSpec
from vledge.compress.verify import GateConfig, VerifyReport, gate
from vledge.targets import get_target
from vledge.evaluate import EvalReport


def _spec(precision):
    return TowerSpec(file=f"{precision}.onnx", format="onnx", precision=precision, inputs=[], outputs=[])


def _run(monkeypatch, tmp_path, *, student_top1, drop_when_text_int8):
    teacher = SimpleNamespace(preprocess=None, name="teacher")
    student = SimpleNamespace(preprocess=None, name="student")
    evals = {"teacher": EvalReport(n=10, top1=0.90, top5=1.0), "student": EvalReport(n=10, top1=student_top1, top5=1.0)}
    monkeypatch.setattr(gate, "evaluate", lambda embedder, data, max_samples=None: evals[embedder.model.name])
    monkeypatch.setattr(gate, "candidate_bundle", lambda folder, student, towers, target: dict(towers))

    def fake_verify(edge, reference, held_out, **kw):
        text_int8 = edge["text"][0].precision == "int8"
        drop = drop_when_text_int8 if text_int8 else 0.9 - student_top1
        return VerifyReport(teacher={"top1": 0.9}, bundle={"top1": 0.9 - drop}, student_fp32=None, metric="top1",
                            drop=drop, agreement=None, student_agreement=None,
                            cosine={"image": 0.999, "text": 0.95 if text_int8 else 1.0}, tolerance=kw["tolerance"])

    monkeypatch.setattr(gate, "verify_bundle", fake_verify)
    monkeypatch.setattr(gate, "fp32_tower", lambda exported, kind, folder: (_spec("fp32"), []))
    towers = {"image": (_spec("int8"), []), "text": (_spec("int8"), [])}
    work = SimpleNamespace(path=lambda stage: tmp_path / stage)
    return gate.verify_with_recovery(teacher, student, None, None, towers, work, get_target("cpu"), GateConfig(tolerance=0.02))


def test_the_tower_that_drifted_most_is_kept_in_fp32_and_recorded(monkeypatch, tmp_path):
    verified = _run(monkeypatch, tmp_path, student_top1=0.895, drop_when_text_int8=0.05)
    assert verified.report.passed
    assert [r["tower"] for r in verified.recovered] == ["text"]
    assert verified.recovered[0]["drop_before"] == 0.05 and verified.recovered[0]["cosine_before"] == 0.95
    assert verified.towers["text"][0].precision == "fp32" and verified.towers["image"][0].precision == "int8"
    assert gate.bundle_precision(verified.towers) == "fp32+int8"


def test_no_recovery_is_tried_when_the_fp32_student_itself_misses(monkeypatch, tmp_path, caplog):
    verified = _run(monkeypatch, tmp_path, student_top1=0.85, drop_when_text_int8=0.06)
    assert not verified.report.passed and verified.recovered == []
    assert "the FP32 student itself loses 5.00 points of top1" in caplog.text


def test_a_failed_gate_stops_compress_with_the_report_and_keeps_the_work(monkeypatch, tmp_path):
    from tiny_clip import make_tiny_clip_folder
    from vledge.compress import compress, resolve_config
    from vledge.errors import VerificationError

    real = gate.verify_with_recovery

    def failing(*args, **kwargs):
        verified = real(*args, **kwargs)
        verified.report.drop = 0.5
        return verified

    monkeypatch.setattr(gate, "verify_with_recovery", failing)
    config = resolve_config("cpu", overrides={"data": "digits", "eval_samples": 64, "quantize": {"calibration_samples": 16},
                                              "distill": {"epochs": 1, "max_samples": 128, "batch_size": 64}})
    teacher = make_tiny_clip_folder(tmp_path / "teacher")
    with pytest.raises(VerificationError, match=r"loses 50.00 points of top1 against the teacher \(tolerance 2.00\); work kept in") as caught:
        compress(teacher, out=tmp_path / "bundle", config=config)
    assert not (tmp_path / "bundle").exists()
    # The quantized teacher is measured and offered, with its figures beside the student's.
    assert re.search(r"The teacher itself quantized for cpu, measured on the same data: top1 [\d.]+ \([\d.]+% of the "
                     r"teacher's; the student's bundle [\d.]+\), [\d.]+ MB, image tower [\d.]+ ms at batch 1 "
                     r"\(the student's [\d.]+ ms\); to ship it: vledge compress --student teacher", str(caught.value))
    offer = caught.value.report.metrics["quantized_teacher"]
    assert offer["bundle_bytes"] > 0 and offer["image_b1_ms"] > 0 and 0 <= offer["value"] <= 1
    assert (tmp_path / "bundle.work" / "distill" / "done.json").is_file()
