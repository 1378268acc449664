"""The Python API for notebooks and scripts: `fit`, `evaluate`, `Run` (and `load` for inference).

    import ordinalage
    run = ordinalage.fit("configs/experiments/utkface_improved.yaml", epochs=2, head="corn")
    metrics = ordinalage.evaluate(run, split="test", interval=0.9)
    est = run.load()                      # an AgeEstimator: est.predict("photo.jpg")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ordinalage.config import SHORT_KEYS, Config, load_config, set_dotted, to_dict
from ordinalage.config import config_from_dict as _from_dict
from ordinalage.errors import UsageError
from ordinalage.training.choices import validate


@dataclass(frozen=True)
class Run:
    """A run folder: its config, per-epoch metrics, summary and model. The Run of a folds run's
    first fold (`ordinalage.fit` of a folds:K, loso or source protocol) lists every fold's Run in
    `folds` (empty otherwise) and their test metrics, mean +- std in `cross_validation`."""

    path: Path
    folds: tuple[Run, ...] = ()

    @property
    def cross_validation(self) -> dict[str, Any] | None:
        """folds.json of the folds run this Run is the first fold of (None for a single run): a row
        per fold with its test metrics, and their mean +- std under `summary`."""
        from ordinalage.runs.rundir import read_json_object

        return read_json_object(self.path.parent / "folds.json") if self.folds else None

    @property
    def config(self) -> Config:
        return load_config(self.path / "config.yaml")

    @property
    def summary(self) -> dict[str, Any]:
        from ordinalage.runs.rundir import RunDir

        return RunDir(self.path).read_summary()

    @property
    def metrics(self) -> list[dict[str, str]]:
        """metrics.csv rows (one per epoch)."""
        from ordinalage.runs.rundir import RunDir

        return RunDir(self.path).read_metrics()

    def evaluate(self, **kwargs: Any) -> dict[str, Any]:
        return evaluate(self, **kwargs)

    def load(self, **kwargs: Any) -> Any:
        """The trained model as an `AgeEstimator` (`ordinalage.load`)."""
        from ordinalage.inference.api import load

        return load(self.path, **kwargs)


def _key(name: str) -> str:
    if name in SHORT_KEYS:
        return SHORT_KEYS[name]
    if "__" in name:
        return name.replace("__", ".")
    raise UsageError(f"override {name!r}: use a short name ({', '.join(SHORT_KEYS)}) or section__key, "
                     "e.g. train__lr=0.001")


def _value(name: str, value: Any) -> Any:
    """`data` takes one spec or several; `budget` minutes or '30m'; every other override is passed as given."""
    if name == "budget":
        from ordinalage.training.budget import parse_budget

        return parse_budget(value)
    if name != "data":
        return value
    return [value] if isinstance(value, str) else list(value)


def fit(config: Config | str | Path | None = None, *, quiet: bool = False, **overrides: Any) -> Run:
    """Train: `config` is a Config, a YAML path or None (defaults); keyword overrides as
    `head="corn"`, `epochs=2` or `train__lr=0.001` (section__key). Returns the finished Run.

    A protocol with several folds (`data.protocol` folds:K or loso, or a source's own folds) trains
    every fold like `ordinalage train`: `<out>/fold-<i>` each, each evaluated on its own test part,
    and `<out>/folds.json`. The Run returned is then fold 0's (its config, metrics, summary and
    model work as for any run), with every fold's Run in `run.folds` and folds.json (each fold's
    test metrics and their mean +- std) in `run.cross_validation`."""
    from ordinalage.training.folds import is_folds_run
    from ordinalage.training.train import train

    dotted = {_key(k): _value(k, v) for k, v in overrides.items()}
    if isinstance(config, Config):
        raw = to_dict(config)
        for key, value in dotted.items():
            raw = set_dotted(raw, key, value)
        cfg = validate(_from_dict(raw))
    else:
        cfg = load_config(config, dotted)

    def evaluate_fold(run_dir: Path) -> dict[str, Any]:  # what cross-validation reports, as the CLI does
        from ordinalage.evaluation.evaluate import evaluate_after_training

        return evaluate_after_training(run_dir, show=False, device=cfg.train.device, force=True) or {}

    path = Path(train(cfg, quiet=quiet, all_folds=True, evaluate_fold=evaluate_fold))
    if not is_folds_run(path):
        return Run(path)
    from ordinalage.runs.rundir import read_json_object

    folds = tuple(Run(Path(row["run_dir"])) for row in read_json_object(path / "folds.json")["folds"])
    return Run(folds[0].path, folds=folds)


def distill(teacher: Run | str | Path, *, budget: str | float | None = None, epochs: int | None = None,
            out: str | Path | None = None, seed: int | None = None, temperature: float = 1.0, alpha: float = 0.0,
            quiet: bool = False, **overrides: Any) -> Run:
    """One model trained on `teacher`'s distributions (`ordinalage distill`): `budget` as "10m" or
    minutes, or `epochs`; keyword overrides as in `fit` (`train__lr=0.001`). Returns the finished Run."""
    from ordinalage.distillation import distill as _distill
    from ordinalage.training.budget import parse_budget

    minutes = parse_budget(budget) if isinstance(budget, str) else budget
    dotted = {_key(k): _value(k, v) for k, v in overrides.items()}
    path = teacher.path if isinstance(teacher, Run) else teacher
    return Run(Path(_distill(path, budget_min=minutes, epochs=epochs, out=out, seed=seed, temperature=temperature,
                             alpha=alpha, overrides=dotted, quiet=quiet)))


def evaluate(run: Run | str | Path, data: str | Sequence[str] | None = None, split: str = "test",
             show: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Evaluate a run (or checkpoint) on `split` of its own data or of `data`; returns the metrics
    dict (the keys of metrics.json). Keyword arguments as `evaluate_run` (prior, interval, ...)."""
    from ordinalage.evaluation.evaluate import evaluate_run

    target = run.path if isinstance(run, Run) else Path(run)
    return evaluate_run(target, data=[data] if isinstance(data, str) else data, split=split, show=show, **kwargs)


