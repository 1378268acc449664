"""The tune YAML: which training config to start from, what to optimise, and the search space.

```yaml
study_name: coral-scratch          # default study name (and folder studies/<name>)
base_config: ../experiments/x.yaml # a training YAML, relative to this file; or an inline mapping
                                   # (which may name its own `base:` files, relative to this file)
objective: {metric: val_mae, direction: minimize}   # val_mae | val_loss | val_accuracy | val_one_off
epochs: 3                          # epochs per trial
trials: 30                         # default target: total trials the study should reach
timeout: null                      # seconds; stop starting trials after this
seed: 0
sampler: {n_startup_trials: 10}    # TPESampler options (multivariate, constant_liar: true by default)
pruner: {type: median, n_startup_trials: 5, n_warmup_steps: 1}   # median | hyperband | none
stop_after_failures: 5             # a worker stops after this many failed trials in a row (0: never)
space: {train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}, ...}
```

The tune file itself may name `base:` files (merged underneath, like training configs), so the
per-head files share one augmentation/sampling space; a `space` entry set to null is dropped.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ordinalage.config import Config, deep_merge, from_dict, parse_set, read_yaml, set_dotted
from ordinalage.errors import UsageError
from ordinalage.tuning.space import Param, apply_values, check_space, parse_space

# objective metric -> default direction (the per-epoch validation values that fit reports)
METRICS = {"val_mae": "minimize", "val_loss": "minimize", "val_accuracy": "maximize", "val_one_off": "maximize"}
PRUNERS = ("median", "hyperband", "none")
TOP_KEYS = {"study_name", "base_config", "objective", "epochs", "trials", "timeout", "seed", "sampler", "pruner",
            "stop_after_failures", "space"}
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class TuneSpec:
    """A parsed, checked tune file. Plain data, so it travels to worker processes."""

    path: str
    study_name: str
    base: dict[str, Any]  # raw training-config dict (with --set applied); a valid Config
    metric: str = "val_mae"
    direction: str = "minimize"
    epochs: int = 3
    trials: int | None = 20
    timeout: float | None = None
    seed: int = 0
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    stop_after_failures: int = 5
    space: tuple[Param, ...] = ()

    def trial_config(self, values: Mapping[str, Any], run_dir: str | Path, device: str | None = None) -> Config:
        """The training config of one trial: base + parameter values, epochs from the tune file,
        run folder `run_dir`, no test evaluation, the objective metric as the checkpoint monitor."""
        raw = apply_values(self.base, values)
        over: dict[str, Any] = {"train.epochs": self.epochs, "train.out_dir": str(run_dir), "train.eval_on_end": False,
                                "train.monitor": self.metric}
        if device is not None:
            over["train.device"] = device
        raw = apply_values(raw, over)
        return from_dict(Config, raw)

    def best_config(self, values: Mapping[str, Any]) -> Config:
        """The config to train for real: base + the best values (the base's epochs and run folder)."""
        return from_dict(Config, apply_values(self.base, {**values, "train.monitor": self.metric}))


def _int(raw: dict[str, Any], key: str, where: str, default: int | None, minimum: int) -> int | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{where}: '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _resolve_base(value: Any, folder: Path, where: str) -> dict[str, Any]:
    """`base_config:` as a path (relative to the tune file) or an inline mapping with optional `base:`."""
    if value is None:
        return {}
    if isinstance(value, str):
        return read_yaml(folder / value)
    if not isinstance(value, Mapping):
        raise UsageError(f"{where}: 'base_config' must be a training YAML path or a mapping, got {value!r}")
    data = dict(value)
    bases = data.pop("base", None)
    merged: dict[str, Any] = {}
    if bases is not None:
        for b in [bases] if isinstance(bases, str) else list(bases):
            if not isinstance(b, str):
                raise UsageError(f"{where}: base_config.base: expected file names, got {b!r}")
            merged = deep_merge(merged, read_yaml(folder / b))
    return deep_merge(merged, data)


def objective_of(raw: Any, where: str) -> tuple[str, str]:
    """(metric, direction) from `objective:`; a bare metric name works too, `mae` means `val_mae`."""
    if raw is None:
        raw = {}
    if isinstance(raw, str):
        raw = {"metric": raw}
    if not isinstance(raw, Mapping):
        raise UsageError(f"{where}: 'objective' must be a mapping {{metric, direction}}, got {raw!r}")
    extra = sorted(set(raw) - {"metric", "direction"})
    if extra:
        raise UsageError(f"{where}: objective.{extra[0]}: unknown key (metric, direction)")
    metric = str(raw.get("metric", "val_mae"))
    if metric not in METRICS and f"val_{metric}" in METRICS:
        metric = f"val_{metric}"
    if metric not in METRICS:
        raise UsageError(f"{where}: objective.metric: unknown metric {metric!r} ({', '.join(METRICS)})")
    direction = raw.get("direction", METRICS[metric])
    aliases = {"min": "minimize", "max": "maximize"}
    direction = aliases.get(direction, direction)
    if direction not in ("minimize", "maximize"):
        raise UsageError(f"{where}: objective.direction: expected minimize or maximize, got {direction!r}")
    return metric, direction


def check_sampler(raw: Any, where: str) -> dict[str, Any]:
    """TPESampler keyword arguments; `multivariate` and `constant_liar` default to true, set explicitly."""
    import optuna

    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise UsageError(f"{where}: 'sampler' must be a mapping of TPESampler options, got {raw!r}")
    kwargs = {"multivariate": True, "constant_liar": True, **raw}
    allowed = set(inspect.signature(optuna.samplers.TPESampler).parameters) - {"seed", "gamma", "weights",
                                                                               "constraints_func"}
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise UsageError(f"{where}: sampler.{bad[0]}: not a TPESampler option ({', '.join(sorted(allowed))})")
    return kwargs


def check_pruner(raw: Any, where: str) -> dict[str, Any]:
    """`{type: median|hyperband|none, ...options}`; options are checked against the pruner class."""
    import optuna

    if raw is None:
        raw = {"type": "none"}
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, Mapping):
        raise UsageError(f"{where}: 'pruner' must be a mapping {{type: median|hyperband|none, ...}}, got {raw!r}")
    kind = raw.get("type", "median")
    if kind not in PRUNERS:
        raise UsageError(f"{where}: pruner.type: unknown pruner {kind!r} ({', '.join(PRUNERS)})")
    cls = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
           "none": optuna.pruners.NopPruner}[kind]
    options = {k: v for k, v in raw.items() if k != "type"}
    allowed = set(inspect.signature(cls).parameters)
    bad = sorted(set(options) - allowed)
    if bad:
        raise UsageError(f"{where}: pruner.{bad[0]}: not an option of the {kind} pruner "
                         f"({', '.join(sorted(allowed)) or 'none'})")
    return {"type": kind, **options}


