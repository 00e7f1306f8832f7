"""Conv channel pruning of CNN image towers (resnet*, mobilenet_v3_*, narrow_resnet) with torch-pruning.

torch-pruning traces the tower once and groups every layer whose channels must fall together
(residual adds, depthwise convs, squeeze-excite, BatchNorm), so what it removes stays valid.

The whole tower is traced, ``proj`` included, and ``proj`` is an ignored layer: its output (the
shared embedding width) never changes, but its input falls with the backbone's last stage. That
last stage holds most of a ResNet's weights (layer4 is ~75% of resnet18), so keeping it whole
would leave most of the model unpruned; and ``proj`` is retrained by recovery distillation anyway.
"""

from __future__ import annotations

import torch
from torch import nn

from vledge.errors import ConfigError


def is_cnn(tower: nn.Module) -> bool:
    """A tower made of convolutions without transformer blocks (a ViT's patch conv does not count)."""
    from vledge.compress.prune.text import has_transformer_blocks

    return any(isinstance(m, nn.Conv2d) for m in tower.modules()) and not has_transformer_blocks(tower)


def prune_conv_channels_(
    tower: nn.Module,
    example_inputs: torch.Tensor,
    *,
    ratio: float,
    norm: int,
    round_to: int,
    ignored: list[nn.Module],
) -> None:
    """Remove ``ratio`` of every conv's output channels, lowest group Lp-norm first, in place.

    Layers in ``ignored`` (and ``tower.proj``) keep their output channels. A layer is cut to a
    multiple of ``round_to``; one too narrow for that (fewer than ``round_to / (1 - ratio)``
    channels) stays whole, as torch-pruning does.
    """
    import torch_pruning as tp

    was_training = tower.training
    tower.eval()  # tracing runs a forward pass: BatchNorm running statistics must not move
    try:
        with torch.enable_grad():  # the dependency graph is read from autograd's graph
            pruner = tp.pruner.BasePruner(
                tower,
                example_inputs,
                importance=tp.importance.MagnitudeImportance(p=norm),
                pruning_ratio=ratio,
                ignored_layers=[tower.proj, *ignored],
                round_to=round_to if round_to > 1 else None,
            )
            pruner.step()
    except Exception as exc:  # torch-pruning raises many unrelated types on graphs it cannot follow
        raise ConfigError(
            f"conv channel pruning of the {tower.config.get('arch')!r} image tower failed ({type(exc).__name__}: {exc}); "
            "leave it whole with PruneConfig(ignored=['image_tower']) or drop 'conv_channels' from parts"
        ) from exc
    finally:
        tower.train(was_training)
