"""Search spaces as data: parameters named by dotted training-config keys.

A space is a YAML mapping ``key: {type, low, high, log, step, choices}``::

    train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    train.batch_size: {type: categorical, choices: [32, 64, 128]}
    data.augment.rotate: {type: int, low: 0, high: 20, step: 5}

Every entry is checked against the `Config` dataclasses (the key exists and is a value, not a
section; the type fits the field; the bounds and each choice give a valid config) before any
trial runs, so a typo is a `UsageError` naming the tune file and the key.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from ordinalage.config import Config, from_dict, set_dotted
from ordinalage.errors import UsageError

TYPES = ("float", "int", "categorical")
_ENTRY_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class Param:
    """One searched config value."""

    key: str  # dotted config key, e.g. "data.augment.hflip_p"
    type: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter from an Optuna trial (the Optuna parameter name is the dotted key)."""
        if self.type == "float":
            return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log,  # type: ignore[arg-type]
                                       step=None if self.step is None else float(self.step))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log,  # type: ignore[arg-type]
                                     step=1 if self.step is None else int(self.step))
        return trial.suggest_categorical(self.key, list(self.choices))

    def probe_values(self) -> list[Any]:
        """Values that must each give a valid config: the bounds, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        return [self.low, self.high]

    def describe(self) -> str:
        if self.type == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        extra = " log" if self.log else (f" step {self.step}" if self.step is not None else "")
        return f"{self.type} [{self.low}, {self.high}]{extra}"


# --------------------------------------------------------------------------------------------- config keys


def _leaf_types(cls: type = Config, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> type annotation for every value field of the config dataclasses."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        tp = hints[f.name]
        if is_dataclass(tp):
            out.update(_leaf_types(tp, f"{prefix}{f.name}."))  # type: ignore[arg-type]
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


CONFIG_KEYS: dict[str, Any] = _leaf_types()


def _accepts(tp: Any, kind: type) -> bool:
    """Whether annotation `tp` (maybe `X | None`) admits every value of Python type `kind`."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_accepts(a, kind) for a in typing.get_args(tp))
    if kind is float:
        return tp is float
    if kind is int:
        return tp in (int, float)
    return False


# --------------------------------------------------------------------------------------------- parsing


def _number(value: Any, where: str, name: str, integer: bool) -> float | int:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where}: '{name}' must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise UsageError(f"{where}: '{name}' must be an integer for type int, got {value!r}")
        return int(value)
    return float(value)


def parse_param(key: Any, entry: Any, where: str) -> Param:
    """Check one space entry (`where` names the file and key for messages) and build its Param."""
    if not isinstance(key, str) or key not in CONFIG_KEYS:
        close = difflib.get_close_matches(str(key), list(CONFIG_KEYS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else " (a dotted training-config key such as train.lr)"
        raise UsageError(f"{where}: unknown parameter key '{key}'{hint}")
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where}: expected a mapping such as {{type: float, low: 0.0, high: 1.0}}, got {entry!r}")
    kind = entry.get("type")
    if kind not in TYPES:
        raise UsageError(f"{where}: unknown type {kind!r} (float, int, categorical)")
    extra = sorted(set(entry) - _ENTRY_KEYS[kind])
    if extra:
        raise UsageError(f"{where}: unknown field '{extra[0]}' for type {kind} "
                         f"(allowed: {', '.join(sorted(_ENTRY_KEYS[kind]))})")
    field_type = CONFIG_KEYS[key]
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UsageError(f"{where}: 'choices' must be a non-empty list, got {choices!r}")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise UsageError(f"{where}: choice {c!r} is not a scalar (null, bool, number or string)")
        if len({repr(c) for c in choices}) != len(choices):
            raise UsageError(f"{where}: 'choices' repeats a value: {choices!r}")
        return Param(key, kind, choices=tuple(choices))
    integer = kind == "int"
    if not _accepts(field_type, int if integer else float):
        raise UsageError(f"{where}: type {kind} does not fit config key '{key}' "
                         f"(a {getattr(field_type, '__name__', field_type)}; use type: categorical)")
    for name in ("low", "high"):
        if name not in entry:
            raise UsageError(f"{where}: type {kind} needs '{name}'")
    low = _number(entry["low"], where, "low", integer)
    high = _number(entry["high"], where, "high", integer)
    if low > high:
        raise UsageError(f"{where}: low ({low}) is greater than high ({high})")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise UsageError(f"{where}: 'log' must be true or false, got {log!r}")
    step = entry.get("step")
    if step is not None:
        step = _number(step, where, "step", integer)
        if step <= 0:
            raise UsageError(f"{where}: 'step' must be positive, got {step}")
        if log:
            raise UsageError(f"{where}: 'step' and 'log: true' cannot be combined")
    if log and low <= 0:
        raise UsageError(f"{where}: 'log: true' needs low > 0, got {low}")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def parse_space(raw: Any, where: str) -> tuple[Param, ...]:
    """Parse the `space:` mapping of a tune file (`where` is the file name). A null entry is dropped
    (so a file can remove a parameter that its `base:` file searches)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise UsageError(f"{where}: 'space' must be a mapping of config keys to parameter specs")
    return tuple(parse_param(k, v, f"{where}: space.{k}") for k, v in raw.items() if v is not None)


def apply_values(base: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw training-config dict with each dotted key set."""
    out = base
    for key, value in values.items():
        out = set_dotted(out, key, value)
    return out


def known_values() -> dict[str, tuple[str, ...]]:
    """The allowed strings of the enumerated config keys, from the registries that define them."""
    from ordinalage.data.sampling import SAMPLING_MODES
    from ordinalage.models.backbones import BACKBONES
    from ordinalage.models.heads import CORAL_IMPORTANCE, HEADS, REGRESSION_LOSSES, TARGETS
    from ordinalage.training.choices import registries
    from ordinalage.training.optim import MONITORS

    registries()  # loads the installed plugins' heads and backbones into the registries read below
    return {"data.sampling": tuple(SAMPLING_MODES), "model.head": tuple(HEADS), "model.backbone": tuple(BACKBONES),
            "model.target": tuple(TARGETS), "model.regression_loss": tuple(REGRESSION_LOSSES),
            "model.coral_importance": tuple(CORAL_IMPORTANCE), "train.monitor": tuple(MONITORS)}


def check_space(space: tuple[Param, ...], base: dict[str, Any], where: str) -> None:
    """Each bound and choice, set alone on the base config, must give a valid `Config`; a choice of an
    enumerated key (data.sampling, model.head, ...) must be one of its known values."""
    from ordinalage.models.backbones import is_known_backbone

    known = known_values()
    for p in space:
        allowed = known.get(p.key)
        if allowed is not None:
            for value in p.probe_values():
                if p.key == "model.backbone" and isinstance(value, str) and is_known_backbone(value):
                    continue  # registered names and timm:NAME
                if value not in allowed:
                    raise UsageError(f"{where}: space.{p.key}: unknown choice {value!r} ({', '.join(allowed)})")
        for value in p.probe_values():
            try:
                from_dict(Config, apply_values(base, {p.key: value}))
            except UsageError as exc:
                raise UsageError(f"{where}: space.{p.key}: value {value!r} gives a bad config: {exc}") from None
