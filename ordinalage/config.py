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
from ordinalage.protocols import parse_protocol

T = TypeVar("T")


def check_num_workers(value: object) -> int | str:
    """`data.num_workers` checked: `auto`, or an int >= 0 (a string of digits, as a command-line flag
    gives it, becomes that int); else a UsageError naming the key. `data.loader_workers` resolves `auto`."""
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise UsageError(f"config key 'data.num_workers': expected 'auto' or an integer >= 0, got {value!r}")


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

    sources: tuple[str, ...] = ("synth",)  # data specs: synth, utkface:PATH, csv:PATH, adience:PATH, ... (docs/datasets.md)
    groups: str = "0-10,11-20,21-30,31-40,41-50,51-60,61-70"
    image_size: int = 0  # 0: the backbone's default input size
    geometry: str = "auto"  # auto | resize | center_square | crop_megaage (20 px off top and bottom)
    bbox_extension: float = 0.25  # faeb: face box grown by this share of its side on each side before the aligned crop
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    protocol: str = "random"  # random | subject | folds:K | loso | source (see docs/datasets.md)
    fold: int = 0  # which fold of a folds:K / loso / source protocol this run trains (training/folds.py runs all)
    cap_train: int | None = None  # per-group cap on the training split
    cap_val: int | None = None
    cap_test: int | None = None
    sampling: str = "none"  # none | undersample | oversample | weighted
    class_weighted_loss: bool = False
    strict: bool = False  # unreadable image: error instead of report-and-skip
    num_workers: int | str = "auto"  # DataLoader workers: auto (0 on <= 2 cores, else min(cores - 1, 8)) | N
    synth_n: int = 3000
    synth_size: int = 96
    cache_dir: str | None = None  # default: $ORDINALAGE_CACHE or ~/.cache/ordinalage
    cache: str = "auto"  # decoded-image cache: auto (disk when it fits) | off | ram | disk (data/cache.py)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        parse_protocol(self.protocol)
        object.__setattr__(self, "num_workers", check_num_workers(self.num_workers))
        if self.fold < 0:
            raise UsageError(f"config key 'data.fold': {self.fold} is negative")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone + head."""

    backbone: str = "scratch"  # scratch | vgg16 | resnet18 | resnet34 | resnet50 | timm:NAME
    weights: str | None = None  # imagenet | vggface | a file (.pth, .safetensors, VGGFace .h5)
    init: str | None = None  # a trained run folder or checkpoint to start from (backbone, and head when it fits)
    head: str = "coral"  # a registered head: class, coral, corn, regression, the field's heads (docs/heads.md)
    target: str = "age"  # age (single years, ranks 0..max_age) | group
    max_age: int = 100  # top rank for target=age; older ages are clamped
    regression_loss: str = "l1"  # l1 | mse | huber
    coral_importance: str = "none"  # none | balanced (task weights from label frequencies)
    label_sigma: float = 0.0  # soft-label heads over ages: Gaussian soft labels, std in years (DLDL); 0: one-hot
    decode: str = "auto"  # age from the head's distribution: auto (the head's own rule) | mean | median | mode
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
    eval_tta: bool = False  # that evaluation with flip test-time augmentation (eval-test-tta/)
    loggers: tuple[str, ...] = ("csv",)  # csv (metrics.csv) | tensorboard (pip install ordinalage[tensorboard])
    ema_decay: float = 0.0  # exponential moving average of the weights (torch.optim.swa_utils); 0: off
    swa_start: float = 0.0  # stochastic weight averaging from this share of the epochs on (training/swa.py); 0: off
    swa_lr_scale: float = 0.1  # SWA's constant learning rate, as a share of each group's base rate
    mixup_alpha: float = 0.0  # mixup: blend each face with a partner, lam ~ Beta(alpha, alpha); 0: off (training/mixup.py)
    mixup_sigma: float = 0.0  # partner drawn by age, weight exp(-d^2 / 2 sigma^2) in years (C-Mixup); 0: any partner
    time_budget_min: float | None = None  # wall minutes for the whole run: sets train.epochs (training/budget.py)
    members: int = 1  # N > 1: an ensemble of N models, each with budget / N (training/ensemble.py)
    distill_from: str | None = None  # teacher run: train on its label distributions (ordinalage distill)
    distill_temperature: float = 1.0  # softens the teacher's distributions (p ** (1/T)) and the student's logits
    distill_alpha: float = 0.0  # weight of the head's own loss on the true ages beside the teacher's (0: teacher only)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise UsageError(f"config key 'train.ema_decay': must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.swa_start < 1.0:
            raise UsageError(f"config key 'train.swa_start': must be in [0, 1) (a share of the epochs; 0: off), "
                             f"got {self.swa_start}")
        if not self.swa_lr_scale > 0:
            raise UsageError(f"config key 'train.swa_lr_scale': must be more than 0, got {self.swa_lr_scale}")
        if self.swa_start > 0 and self.ema_decay > 0:
            raise UsageError("config keys 'train.swa_start' and 'train.ema_decay': choose one way to average the "
                             "weights (set the other to 0)")
        if self.mixup_alpha < 0 or self.mixup_sigma < 0:
            key = "mixup_alpha" if self.mixup_alpha < 0 else "mixup_sigma"
            raise UsageError(f"config key 'train.{key}': must be at least 0, got {getattr(self, key)}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise UsageError(f"config key 'train.time_budget_min': must be more than 0 minutes, or null, "
                             f"got {self.time_budget_min}")
        if self.members < 1:
            raise UsageError(f"config key 'train.members': must be at least 1, got {self.members}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise UsageError(f"config key 'train.layer_decay': must be in (0, 1] or null, got {self.layer_decay}")
        if not self.distill_temperature > 0:
            raise UsageError(f"config key 'train.distill_temperature': must be more than 0, got {self.distill_temperature}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise UsageError(f"config key 'train.distill_alpha': must be in [0, 1], got {self.distill_alpha}")
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
        raise UsageError(f"config key {dotted!r}: empty name between dots (expected e.g. train.lr)")
    over: dict[str, Any] = {}
    cur = over
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return deep_merge(d, over)


#: short names of the most used keys: the `ordinalage train` flags and `ordinalage.fit(**overrides)`
SHORT_KEYS = {"head": "model.head", "backbone": "model.backbone", "weights": "model.weights", "init": "model.init",
              "target": "model.target", "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
              "out": "train.out_dir", "device": "train.device", "precision": "train.precision", "seed": "train.seed",
              "budget": "train.time_budget_min", "members": "train.members",
              "groups": "data.groups", "image_size": "data.image_size", "workers": "data.num_workers",
              "data": "data.sources"}


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one `--set key=value`; the value is read as YAML (so 3, 0.1, true, null, [a, b] work)."""
    if "=" not in item:
        raise UsageError(f"sets {item!r}: expected key=value, e.g. train.lr=0.001", option="sets")
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
        return check_ranges(from_dict(Config, raw))
    except UsageError as exc:
        raise UsageError(f"{exc}{where}") from None


