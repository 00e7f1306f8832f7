"""Record a pruned tower's new module shapes in its ``config`` and replay them on an unpruned build.

A tower's ``config`` dict is all that rebuilds it, so pruning writes a ``"pruned"`` entry there::

    {"version": 1,
     "modules": {"backbone.layer1.0.conv1": {"type": "Conv2d", "in_channels": 32, "out_channels": 32, "groups": 1}, ...},
     "heads": {"encoder.encoder.layer.0.attention": [1, 3]}}

``modules`` holds the new shape of every Conv2d / BatchNorm2d / Linear / LayerNorm whose shape changed
(names relative to the tower); ``heads`` holds, per attention module with a native ``prune_heads``
(Hugging Face BERT family), the original indices of the heads removed. The loader builds the
unpruned architecture, calls :func:`apply_pruned_shapes_`, then loads the weights.
"""

from __future__ import annotations

import copy

from torch import nn

from vledge.errors import CheckpointError, ConfigError

RECORD_KEY = "pruned"
RECORD_VERSION = 1

# module type -> the constructor arguments that pruning changes
SHAPE_FIELDS: dict[type, tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm2d: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
    nn.LayerNorm: ("normalized_shape",),
}


def _base_type(module: nn.Module) -> type | None:
    return next((t for t in SHAPE_FIELDS if isinstance(module, t)), None)


def module_shape(module: nn.Module) -> dict | None:
    """The shape signature of a Conv2d / BatchNorm2d / Linear / LayerNorm (JSON-ready), else None."""
    base = _base_type(module)
    if base is None:
        return None
    shape = {"type": base.__name__}
    for name in SHAPE_FIELDS[base]:
        value = getattr(module, name)
        shape[name] = list(value) if isinstance(value, tuple) else int(value)
    return shape


def module_shapes(tower: nn.Module) -> dict[str, dict]:
    """Shape signatures of every shape-carrying module, by name relative to ``tower``."""
    return {name: s for name, m in tower.named_modules() if (s := module_shape(m)) is not None}


def param_shapes(tower: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in tower.state_dict().items()}


def record_pruned_(
    tower: nn.Module,
    shapes_before: dict[str, dict],
    params_before: dict[str, tuple[int, ...]],
    heads: dict[str, list[int]],
) -> dict[str, list[dict]]:
    """Merge this pruning's changes into ``tower.config["pruned"]``; return {name: [old, new]} of what changed.

    Raises ConfigError when a tensor changed shape in a module this record cannot rebuild, so a
    model that could not be reloaded is caught at pruning time rather than at load time.
    """
    shapes_after = module_shapes(tower)
    if shapes_after.keys() != shapes_before.keys():
        raise ConfigError(f"pruning added or removed modules: {sorted(shapes_after.keys() ^ shapes_before.keys())[:5]}")
    changed = {n: [shapes_before[n], s] for n, s in shapes_after.items() if s != shapes_before[n]}
    for name, shape in param_shapes(tower).items():
        owner = name.rsplit(".", 1)[0]
        if params_before.get(name) != shape and owner not in changed:
            raise ConfigError(
                f"pruning changed {name} to {list(shape)} in a {type(tower.get_submodule(owner)).__name__}, "
                "which the pruned-shape record cannot rebuild; start again from the unpruned model and add that "
                "module (prefixed with its tower, e.g. 'image_tower.') to PruneConfig.ignored"
            )
    if not changed and not heads:
        return changed
    record = tower.config.get(RECORD_KEY) or {"version": RECORD_VERSION, "modules": {}, "heads": {}}
    record["modules"].update({n: new for n, (_, new) in changed.items()})
    for path, removed in heads.items():
        record["heads"][path] = sorted(set(record["heads"].get(path, [])) | set(removed))
    tower.config[RECORD_KEY] = record
    return changed


def _rebuild(old: nn.Module, shape: dict) -> nn.Module:
    """A same-type module of the recorded shape, keeping every other hyperparameter of ``old``."""
    kind = type(old)
    param = next(old.parameters(), None)
    like = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    if isinstance(old, nn.Conv2d):
        return kind(
            shape["in_channels"], shape["out_channels"], old.kernel_size, stride=old.stride, padding=old.padding,
            dilation=old.dilation, groups=shape["groups"], bias=old.bias is not None, padding_mode=old.padding_mode, **like,
        )
    if isinstance(old, nn.BatchNorm2d):
        return kind(
            shape["num_features"], eps=old.eps, momentum=old.momentum, affine=old.affine,
            track_running_stats=old.track_running_stats, **like,
        )
    if isinstance(old, nn.Linear):
        return kind(shape["in_features"], shape["out_features"], bias=old.bias is not None, **like)
    return kind(
        tuple(shape["normalized_shape"]), eps=old.eps, elementwise_affine=old.elementwise_affine,
        bias=getattr(old, "bias", None) is not None, **like,
    )


def apply_pruned_shapes_(tower: nn.Module, config: dict) -> nn.Module:
    """Give a freshly built, unpruned ``tower`` the pruned structure recorded in ``config``; return it.

    Call after building the architecture from ``config`` and before loading weights (the new
    modules hold fresh initial values). A config without a ``"pruned"`` entry changes nothing;
    applying a record twice changes nothing the second time.
    """
    record = config.get(RECORD_KEY)
    if not record:
        return tower
    where = f"tower {config.get('arch')!r}"
    if record.get("version") != RECORD_VERSION:
        raise CheckpointError(
            f"{where}: pruned-shape record version {record.get('version')!r} is not supported "
            f"(this vledge reads {RECORD_VERSION}); upgrade vledge"
        )
    # Heads first: prune_heads also updates the attention's head count, which a shape record cannot.
    for path, removed in record.get("heads", {}).items():
        attention = _submodule(tower, path, where)
        if not callable(getattr(attention, "prune_heads", None)):
            raise CheckpointError(f"{where}: {path} is a {type(attention).__name__}, which has no prune_heads")
        attention.prune_heads(set(removed) - set(getattr(attention, "pruned_heads", ())))
    for path, shape in record.get("modules", {}).items():
        old = _submodule(tower, path, where)
        if _base_type(old) is None or _base_type(old).__name__ != shape.get("type"):
            raise CheckpointError(
                f"{where}: {path} is a {type(old).__name__} but the pruned-shape record says {shape.get('type')!r}; "
                "the config does not match this architecture"
            )
        if module_shape(old) != shape:
            parent, _, leaf = path.rpartition(".")
            setattr(tower.get_submodule(parent) if parent else tower, leaf, _rebuild(old, shape))
    if isinstance(getattr(tower, "config", None), dict):
        tower.config[RECORD_KEY] = copy.deepcopy(record)
    return tower


def _submodule(tower: nn.Module, path: str, where: str) -> nn.Module:
    try:
        return tower.get_submodule(path)
    except AttributeError:
        raise CheckpointError(
            f"{where}: the pruned-shape record names module {path!r}, which this architecture lacks"
        ) from None
