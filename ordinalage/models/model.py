"""AgeModel = backbone + head; `build_model` from a ModelConfig; optimizer parameter groups."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models.backbones import Backbone, BackboneInfo, backbone_info, build_backbone
from ordinalage.models.heads import Decoded, Head, HeadTraits, build_head, head_traits
from ordinalage.models.input_spec import InputSpec


class AgeModel(nn.Module):
    """`forward(x) -> logits`; `decode(logits) -> Decoded`; `predict(x) -> Decoded`.

    `set_backbone_trainable(False)` freezes the backbone: no gradients, and it stays in eval mode
    (frozen BatchNorm statistics, no dropout) even when the model is put in training mode.
    """

    def __init__(self, backbone: Backbone, head: Head) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_trainable = True

    @property
    def input_spec(self) -> InputSpec:
        return self.backbone.input_spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def loss(self, logits: torch.Tensor, age: torch.Tensor, group: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.head.loss(logits, age, group, weight)

    def decode(self, logits: torch.Tensor) -> Decoded:
        return self.head.decode(logits)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> Decoded:
        """Decoded predictions for a batch: uint8 images are normalised with `input_spec`, floats are
        taken as already normalised. Uses the current train/eval mode (call `.eval()` first)."""
        if x.dtype == torch.uint8:
            x = self.input_spec.normalize(x)
        return self.decode(self(x))

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()

    def set_backbone_trainable(self, flag: bool) -> None:
        """Freeze (False) or unfreeze (True) the backbone."""
        self.backbone_trainable = bool(flag)
        for p in self.backbone.parameters():
            p.requires_grad_(self.backbone_trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> AgeModel:
        super().train(mode)
        if not self.backbone_trainable:
            self.backbone.eval()
        return self


def predict_logits(model: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """float32 logits of a normalised batch; `tta`: the mean of the logits of x and of its
    horizontal mirror (test-time augmentation; twice the compute)."""
    logits = model(x).float()
    if tta:
        logits = 0.5 * (logits + model(x.flip(3)).float())
    return logits


def build_model(cfg: ModelConfig, groups: AgeGroups, class_weights: np.ndarray | None = None,
                train_ages: np.ndarray | None = None) -> AgeModel:
    """Backbone from `cfg.backbone` (+ `cfg.weights`), head from `cfg.head` on its features.

    `class_weights` (one per age group) and `train_ages` go to `build_head` (see models/heads.py).
    """
    backbone = build_backbone(cfg)
    head = build_head(cfg, backbone.out_features, groups, class_weights=class_weights, train_ages=train_ages)
    return AgeModel(backbone, head)


def model_traits(model: Mapping[str, Any] | None) -> tuple[HeadTraits | None, BackboneInfo | None]:
    """(head traits, backbone traits) of a config's `model` section as a plain dict (a run's
    config.yaml), for cards and reports; None for a name not registered here (e.g. a plugin's head
    when the plugin is not installed): describing a model never fails."""
    model = model if isinstance(model, Mapping) else {}
    try:
        head: HeadTraits | None = head_traits(str(model.get("head")))
    except UsageError:  # not registered, or a plugin that cannot be used: the card says less
        head = None
    try:
        backbone: BackboneInfo | None = backbone_info(str(model.get("backbone")))
    except UsageError:  # an unknown backbone: the card says less, it does not fail
        backbone = None
    return head, backbone


def _no_decay(name: str, p: nn.Parameter) -> bool:
    """Biases, norm scales and other 1-d parameters (CORAL biases) get no weight decay."""
    return p.ndim <= 1 or name.endswith(".bias")


def param_groups(model: AgeModel, lr: float, backbone_lr_mult: float = 1.0,
                 weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups: backbone (lr * backbone_lr_mult) and head (lr), each split
    into decayed weights and undecayed biases/norms. Frozen parameters are included (they get no
    gradient while frozen and train normally once unfrozen). Empty groups are left out; each
    group has a `name` key."""
    out: list[dict[str, Any]] = []
    for part, module, part_lr in (("backbone", model.backbone, lr * backbone_lr_mult), ("head", model.head, lr)):
        decay, no_decay = [], []
        for name, p in module.named_parameters():
            (no_decay if _no_decay(name, p) else decay).append(p)
        for suffix, params, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if params:
                out.append({"params": params, "lr": part_lr, "weight_decay": wd, "name": f"{part}_{suffix}"})
    return out
