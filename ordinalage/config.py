"""Frozen, typed configuration: dataclasses, YAML loading, `--set key=value` overrides.

Precedence (lowest first): dataclass defaults < YAML file (and the files it names with `base:`)
< explicit CLI flags < `--set section.key=value`. Unknown keys and wrong types are errors that
name the key. The resolved config is saved as `config.yaml` in every run folder.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ordinalage.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class AugmentConfig:
    """Face-safe albumentations transforms; each has a probability `*_p` (0 turns it off) and a strength."""

    enabled: bool = True
    hflip_p: float = 0.5
    affine_p: float = 0.5
    shift: float = 0.05  # fraction of the image size
    scale: float = 0.10  # +- relative zoom
    rotate: float = 10.0  # +- degrees
    color_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    gray_p: float = 0.0
    blur_p: float = 0.0
    blur_limit: int = 3  # max kernel size
    noise_p: float = 0.0
    noise_std: float = 0.05  # fraction of the 0-255 range
    jpeg_p: float = 0.0
    jpeg_quality: int = 50  # lowest quality drawn
    occlusion_p: float = 0.0
    occlusion_size: float = 0.2  # max hole side, fraction of the image size


@dataclass(frozen=True)
class DataConfig:
    """Where the faces come from, how they are grouped, split, sampled and turned into tensors."""

    sources: tuple[str, ...] = ("synth",)  # data specs: synth, utkface:PATH, megaage:PATH, folder:PATH, csv:PATH
    groups: str = "0-10,11-20,21-30,31-40,41-50,51-60,61-70"
    image_size: int = 0  # 0: the backbone's default input size
    geometry: str = "auto"  # auto | resize | center_square | crop_megaage (20 px off top and bottom)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    cap_train: int | None = None  # per-group cap on the training split
    cap_val: int | None = None
    cap_test: int | None = None
    sampling: str = "none"  # none | undersample | oversample | weighted
    class_weighted_loss: bool = False
    strict: bool = False  # unreadable image: error instead of report-and-skip
    num_workers: int = 2
    synth_n: int = 3000
    synth_size: int = 96
    cache_dir: str | None = None  # default: $ORDINALAGE_CACHE or ~/.cache/ordinalage
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class ModelConfig:
    """Backbone + head."""

    backbone: str = "scratch"  # scratch | vgg16 | resnet18 | resnet34 | resnet50 | timm:NAME
    weights: str | None = None  # imagenet | vggface | a file (.pth, .safetensors, VGGFace .h5)
    init: str | None = None  # a trained run folder or checkpoint to start from (backbone, and head when it fits)
    head: str = "coral"  # class | coral | corn | regression
    target: str = "age"  # age (single years, ranks 0..max_age) | group
    max_age: int = 100  # top rank for target=age; older ages are clamped
    regression_loss: str = "l1"  # l1 | mse | huber
    coral_importance: str = "none"  # none | balanced (task weights from label frequencies)
    label_sigma: float = 0.0  # class head over ages: Gaussian soft labels, std in years (DLDL); 0: one-hot
    dropout: float = 0.0
    width: int = 32  # scratch CNN: channels of the first block


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, precision, schedule, stopping and run-folder settings."""

    epochs: int = 8
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 3e-3
    backbone_lr_mult: float = 1.0  # backbone learning rate = lr * this
    layer_decay: float | None = None  # layer-wise lr decay in (0, 1]: layer k of L gets decay^(L-k); None: off
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine (with warm-up) | step | none
    warmup_epochs: float = 0.5
    step_size: int = 10
    gamma: float = 0.1
    grad_clip: float = 1.0  # 0: off
    freeze_epochs: int = 0  # train the head alone for this many epochs
    early_stop_patience: int = 0  # 0: off
    monitor: str = "val_mae"  # val_mae (min) | val_accuracy (max) | val_loss (min)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    out_dir: str | None = None  # default: runs/<head>-<backbone>-<timestamp>
    eval_on_end: bool = True  # evaluate best.pt on the test split at the end

    def __post_init__(self) -> None:
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise UsageError(f"config key 'train.layer_decay': must be in (0, 1] or null, got {self.layer_decay}")
        if self.backbone_lr_mult < 0:
            raise UsageError(f"config key 'train.backbone_lr_mult': must be at least 0, got {self.backbone_lr_mult}")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against annotation `tp` (int accepted for float, list for tuple)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UsageError as exc:
                errors.append(exc)
        raise UsageError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"config key '{key}': expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise UsageError(f"config key '{key}': expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"config key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UsageError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise UsageError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(f"config key '{key}': expected a string, got {value!r}")
    if tp is Any:
        return value
    raise UsageError(f"config key '{key}': unsupported type {_type_name(tp)}")


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass `cls` from a (possibly partial) dict; unknown keys and bad types are errors."""
    data = data or {}
    if not isinstance(data, dict):
        raise UsageError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain dict/list/scalars (tuples become lists) for YAML, JSON and checkpoints."""
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return a copy of `d` with `a.b.c = value` set (creating mappings as needed)."""
    parts = dotted.split(".")
    if not all(parts):
        raise UsageError(f"--set: bad key {dotted!r}")
    over: dict[str, Any] = {}
    cur = over
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return deep_merge(d, over)


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one `--set key=value`; the value is read as YAML (so 3, 0.1, true, null, [a, b] work)."""
    if "=" not in item:
        raise UsageError(f"--set {item!r}: expected key=value, e.g. train.lr=0.001")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping; a top-level `base: other.yaml` (relative to this file) is merged underneath."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file not found: {p}")
    if p.resolve() in _seen:
        raise UsageError(f"{p}: 'base' files form a cycle")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{p}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{p}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        bases = [base] if isinstance(base, str) else list(base)
        merged: dict[str, Any] = {}
        for b in bases:
            merged = deep_merge(merged, read_yaml(p.parent / b, _seen + (p.resolve(),)))
        data = deep_merge(merged, data)
    return data


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
) -> Config:
    """Resolve a Config: defaults < YAML `path` < `overrides` (dotted keys) < `--set` items."""
    raw: dict[str, Any] = read_yaml(path) if path else {}
    for key, value in (overrides or {}).items():
        raw = set_dotted(raw, key, value)
    for item in sets or []:
        key, value = parse_set(item)
        raw = set_dotted(raw, key, value)
    where = f" in {path}" if path else ""
    try:
        return from_dict(Config, raw)
    except UsageError as exc:
        raise UsageError(f"{exc}{where}") from None


def config_from_dict(data: dict[str, Any]) -> Config:
    return from_dict(Config, data)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")


def replace(config: T, **changes: Any) -> T:
    """dataclasses.replace, re-exported for frozen configs."""
    return dataclasses.replace(config, **changes)
