"""Choice-valued config keys checked against the registries that define them (heads, backbones,
optimisers, ...). Config itself stays a leaf that knows no registry: it checks types and ranges;
the commands, the Python API and `fit` call `validate` before any image is read or run folder made."""

from __future__ import annotations

from typing import Any

from ordinalage.config import DECODE_RULES, Config, _get, check_ranges
from ordinalage.data.cache import check_cache_mode
from ordinalage.data.decode import GEOMETRIES
from ordinalage.data.sampling import SAMPLING_MODES
from ordinalage.errors import UsageError
from ordinalage.models.backbones import BACKBONES, add_backbone, is_known_backbone
from ordinalage.models.heads import CORAL_IMPORTANCE, HEADS, REGRESSION_LOSSES, TARGETS, add_head, head_traits
from ordinalage.plugins import load_plugins, plugin_note
from ordinalage.runs.runtime import PRECISIONS
from ordinalage.training.loggers import check_loggers
from ordinalage.training.optim import MONITORS, OPTIMIZERS, SCHEDULERS


def registries() -> dict[str, Any]:
    """Config key -> the valid names, read from the registries that define them (imports torch)."""
    load_plugins("ordinalage.heads", add_head, builtin=HEADS)  # the installed plugins, once
    load_plugins("ordinalage.backbones", add_backbone, builtin=BACKBONES)
    return {"data.geometry": GEOMETRIES, "data.sampling": SAMPLING_MODES, "model.backbone": tuple(BACKBONES),
            "model.head": tuple(HEADS), "model.target": TARGETS, "model.regression_loss": REGRESSION_LOSSES,
            "model.coral_importance": CORAL_IMPORTANCE, "model.decode": DECODE_RULES, "train.optimizer": tuple(OPTIMIZERS),
            "train.scheduler": tuple(SCHEDULERS), "train.monitor": tuple(MONITORS), "train.precision": PRECISIONS}


def validate(config: Config) -> Config:
    """Check every choice-valued key against its registry and the numeric ranges; the error names the key.

    Called when a config is loaded and when training starts, before any image is read or run
    folder made."""
    for key, names in registries().items():
        value = _get(config, key)
        if key == "model.backbone":
            if is_known_backbone(value):  # a registered name or any timm:NAME (checked when built)
                continue
        if value not in names:
            raise UsageError(f"config key '{key}': unknown value {value!r} ({', '.join(map(str, names))})"
                             + plugin_note(key, value))
    if config.train.distill_from and not head_traits(config.model.head).distill_student:
        students = ", ".join(repr(n) for n, cls in HEADS.items() if cls.distill_student)
        raise UsageError(f"config key 'train.distill_from': a distilled student needs model.head {students} (a "
                         f"softmax over the years, the distribution the teacher's is matched to), got "
                         f"{config.model.head!r}")
    check_ranges(config)
    check_cache_mode(config.data.cache)
    check_loggers(config.train.loggers)
    return config
