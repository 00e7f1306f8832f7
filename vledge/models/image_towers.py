"""Image towers: a registry of backbones, each followed by a linear projection into the shared space.

A tower maps ``pixel_values`` (B, 3, H, W) to unnormalised embeddings (B, embed_dim).
Its ``config`` dict is all that is needed to rebuild it (weights come from safetensors).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from vledge.models.prune_shapes import apply_pruned_shapes_
from vledge.registry import Registry

# arch name -> factory(config, embed_dim) returning a tower module with a ``config`` attribute
IMAGE_TOWERS: Registry[Callable[[dict, int], nn.Module]] = Registry("image tower")


def build_image_tower(config: dict, embed_dim: int) -> nn.Module:
    """Build from ``config``; a pruned tower replays its recorded shapes so its weights fit."""
    return apply_pruned_shapes_(IMAGE_TOWERS.get(config["arch"])(config, embed_dim), config)


class BackboneTower(nn.Module):
    """A torchvision backbone with its classifier removed, then a linear projection."""

    def __init__(self, config: dict, embed_dim: int, backbone: nn.Module, width: int):
        super().__init__()
        self.config = dict(config)
        self.backbone = backbone
        self.proj = nn.Linear(width, embed_dim, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.proj(self.backbone(pixel_values))


def _register_backbone(name: str, make: Callable[[dict], tuple[nn.Module, int]]) -> None:
    IMAGE_TOWERS.register(name, lambda cfg, dim: BackboneTower(cfg, dim, *make(cfg)))


def _resnet(factory_name: str):
    def build(cfg: dict) -> tuple[nn.Module, int]:
        import torchvision

        model = getattr(torchvision.models, factory_name)(weights=None)
        if cfg.get("stem", "small") == "small":
            # Small images (28-64 px): a 7x7 kernel would cover a quarter of the image. A 3x3
            # stride-2 kernel sees fine detail; the max-pool keeps the compute of the ImageNet stem.
            model.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        width = model.fc.in_features
        model.fc = nn.Identity()
        return model, width

    return build


def _mobilenet(factory_name: str):
    def build(cfg: dict) -> tuple[nn.Module, int]:
        import torchvision

        kwargs = {"width_mult": float(cfg.get("width_mult", 1.0))}
        model = getattr(torchvision.models, factory_name)(weights=None, **kwargs)
        if cfg.get("stem", "small") == "small":
            model.features[0][0].stride = (1, 1)
        # torchvision's MobileNetV3 uses BatchNorm momentum 0.01, tuned for long ImageNet runs: after
        # a few hundred steps (distillation, short training) its running statistics are still at
        # their initial values and eval-mode outputs are garbage. 0.1 is the PyTorch default.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        width = model.classifier[0].in_features
        model.classifier = nn.Identity()
        return model, width

    return build


def _vit(cfg: dict) -> tuple[nn.Module, int]:
    from torchvision.models.vision_transformer import VisionTransformer

    hidden = int(cfg.get("hidden_dim", 192))
    model = VisionTransformer(
        image_size=int(cfg["image_size"]),
        patch_size=int(cfg.get("patch_size", 4)),
        num_layers=int(cfg.get("num_layers", 4)),
        num_heads=int(cfg.get("num_heads", 3)),
        hidden_dim=hidden,
        mlp_dim=int(cfg.get("mlp_dim", 4 * hidden)),
    )
    model.heads = nn.Identity()
    return model, hidden


for _name in ("resnet18", "resnet34", "resnet50"):
    _register_backbone(_name, _resnet(_name))
for _name in ("mobilenet_v3_small", "mobilenet_v3_large"):
    _register_backbone(_name, _mobilenet(_name))
_register_backbone("vit", _vit)
