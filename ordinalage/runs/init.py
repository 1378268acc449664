"""`--init RUN_OR_CHECKPOINT` (config key `model.init`): start a new run from a trained model.

The backbone always comes from the checkpoint (its backbone must be the same architecture as the
new one). The head comes along only when it is the same kind of head, for the same target and the
same age groups and its tensors have the same shapes; otherwise the new head keeps its fresh
initialisation (and the message says why). Optimizer, scheduler and epoch do not carry over: this
is a new run, not `--resume`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ordinalage.errors import UsageError


def _head_name(head: nn.Module) -> str | None:
    from ordinalage.models.heads import HEADS

    return next((name for name, cls in HEADS.items() if type(head) is cls), None)


def _head_mismatch(model: nn.Module, ckpt: dict, head_state: dict[str, torch.Tensor]) -> str | None:
    """Why the checkpoint's head cannot be reused, or None when it can."""
    old = dict(ckpt.get("config", {}).get("model", {}))
    head = model.head  # type: ignore[union-attr]
    new_name = _head_name(head)
    if old.get("head") != new_name:
        return f"head {old.get('head')!r} there, {new_name!r} here"
    if old.get("target") != getattr(head, "target", None):
        return f"target {old.get('target')!r} there, {getattr(head, 'target', None)!r} here"
    groups = getattr(head, "groups", None)
    new_labels = list(groups.labels) if groups is not None else None
    if list(ckpt.get("groups") or []) != new_labels:
        return f"age groups {','.join(ckpt.get('groups') or [])} there, {','.join(new_labels or [])} here"
    own = head.state_dict()
    for k, v in own.items():
        if k not in head_state or tuple(head_state[k].shape) != tuple(v.shape):
            return f"head tensor {k} differs in shape"
    return None


def init_from(model: nn.Module, checkpoint_path: str | Path) -> str:
    """Load a trained ordinalage model's backbone (and head when head, target and groups match) into
    `model` (an `AgeModel`, on the CPU, before it is wrapped or moved). Returns a one-line message
    saying what was loaded. A checkpoint whose backbone does not fit is a UsageError naming
    `model.init`, the file and the first mismatching tensors."""
    from ordinalage.runs.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(checkpoint_path)
    except UsageError as exc:
        raise UsageError(f"config key 'model.init': {exc}") from None
    path = ckpt["path"]
    state: dict[str, torch.Tensor] = ckpt["model"]
    backbone_state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    head_state = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    old_backbone = ckpt.get("config", {}).get("model", {}).get("backbone")
    own = model.backbone.state_dict()  # type: ignore[union-attr]
    missing = [k for k in own if k not in backbone_state]
    unexpected = [k for k in backbone_state if k not in own]
    shapes = [k for k in own if k in backbone_state and tuple(backbone_state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:4])}" if missing else "",
            f"unexpected {', '.join(unexpected[:4])}" if unexpected else "",
            f"other shape: {', '.join(shapes[:4])}" if shapes else "") if part)
        raise UsageError(f"config key 'model.init': {path}: its {old_backbone} backbone does not fit this model's "
                         f"backbone ({detail}); model.backbone (and model.width) must match the trained run")
    model.backbone.load_state_dict(backbone_state, strict=True)  # type: ignore[union-attr]
    why = _head_mismatch(model, ckpt, head_state)
    if why is None:
        model.head.load_state_dict(head_state, strict=True)  # type: ignore[union-attr]
        return f"initialised backbone and head from {path} (epoch {ckpt.get('epoch', '?')})"
    return f"initialised the backbone from {path}; new head ({why})"


__all__ = ["init_from"]
