"""The peer rows: what a user with a Hugging Face CLIP folder gets without vledge, measured beside the bundles.

- ONNX: Optimum's export (``optimum.exporters.onnx.main_export``, task ``zero-shot-image-classification``:
  one ``model.onnx`` holding both towers), then ONNX Runtime dynamic INT8 with ``ORTQuantizer`` and the
  ``AutoQuantizationConfig`` preset of this CPU (``avx512_vnni``, ``avx2`` or ``arm64``), as Optimum's
  documentation does it.
- OpenVINO: optimum-intel's export (``OVModelForZeroShotImageClassification.from_pretrained(export=True)``),
  then NNCF static INT8 with ``OVQuantizer`` and ``OVQuantizationConfig``, calibrated on training images
  and their captions.

A peer's size is the folder Optimum wrote. To time each tower alone, the joint graph is cut into its image
part (``pixel_values`` -> ``image_embeds``) and its text part (``input_ids``, ``attention_mask`` ->
``text_embeds``): the same nodes and weights, CLIP's ``get_image_features`` / ``get_text_features`` up to
normalisation. ``vledge.bench.peer_model`` runs them in the worker.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from vledge.bench.once import Once
from vledge.bench.rows import Variant, architecture

log = logging.getLogger(__name__)

PEER_ONNX_FP32 = "peer Optimum ONNX FP32 (ORT)"
PEER_ONNX_INT8 = "peer Optimum ORT dynamic INT8"
PEER_OV_FP32 = "peer optimum-intel OpenVINO FP32"
PEER_OV_INT8 = "peer optimum-intel NNCF INT8 (OpenVINO)"
PEER_KEYS = ("peer-onnx-fp32", "peer-onnx-int8", "peer-openvino-fp32", "peer-openvino-int8")
DESCRIPTION = "peer.json"  # what the worker's peer adapter reads, beside the cut tower files
OPTIMUM_DIR = "optimum"  # Optimum's own output: the peer's size
CALIBRATION_SAMPLES = 128  # NNCF's default subset size
# kind -> (input names, output name) of the joint CLIP graph Optimum exports
CUTS = {"image": (["pixel_values"], "image_embeds"), "text": (["input_ids", "attention_mask"], "text_embeds")}


def not_hf_clip(teacher: Path) -> str | None:
    """Why the peer rows do not apply to ``teacher`` (None when it is a Hugging Face CLIP folder)."""
    try:
        model_type = json.loads((teacher / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return f"the teacher {teacher} has no readable config.json; peers need a Hugging Face CLIP folder"
    if model_type != "clip":
        return (f"the teacher's model_type is {model_type!r}; the peer pipelines (Optimum, optimum-intel) "
                "take Hugging Face CLIP folders (model_type 'clip')")
    return None


def ort_preset():
    """The ``AutoQuantizationConfig`` preset of this CPU, dynamic (no calibration), and its name."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from vledge.cpu import host_cpu

    cpu = host_cpu()
    name = "arm64" if cpu.is_arm else "avx512_vnni" if "avx512_vnni" in cpu.flags else "avx2"
    return name, getattr(AutoQuantizationConfig, name)(is_static=False, per_channel=False)