def bakeoff(grid: Mapping[str, Sequence[Any]] | Sequence[str] | None = None, *, seeds: int | None = None,
            data: str | Sequence[str] | None = None, budget: str | float | None = None, epochs: int | None = None,
            out: str | Path = "bakeoffs/bakeoff", config: str | Path | None = None, sets: Sequence[str] = (),
            methods: Mapping[str, Mapping[str, Any]] | None = None, workers: int = 1, storage: str | None = None,
            quiet: bool = False, rope: float | None = None, age_mix: str | None = None) -> dict[str, Any]:
    """Compare methods on the same faces (`ordinalage bakeoff`); returns bakeoff.json's dict.

        ordinalage.bakeoff(grid={"model.head": ["class", "coral"]}, seeds=3, data="synth", budget="2m")

    `grid` maps config keys to values (their product is compared) or is a list of `KEY=V1,V2`
    strings; `methods` adds named settings; `config` is a bake-off YAML (configs/bakeoff/). `rope`
    (years, default 0.1) and `age_mix` ("test", "uniform" or a file) set how the verdicts are read."""
    from ordinalage.comparison.bakeoff import run_bakeoff
    from ordinalage.comparison.spec import build_spec

    if isinstance(grid, Mapping):
        flags = [f"{k}={','.join(map(str, v))}" for k, v in grid.items()]
    else:
        flags = list(grid or [])
    datasets = [data] if isinstance(data, str) else list(data or [])
    spec = build_spec(config=config, grid=flags, seeds=seeds, data=datasets, budget=budget, epochs=epochs,
                      sets=sets, methods=methods, rope=rope, age_mix=age_mix)
    return run_bakeoff(spec, out, workers=workers, storage=storage, show=not quiet,
                       command=f"ordinalage.bakeoff(grid={dict(grid) if isinstance(grid, Mapping) else grid!r}, "
                               f"seeds={seeds!r}, data={data!r}, budget={budget!r}, epochs={epochs!r})")
