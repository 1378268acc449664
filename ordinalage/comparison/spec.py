"""What a bake-off compares: methods (a grid over config keys, or named settings) x seeds x folds x
datasets, each cell one ordinary run. Parsed from flags and/or a YAML file (configs/bakeoff/*.yaml):

    run_config: configs/experiments/utkface_bakeoff.yaml   # every cell's base config (optional)
    data: [utkface:../shared/data/UTKFace]                   # one or more datasets, compared apart
    seeds: 3                                                 # train.seed 0..N-1
    budget: 10m                                              # equal minutes per cell (or epochs: N)
    set: [data.num_workers=auto]                             # fixed for every cell
    rope: 0.1                                                # years: practical equivalence (--rope)
    age_mix: test                                            # test | uniform | FILE (--age-mix)
    grid: {model.head: [class, coral, corn, regression]}     # the product of the listed values
    methods:                                                 # and/or named settings
      class_dldl: {model.head: class, model.label_sigma: 2.0}

Every cell's config is built and validated before anything trains: an unknown key or value is an
error naming it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ordinalage.config import Config, load_config, parse_set, read_yaml
from ordinalage.errors import UsageError
from ordinalage.protocols import parse_protocol
from ordinalage.training.budget import parse_budget
from ordinalage.training.choices import validate

SPEC_KEYS = ("run_config", "data", "seeds", "budget", "epochs", "set", "grid", "methods", "rope", "age_mix")
DEFAULT_ROPE = 0.1  # years: differences smaller than this are practically nothing


@dataclass(frozen=True)
class Method:
    """One compared setting: a name and the config keys it sets."""

    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Cell:
    """One run of the bake-off: a method on one dataset, fold and seed."""

    method: Method
    dataset: str
    fold: int
    seed: int

    @property
    def id(self) -> str:
        return f"{_slug(self.method.name)}--{_slug(self.dataset)}--f{self.fold}-s{self.seed}"

    @property
    def block(self) -> tuple[str, int, int]:
        """The key that pairs cells of different methods: the same dataset, fold and seed."""
        return (self.dataset, self.fold, self.seed)


@dataclass(frozen=True)
class BakeoffSpec:
    methods: tuple[Method, ...]
    datasets: tuple[str, ...]
    seeds: int
    budget_min: float | None = None
    epochs: int | None = None
    run_config: str | None = None
    sets: tuple[str, ...] = ()
    folds: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    rope: float = DEFAULT_ROPE  # how the verdicts are read; not part of what the cells train
    age_mix: str = "test"

    def cells(self) -> list[Cell]:
        """Every cell, datasets outermost, then folds, seeds and methods (so that early cells pair up)."""
        return [Cell(m, d, f, s) for d in self.datasets for f in range(self.folds) for s in range(self.seeds)
                for m in self.methods]

    def cell_config(self, cell: Cell, out: Path) -> Config:
        """The validated config of one cell, its run folder `out / cell.id`."""
        overrides: dict[str, Any] = {"data.sources": [cell.dataset], "train.seed": cell.seed,
                                     "data.fold": cell.fold, "train.out_dir": str(out / cell.id)}
        if self.budget_min is not None:
            overrides["train.time_budget_min"] = self.budget_min
        if self.epochs is not None:
            overrides["train.epochs"] = self.epochs
            overrides["train.time_budget_min"] = None
        overrides.update(cell.method.params)
        where = f"bake-off method {cell.method.name!r}"
        try:
            config = validate(load_config(self.run_config, overrides, list(self.sets)))
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
        # a cell trains one model and is evaluated on its test split by the bake-off itself
        return config

    def to_dict(self) -> dict[str, Any]:
        return {"methods": {m.name: m.params for m in self.methods}, "data": list(self.datasets),
                "seeds": self.seeds, "folds": self.folds, "budget_min": self.budget_min, "epochs": self.epochs,
                "run_config": self.run_config, "set": list(self.sets)}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:60] or "x"


def parse_grid_flag(item: str) -> tuple[str, list[Any]]:
    """`KEY=V1,V2` -> (KEY, [V1, V2]) with each value parsed as YAML (numbers, booleans, null)."""
    key, sep, values = item.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise UsageError(f"grid {item!r}: expected KEY=V1,V2,... e.g. model.head=class,coral,corn", option="grid")
    parsed = []
    for text in values.split(","):
        try:
            parsed.append(yaml.safe_load(text.strip()))
        except yaml.YAMLError:
            parsed.append(text.strip())
    return key, parsed


def grid_methods(grid: Mapping[str, Sequence[Any]]) -> list[Method]:
    """The product of the grid's values; a method is named by its values (`coral`, `coral,weighted`)."""
    if not grid:
        return []
    keys = list(grid)
    for key in keys:
        values = grid[key]
        if not isinstance(values, (list, tuple)) or not values:
            raise UsageError(f"bake-off grid key {key!r}: expected a non-empty list of values")
    methods = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        name = ",".join(_value_text(v) for v in combo) if len(keys) > 1 else _value_text(combo[0])
        methods.append(Method(name, dict(zip(keys, combo, strict=True))))
    return methods