def data_config(path: str | Path | None, specs: list[str] | None = None, groups: str | None = None,
                sets: list[str] | None = None) -> DataConfig:
    """The data section for `data stats`-style commands: the YAML file, then --data specs and
    --groups, then `--set` items (parsed here, so the data layer never sees `--set` strings)."""
    overrides: dict[str, Any] = {}
    if specs:
        overrides["data.sources"] = list(specs)
    if groups:
        overrides["data.groups"] = groups
    return load_config(path, overrides, list(sets or [])).data


def config_from_dict(data: dict[str, Any]) -> Config:
    return from_dict(Config, data)


DECODE_RULES = ("auto", "mean", "median", "mode")  # model.decode; `auto`: the head's own (its `default_decoder`)


def _get(config: Config, dotted: str) -> Any:
    obj: Any = config
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def check_ranges(config: Config) -> Config:
    """The numeric ranges that need no registry (epochs, fractions, ...); the error names the key.
    Choice-valued keys (heads, backbones, ...) are checked by `training.choices.validate`."""
    t, d = config.train, config.data
    for key, ok in [("train.epochs", t.epochs >= 1), ("train.batch_size", t.batch_size >= 1),
                    ("train.lr", t.lr >= 0), ("train.freeze_epochs", t.freeze_epochs >= 0),
                    ("train.early_stop_patience", t.early_stop_patience >= 0),
                    ("data.val_fraction", 0 <= d.val_fraction < 1), ("data.test_fraction", 0 <= d.test_fraction < 1),
                    ("model.max_age", config.model.max_age >= 1)]:
        if not ok:
            raise UsageError(f"config key '{key}': value {_get(config, key)!r} is out of range")
    if d.val_fraction + d.test_fraction >= 1:
        raise UsageError("config keys 'data.val_fraction' + 'data.test_fraction' must be below 1")
    return config


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")


def replace(config: T, **changes: Any) -> T:
    """dataclasses.replace, re-exported for frozen configs."""
    return dataclasses.replace(config, **changes)
