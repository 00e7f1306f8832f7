"""PyTorch backend: a full-precision checkpoint (teacher or student) behind the runtime API.

For accuracy checks against a bundle, not for devices. torch is imported inside functions only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from vledge.bundle import BundleManifest, TensorSpec, TowerSpec
from vledge.runtimes.base import Runtime, as_float32, backend


def checkpoint_manifest(model, path: str | Path = "") -> BundleManifest:
    """Describe an in-memory DualEncoder as a bundle manifest (dynamic shapes, fp32, target "torch")."""
    size = model.preprocess.image_size

    def tower(inputs: list[TensorSpec]) -> TowerSpec:
        out = [TensorSpec("embeds", "float32", ["batch", model.embed_dim])]
        return TowerSpec(file="", format="torch", precision="fp32", inputs=inputs, outputs=out)

    return BundleManifest(
        target="torch",
        precision="fp32",
        embed_dim=model.embed_dim,
        logit_scale=float(model.logit_scale.detach().exp()),
        towers={
            "image": tower([TensorSpec("pixel_values", "float32", ["batch", 3, size, size])]),
            "text": tower([
                TensorSpec("input_ids", "int64", ["batch", "sequence"]),
                TensorSpec("attention_mask", "int64", ["batch", "sequence"]),
            ]),
        },
        preprocess=model.preprocess,
        tokenizer=model.tokenizer.spec,
        config=dict(model.source.get("config") or {}),
        provenance={"checkpoint": str(path), "kind": model.source.get("kind")},
    )


@backend
class TorchRuntime(Runtime):
    """Options: ``threads`` (torch's intra-op threads, process-wide), ``model`` (an already loaded
    DualEncoder instead of reading ``bundle_dir``), ``adapter`` (a LoRA adapter folder to merge),
    ``allow_pickle`` (read pickle-only weights with ``torch.load(weights_only=True)``)."""

    name = "torch"
    addressable = ("cpu", "cuda")
    reads = frozenset({"torch"})
    extra = "compress"
    device_hints = {"cuda": "a CUDA build of torch and an NVIDIA GPU"}
    option_names = frozenset({"threads", "model", "adapter", "allow_pickle"})

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("torch") is not None

    @classmethod
    def devices(cls) -> list[str]:
        import torch

        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str, options: dict) -> "TorchRuntime":
        """Load a checkpoint folder (vledge, Hugging Face CLIP, or a LoRA adapter) with ``load_teacher``."""
        model = options.get("model")
        if model is None:
            from vledge.models import load_teacher

            model = load_teacher(path, adapter=options.get("adapter"), allow_pickle=bool(options.get("allow_pickle")))
        return cls(path, checkpoint_manifest(model, path), device, {**options, "model": model})

    def __init__(self, bundle_dir, manifest, device, options):
        super().__init__(bundle_dir, manifest, device, options)
        import torch

        if self.options.get("threads"):
            torch.set_num_threads(int(self.options["threads"]))
        self.model = self.options.pop("model").to(device).eval()
        self._torch_version = torch.__version__

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def labels(self) -> dict | None:
        """The checkpoint's label set: ``{"classes": [...], "templates": [...]}`` or None."""
        return self.model.labels

    def run(self, kind: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        self.check_kind(kind)
        names = [t.name for t in self.manifest.towers[kind].inputs]
        tensors = [torch.from_numpy(np.require(feeds[n], requirements=("C", "W"))).to(self.device) for n in names]
        tower = self.model.image_tower if kind == "image" else self.model.text_tower
        with torch.inference_mode():
            return as_float32(tower(*tensors).float().cpu().numpy())

    def info(self) -> dict:
        return {**super().info(), "torch": self._torch_version}
