"""Every fold of a `folds:K`, `loso` or `source` protocol: one training run per fold, then one
`folds.json` with a row per fold and the mean +- std of every metric.

`run_folds(config, fit_fn)` calls `fit_fn(config with data.fold=i and train.out_dir=<base>/fold-<i>)`
for each fold; a fold whose run folder already holds a finished `summary.json` is reused and one
with a last.pt but no finished summary (interrupted, or stopped by a preemption signal, mid-epoch
even) is resumed (`resume_fn`), so an interrupted 82-fold LOSO run continues where it stopped.
The folds' config is kept as `<base>/folds-config.yaml`: `ordinalage train --resume <base>` reads
it. A preemption signal in a fold is raised again (`TrainingPreempted`) naming `<base>` and the fold.
The fold's metrics are those `evaluate_fn` returns for its run folder (the caller decides how to
evaluate), else the `test` block of its summary. `training.train.train(config, all_folds=True)`
runs it for `ordinalage train` and `ordinalage.fit` alike.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.config import Config, load_config, replace, save_config
from ordinalage.errors import UsageError
from ordinalage.runs.rundir import FOLDS_CONFIG, RunDir, write_json

FitFn = Callable[[Config], Path]
ResumeFn = Callable[[Path], Path]
EvaluateFn = Callable[[Path], dict[str, Any]]
#: the folds' config in their base folder (what `ordinalage train --resume <base>` continues)


def saved_folds_config(base: str | Path) -> Config | None:
    """The config a folds run kept in `base` (None when `base` is not the folder of a folds run)."""
    path = Path(base) / FOLDS_CONFIG
    return load_config(path) if path.is_file() else None


def is_folds_run(folder: str | Path) -> bool:
    """True when `folder` is the base folder of a folds run (it holds the folds' config)."""
    return (Path(folder) / FOLDS_CONFIG).is_file()


def folds_to_run(config: Config) -> int | None:
    """The number of folds `training.train.train` runs one after the other (folds:K, loso, or a
    source's own folds when it has several), or None for a single split; the data is read only
    when the protocol needs it."""
    from ordinalage.data.prepare import fold_count
    from ordinalage.data.splits import parse_protocol

    kind = parse_protocol(config.data.protocol).kind
    if kind in ("random", "subject"):
        return None
    n = fold_count(config.data)
    return n if kind in ("folds", "loso") or n > 1 else None


def _resume(run_dir: Path) -> Path:
    from ordinalage.training.ensemble import train_run

    return train_run(None, resume=run_dir)


def _read_summary(run_dir: Path) -> dict[str, Any]:
    return RunDir(run_dir).read_summary(tolerant=True)  # a broken fold summary means: train it again


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite scalar metrics (MAE, accuracy, ...) of an evaluation result."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def mean_std(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{metric: {mean, std, n}} over the rows that have it (std: sample std, ddof=1; 0 for one row)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    keys = sorted({k for r in rows for k, v in r.items() if k != "fold" and number(v)})
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        values = np.array([r[key] for r in rows if number(r.get(key))], dtype=float)
        out[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "n": int(len(values))}
    return out


def base_dir(config: Config) -> Path:
    """`train.out_dir`, else runs/<head>-<backbone>-folds-<time>."""
    if config.train.out_dir:
        return Path(config.train.out_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.model.head}-{config.model.backbone}-folds-{stamp}"


def run_folds(config: Config, fit_fn: FitFn, evaluate_fn: EvaluateFn | None = None,
              n_folds: int | None = None, quiet: bool = False, resume_fn: ResumeFn | None = None) -> dict[str, Any]:
    """Train every fold of `config.data.protocol`; write and return folds.json's content.

    `resume_fn(run_dir)` continues a fold that holds a last.pt (default: `training.ensemble.train_run`)."""
    from ordinalage.training.preemption import TrainingPreempted

    if n_folds is None:
        from ordinalage.data.prepare import fold_count

        n_folds = fold_count(config.data)
    if n_folds < 1:
        raise UsageError(f"data.protocol {config.data.protocol!r}: no folds on {', '.join(config.data.sources)}")
    base = base_dir(config)
    base.mkdir(parents=True, exist_ok=True)
    save_config(replace(config, train=replace(config.train, out_dir=str(base))), base / FOLDS_CONFIG)
    rows: list[dict[str, Any]] = []
    for fold in range(n_folds):
        run_dir = base / f"fold-{fold}"
        summary = _read_summary(run_dir)
        reused = bool(summary.get("finished"))
        if not reused:
            fold_config = replace(config, data=replace(config.data, fold=fold),
                                  train=replace(config.train, out_dir=str(run_dir)))
            partial = RunDir(run_dir).last_pt.is_file()
            if not quiet:
                print(f"ordinalage: fold {fold + 1}/{n_folds} ({config.data.protocol}) -> {run_dir}"
                      + (" (resuming)" if partial else ""), file=sys.stderr)
            try:
                run_dir = Path((resume_fn or _resume)(run_dir) if partial else fit_fn(fold_config))
            except TrainingPreempted as exc:
                raise TrainingPreempted(base, exc.epoch, exc.step, exc.signal_name,
                                        where=f"fold-{fold}" + (f" {exc.where}" if exc.where else "")) from None
            summary = _read_summary(run_dir)
        metrics = evaluate_fn(run_dir) if evaluate_fn is not None else summary.get("test", {})
        row: dict[str, Any] = {"fold": fold, "run_dir": str(run_dir), "reused": reused}
        if isinstance(summary.get("best_value"), (int, float)):
            row[f"best_{summary.get('monitor', 'val')}"] = float(summary["best_value"])
        row.update(_numbers(metrics or {}))
        rows.append(row)
    result = {"protocol": config.data.protocol, "sources": list(config.data.sources), "n_folds": n_folds,
              "folds": rows, "summary": mean_std(rows)}
    write_json(base / "folds.json", result)
    if not quiet:
        for key in ("mae", "accuracy"):
            if key in result["summary"]:
                s = result["summary"][key]
                print(f"ordinalage: {n_folds} folds: {key} {s['mean']:.3f} +- {s['std']:.3f}", file=sys.stderr)
        print(f"ordinalage: wrote {base / 'folds.json'}", file=sys.stderr)
    return result
