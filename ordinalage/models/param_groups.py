"""Optimizer parameter groups with layer-wise learning-rate decay, through timm's optimizer helper.

With `train.layer_decay = None` the groups are the usual two parts (backbone at
`lr * backbone_lr_mult`, head at `lr`, each split into decayed weights and undecayed biases/norms;
`models.model.param_groups`). With a decay `d` in (0, 1], the backbone is split into its layers by
its `group_matcher` (timm's interface; ordinalage's own backbones define one: scratch = 8 conv-BN
pairs, vgg16 = 13 convs + fc6 + fc7, ResNets = stem + each residual block, timm models = timm's own
grouping) and `timm.optim.param_groups_layer_decay` gives layer k of L (0 = stem) the scale
`d ** (L - 1 - k)`; ordinalage multiplies it by `d * backbone_lr_mult`, so the top backbone layer
trains at `lr * backbone_lr_mult * d`, the stem at `lr * backbone_lr_mult * d ** L`, and the head
(timm's classifier position) at `lr`. Every group carries its absolute `lr` (LambdaLR and
torch.optim use it as the base), `lr_scale` (relative to `lr`) and a `name`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

from ordinalage.config import Config
from ordinalage.errors import UsageError


@contextlib.contextmanager
def _all_trainable(module: nn.Module) -> Iterator[None]:
    """timm's helper skips parameters without gradients: group frozen ones too (they train once
    unfrozen), then restore each flag."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def param_groups(model: nn.Module, config: Config) -> list[dict[str, Any]]:
    """Parameter groups of an `AgeModel` for `torch.optim` from `config.train` (lr, weight_decay,
    backbone_lr_mult, layer_decay); see the module docstring."""
    from ordinalage.models.model import param_groups as two_part_groups

    t = config.train
    if t.layer_decay is None:
        groups = two_part_groups(model, lr=t.lr, backbone_lr_mult=t.backbone_lr_mult,  # type: ignore[arg-type]
                                 weight_decay=t.weight_decay)
        for g in groups:
            g["lr_scale"] = g["lr"] / t.lr if t.lr else 1.0
        return groups
    if not 0.0 < t.layer_decay <= 1.0:
        raise UsageError(f"config key 'train.layer_decay': must be in (0, 1] or null, got {t.layer_decay}")
    from timm.optim import param_groups_layer_decay

    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    with _all_trainable(backbone):
        timm_groups = param_groups_layer_decay(backbone, weight_decay=t.weight_decay, layer_decay=t.layer_decay)
    names = {id(p): n for n, p in backbone.named_parameters()}
    layers = layer_ids(model)
    out: list[dict[str, Any]] = []
    for g in timm_groups:
        scale = float(g["lr_scale"]) * t.layer_decay * t.backbone_lr_mult
        layer = layers.get(names[id(g["params"][0])], max(layers.values()))
        kind = "decay" if g["weight_decay"] else "no_decay"
        out.append({"params": list(g["params"]), "lr": t.lr * scale, "lr_scale": scale,
                    "weight_decay": float(g["weight_decay"]), "name": f"backbone_layer{layer}_{kind}"})
    head = two_part_groups(model, lr=t.lr, weight_decay=t.weight_decay)  # type: ignore[arg-type]
    for g in head:
        if g["name"].startswith("head"):
            g["lr_scale"] = 1.0
            out.append(g)
    return out


def layer_ids(model: nn.Module) -> dict[str, int]:
    """Backbone parameter name -> layer index (0 = stem) as timm groups it (for reports and tests)."""
    from timm.models._manipulate import group_parameters

    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    return group_parameters(backbone, backbone.group_matcher(coarse=False), reverse=True)  # type: ignore[operator]


__all__ = ["layer_ids", "param_groups"]