def load_tune_spec(path: str | Path, sets: Sequence[str] = (), study_name: str | None = None) -> TuneSpec:
    """Read and check a tune YAML; `sets` (`key=value`) override keys of the base training config."""
    p = Path(path)
    where = str(p)
    raw = read_yaml(p)
    extra = sorted(set(raw) - TOP_KEYS)
    if extra:
        raise UsageError(f"{where}: unknown key '{extra[0]}' (known: {', '.join(sorted(TOP_KEYS))})")
    base = _resolve_base(raw.get("base_config"), p.parent, where)
    for item in sets:
        key, value = parse_set(item)
        base = set_dotted(base, key, value)
    try:
        from_dict(Config, base)
    except UsageError as exc:
        raise UsageError(f"{where}: base_config: {exc}") from None
    name = study_name or raw.get("study_name") or p.stem
    if not isinstance(name, str) or not STUDY_NAME.match(name):
        raise UsageError(f"{where}: study name {name!r}: use letters, digits, '.', '_' and '-' only")
    metric, direction = objective_of(raw.get("objective"), where)
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise UsageError(f"{where}: 'timeout' must be a positive number of seconds, got {timeout!r}")
    space = parse_space(raw.get("space"), where)
    check_space(space, base, where)
    spec = TuneSpec(
        path=where, study_name=name, base=base, metric=metric, direction=direction,
        epochs=_int(raw, "epochs", where, 3, 1),  # type: ignore[arg-type]
        trials=_int(raw, "trials", where, 20, 1),
        timeout=None if timeout is None else float(timeout),
        seed=_int(raw, "seed", where, 0, 0),  # type: ignore[arg-type]
        sampler=check_sampler(raw.get("sampler"), where),
        pruner=check_pruner(raw.get("pruner", {"type": "median"}), where),
        stop_after_failures=_int(raw, "stop_after_failures", where, 5, 0),  # type: ignore[arg-type]
        space=space,
    )
    try:
        make_sampler(spec, spec.seed)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where}: sampler: {exc}") from None
    make_pruner(spec)
    return spec


def make_sampler(spec: TuneSpec, seed: int) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed, **spec.sampler)


def make_pruner(spec: TuneSpec) -> Any:
    import optuna

    options = {k: v for k, v in spec.pruner.items() if k != "type"}
    kind = spec.pruner["type"]
    try:
        if kind == "median":
            return optuna.pruners.MedianPruner(**options)
        if kind == "hyperband":
            return optuna.pruners.HyperbandPruner(**{"max_resource": spec.epochs, **options})
        return optuna.pruners.NopPruner()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{spec.path}: pruner: {exc}") from None