class PeerBuilder:
    """Builds each peer into ``work/peers/KEY``: Optimum's output, the cut towers and their description."""

    def __init__(self, shop):
        self.shop = shop
        self.root = shop.work / "peers"
        self.onnx_fp32 = Once(self._onnx_fp32)
        self.openvino_fp32 = Once(self._openvino_fp32)

    def _folder(self, key: str) -> Path:
        folder = self.root / key
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def _describe(self, folder: Path, backend: str, precision: str, recipe: str) -> Path:
        teacher = self.shop.teacher()
        (folder / "tokenizer.json").write_text(teacher.tokenizer.backend.to_str())
        suffix = ".onnx" if backend == "onnxruntime" else ".xml"
        description = {
            "backend": backend, "precision": precision, "recipe": recipe,
            "towers": {kind: {"file": f"{kind}{suffix}", "inputs": inputs, "output": output}
                       for kind, (inputs, output) in CUTS.items()},
            "preprocess": teacher.preprocess.to_dict(),
            "tokenizer": {"file": "tokenizer.json", "spec": teacher.tokenizer.spec.to_dict()},
        }
        (folder / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        return folder

    def _onnx_fp32(self) -> Path:
        from optimum.exporters.onnx import main_export

        folder = self._folder(PEER_KEYS[0])
        main_export(str(self.shop.teacher_path), output=str(folder / OPTIMUM_DIR), task="zero-shot-image-classification")
        cut_onnx(folder / OPTIMUM_DIR / "model.onnx", folder)
        return self._describe(folder, "onnxruntime", "fp32", "optimum.exporters.onnx.main_export")

    def onnx_int8(self) -> Path:
        from optimum.onnxruntime import ORTQuantizer

        fp32 = self.onnx_fp32()
        folder = self._folder(PEER_KEYS[1])
        name, preset = ort_preset()
        quantizer = ORTQuantizer.from_pretrained(str(fp32 / OPTIMUM_DIR))
        quantizer.quantize(save_dir=str(folder / OPTIMUM_DIR), quantization_config=preset)
        cut_onnx(folder / OPTIMUM_DIR / "model_quantized.onnx", folder)
        return self._describe(folder, "onnxruntime", "int8", f"ORTQuantizer, AutoQuantizationConfig.{name}(is_static=False)")

    def _openvino_fp32(self) -> Path:
        from optimum.intel import OVModelForZeroShotImageClassification

        folder = self._folder(PEER_KEYS[2])
        model = OVModelForZeroShotImageClassification.from_pretrained(str(self.shop.teacher_path), export=True,
                                                                      compile=False)
        model.save_pretrained(str(folder / OPTIMUM_DIR))
        cut_openvino(folder / OPTIMUM_DIR / "openvino_model.xml", folder)
        return self._describe(folder, "openvino", "fp32", "OVModelForZeroShotImageClassification(export=True)")

    def openvino_int8(self) -> Path:
        import nncf
        from optimum.intel import OVConfig, OVModelForZeroShotImageClassification, OVQuantizationConfig, OVQuantizer

        fp32 = self.openvino_fp32()
        folder = self._folder(PEER_KEYS[3])
        model = OVModelForZeroShotImageClassification.from_pretrained(str(fp32 / OPTIMUM_DIR), compile=False)
        OVQuantizer.from_pretrained(model).quantize(
            calibration_dataset=nncf.Dataset(self._calibration()),
            ov_config=OVConfig(quantization_config=OVQuantizationConfig()), save_directory=str(folder / OPTIMUM_DIR))
        cut_openvino(folder / OPTIMUM_DIR / "openvino_model.xml", folder)
        return self._describe(folder, "openvino", "int8",
                              f"OVQuantizer, OVQuantizationConfig(), {CALIBRATION_SAMPLES} training images and captions")

    def _calibration(self) -> list[dict]:
        """One joint input per training image: its pixels and its caption (varied prompts, never one repeated)."""
        teacher, data = self.shop.teacher(), self.shop.train_data()
        batch = data.batch(range(min(CALIBRATION_SAMPLES, len(data))), teacher.preprocess)
        items = []
        for i, caption in enumerate(batch.captions):
            ids, mask = teacher.tokenizer([caption])
            items.append({"pixel_values": batch.pixels[i : i + 1], "input_ids": ids, "attention_mask": mask})
        return items


def cut_onnx(joint: Path, folder: Path) -> None:
    """The image and the text part of Optimum's joint CLIP graph, each as its own ONNX file."""
    import onnx.utils

    for kind, (inputs, output) in CUTS.items():
        onnx.utils.extract_model(str(joint), str(folder / f"{kind}.onnx"), inputs, [output])


def cut_openvino(xml: Path, folder: Path) -> None:
    """The image and the text part of optimum-intel's joint CLIP model, each as its own IR (weights as they are)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    for kind, (inputs, output) in CUTS.items():
        tower = ov.Model([model.output(output)], [model.input(name).get_node() for name in inputs], f"{kind}_tower")
        ov.save_model(tower, str(folder / f"{kind}.xml"), compress_to_fp16=False)


def peer_rows(shop, teacher_onnx) -> tuple[list[Variant], str | None]:
    """The four peer variants of ``shop``'s teacher, or none and the reason they do not apply."""
    from vledge.compress import count_parameters

    reason = not_hf_clip(shop.teacher_path)
    if reason:
        return [], reason
    builder = PeerBuilder(shop)
    same = dict(role="peer", opener="peer", size_of=OPTIMUM_DIR, macs_from=teacher_onnx,
                params=lambda: count_parameters(shop.teacher()),
                model=lambda: f"{architecture(shop.teacher())} (the teacher, Optimum export)")
    return [
        Variant(PEER_ONNX_FP32, PEER_KEYS[0], precision="fp32", build=builder.onnx_fp32, **same),
        Variant(PEER_ONNX_INT8, PEER_KEYS[1], precision="int8", build=builder.onnx_int8, **same),
        Variant(PEER_OV_FP32, PEER_KEYS[2], precision="fp32", build=builder.openvino_fp32, **same),
        Variant(PEER_OV_INT8, PEER_KEYS[3], precision="int8", build=builder.openvino_int8, **same),
    ], None
