"""A ResNet of BasicBlocks with configurable widths and depths: the small image tower for students.

Tower config: ``{"arch": "narrow_resnet", "widths": [16, 32, 64, 128], "blocks": [2, 2, 2, 2], "stem": "small"}``.
Parameter names follow torchvision's ``resnet18`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so a
student inherits from a resnet18/34 teacher by name, slicing channels and picking blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from vledge.errors import ConfigError
from vledge.models.image_towers import IMAGE_TOWERS, BackboneTower

ARCH = "narrow_resnet"


class NarrowResNet(nn.Module):
    """Stem, four stages of BasicBlocks (stride 1, 2, 2, 2), global average pool; output width ``widths[-1]``."""

    def __init__(self, widths: list[int], blocks: list[int], stem: str = "small"):
        super().__init__()
        from torchvision.models.resnet import BasicBlock, conv1x1

        if len(widths) != 4 or len(blocks) != 4 or min(widths) < 1 or min(blocks) < 1:
            raise ConfigError(f"{ARCH} needs four positive widths and four positive block counts, got {widths} and {blocks}")
        if stem == "small":
            # As the vledge resnet towers: 3x3 stride 2 for 28-64 px images.
            self.conv1 = nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False)
        elif stem == "standard":
            self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        else:
            raise ConfigError(f"{ARCH} stem must be 'small' or 'standard', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = widths[0]
        for stage, (width, depth) in enumerate(zip(widths, blocks), start=1):
            stride = 1 if stage == 1 else 2
            downsample = None
            if stride != 1 or inplanes != width:
                downsample = nn.Sequential(conv1x1(inplanes, width, stride), nn.BatchNorm2d(width))
            layers = [BasicBlock(inplanes, width, stride, downsample)]
            layers += [BasicBlock(width, width) for _ in range(depth - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
            inplanes = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.width = inplanes
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _build(cfg: dict, embed_dim: int) -> nn.Module:
    widths = [int(w) for w in cfg.get("widths", (16, 32, 64, 128))]
    blocks = [int(b) for b in cfg.get("blocks", (2, 2, 2, 2))]
    backbone = NarrowResNet(widths, blocks, cfg.get("stem", "small"))
    return BackboneTower(cfg, embed_dim, backbone, backbone.width)


IMAGE_TOWERS.register(ARCH, _build)