def _value_text(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """A bake-off YAML file as a plain dict; unknown top-level keys are errors naming the file."""
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise UsageError(f"{path}: unknown bake-off key(s) {', '.join(unknown)} (known: {', '.join(SPEC_KEYS)})")
    run_config = raw.get("run_config")
    if run_config is not None:  # relative to the repository root or to the bake-off file
        candidate = Path(run_config)
        if not candidate.is_file() and (Path(path).parent / candidate).is_file():
            raw["run_config"] = str(Path(path).parent / candidate)
    return raw


def build_spec(*, config: str | Path | None = None, grid: Sequence[str] = (), seeds: int | None = None,
               data: Sequence[str] = (), budget: str | float | None = None, epochs: int | None = None,
               sets: Sequence[str] = (), methods: Mapping[str, Mapping[str, Any]] | None = None,
               run_config: str | None = None, rope: float | str | None = None,
               age_mix: str | None = None) -> BakeoffSpec:
    """The bake-off from a YAML file and flags (flags win; `--grid` and `--set` add to the file's)."""
    raw = read_spec_file(config) if config else {}
    file_grid = raw.get("grid") or {}
    if not isinstance(file_grid, dict):
        raise UsageError(f"{config}: 'grid' must map config keys to lists of values")
    merged_grid: dict[str, list[Any]] = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in file_grid.items()}
    for item in grid:
        key, values = parse_grid_flag(item)
        merged_grid[key] = values
    named = dict(raw.get("methods") or {})
    named.update(methods or {})
    all_methods = grid_methods(merged_grid)
    for name, params in named.items():
        if not isinstance(params, dict):
            raise UsageError(f"bake-off method {name!r}: expected a mapping of config keys to values")
        all_methods.append(Method(str(name), dict(params)))
    if not all_methods:
        raise UsageError("bake-off: nothing to compare; give `grid` KEY=V1,V2 or methods in `config`", option="grid")
    names = [m.name for m in all_methods]
    if len(set(names)) != len(names):
        raise UsageError(f"bake-off: two methods share a name ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
    if len(all_methods) < 2:
        raise UsageError(f"bake-off: only one method ({names[0]}); a comparison needs at least two")
    datasets = tuple(data) or tuple(_as_list(raw.get("data")))
    if not datasets:
        raise UsageError("bake-off: no dataset; give `data` SPEC (or data: in `config`)", option="data")
    n_seeds = seeds if seeds is not None else int(raw.get("seeds", 1))
    if n_seeds < 1:
        raise UsageError(f"seeds {n_seeds}: must be at least 1", option="seeds")
    if budget is not None and epochs is not None:
        raise UsageError("give `budget` or `epochs`, not both", option="budget")
    if budget is None and epochs is None:
        budget, epochs = raw.get("budget"), raw.get("epochs")
    try:
        budget_min = parse_budget(budget) if budget is not None else None
    except UsageError as exc:  # the message names `budget`; the error says which option it is
        raise UsageError(str(exc), option="budget") from None
    if epochs is not None and int(epochs) < 1:
        raise UsageError(f"epochs {epochs}: must be at least 1", option="epochs")
    all_sets = tuple(_as_list(raw.get("set"))) + tuple(sets)
    for item in all_sets:
        parse_set(item)  # a malformed item is an error naming it
    spec = BakeoffSpec(methods=tuple(all_methods), datasets=datasets, seeds=n_seeds, budget_min=budget_min,
                       epochs=int(epochs) if epochs is not None else None,
                       run_config=run_config or raw.get("run_config"), sets=all_sets,
                       rope=parse_rope(rope if rope is not None else raw.get("rope", DEFAULT_ROPE)),
                       age_mix=str(age_mix or raw.get("age_mix") or "test"))
    return _with_folds(spec)


def parse_rope(value: Any) -> float:
    """The region of practical equivalence in years: a number >= 0 (0: no equivalence verdicts)."""
    try:
        rope = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"rope {value!r}: expected a number of years >= 0, e.g. 0.1", option="rope") from None
    if not (rope >= 0 and rope != float("inf")):
        raise UsageError(f"rope {value!r}: expected a number of years >= 0, e.g. 0.1", option="rope")
    return rope


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _with_folds(spec: BakeoffSpec) -> BakeoffSpec:
    """The number of folds from `data.protocol` of the first cell (folds:K / faeb folds); 1 otherwise."""
    probe = spec.cell_config(Cell(spec.methods[0], spec.datasets[0], 0, 0), Path("."))
    protocol = parse_protocol(probe.data.protocol)
    if protocol.kind in ("random", "subject"):
        return spec
    if protocol.fixed_folds is None:
        raise UsageError(f"config key 'data.protocol': {probe.data.protocol!r} has one fold per subject or source; "
                         "a bake-off needs a fixed number of folds (folds:K)")
    from dataclasses import replace

    return replace(spec, folds=int(protocol.fixed_folds))


def check_cells(spec: BakeoffSpec, out: Path) -> list[Cell]:
    """Every cell's config built and validated (errors name the method and key) before any training."""
    cells = spec.cells()
    for cell in cells:
        spec.cell_config(cell, out)
    return cells
