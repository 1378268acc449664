"""Weights-only model files: `model.safetensors`, the form in which models are shipped.

A safetensors file holds the state dict (floating tensors in fp16 or fp32) and, as string metadata,
the few fields a checkpoint carries to rebuild the model (config, age groups, reference numbers,
training prior, epoch). Reading one never unpickles anything; `load_checkpoint` returns the same
dict for it as for a `best.pt`, with floating tensors back in fp32.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ordinalage.errors import UsageError

FORMAT = "ordinalage-checkpoint"  # the marker every ordinalage checkpoint carries (checkpoint.FORMAT)
WEIGHTS_FILE = "model.safetensors"
META_KEY = "ordinalage"
CARRIED = ("version", "config", "groups", "reference", "epoch", "train_prior")


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def save_weights(ckpt: dict[str, Any], path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write a checkpoint's model as safetensors (floating tensors cast to `dtype`), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {name: (t.to(dtype) if t.is_floating_point() else t).contiguous().cpu()
               for name, t in ckpt["model"].items()}
    meta = {"format": FORMAT, META_KEY: json.dumps({k: _jsonable(ckpt.get(k)) for k in CARRIED})}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_weights(path: str | Path) -> dict[str, Any]:
    """A safetensors model file as a checkpoint dict (fp32 floating tensors); a UsageError names the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    fields = read_weights_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable safetensors file ({exc})") from None
    model = {name: (t.float() if t.is_floating_point() else t) for name, t in tensors.items()}
    return {"format": FORMAT, **fields, "model": model}


def read_weights_metadata(path: str | Path) -> dict[str, Any]:
    """The checkpoint fields stored beside the tensors (config, groups, ...), read from the header only."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT or META_KEY not in meta:
        raise UsageError(f"{path}: a safetensors file without ordinalage's metadata (no '{FORMAT}' marker); "
                         "only files written by ordinalage (its shipped models, by ordinalage.zoo.package.package_model) "
                         "carry the config needed to rebuild the model")
    try:
        fields = json.loads(meta[META_KEY])
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: unreadable ordinalage metadata ({exc})") from None
    return fields


__all__ = ["WEIGHTS_FILE", "read_weights", "read_weights_metadata", "save_weights"]
