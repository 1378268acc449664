"""What a study leaves in its folder: `best_config.yaml`, `trials.csv`, `history.png`,
`importances.png`, `summary.json`, and a table of the best trials on stderr."""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ordinalage.config import save_config
from ordinalage.reporting.formatting import short
from ordinalage.tuning.spec import TuneSpec

TOP_N = 5


def _completed(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")


def write_trials_csv(study: Any, spec: TuneSpec, path: Path) -> None:
    """One row per trial: number, state, value, duration, each parameter, reasons, run folder."""
    keys = [p.key for p in spec.space]
    keys += sorted({k for t in study.get_trials(deepcopy=False) for k in t.params} - set(keys))
    cols = ["number", "state", "value", "duration_s", "datetime_start", "datetime_complete", *keys,
            "pruned_at", "fail_reason", "run_dir"]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for t in study.get_trials(deepcopy=False):
            reason = t.user_attrs.get("fail_reason", "")
            if t.state.name == "FAIL" and not reason:
                reason = "worker lost"
            w.writerow({"number": t.number, "state": t.state.name, "value": "" if t.value is None else t.value,
                        "duration_s": "" if t.duration is None else round(t.duration.total_seconds(), 3),
                        "datetime_start": t.datetime_start or "", "datetime_complete": t.datetime_complete or "",
                        **{k: t.params.get(k, "") for k in keys},
                        "pruned_at": t.user_attrs.get("pruned_at", ""), "fail_reason": reason,
                        "run_dir": t.user_attrs.get("run_dir", "")})


def best_table(study: Any, spec: TuneSpec) -> Table:
    """The best completed trials, best first."""
    table = Table(title=f"study {study.study_name}: best trials by {spec.metric} ({spec.direction})")
    table.add_column("trial", justify="right")
    table.add_column(spec.metric, justify="right")
    keys = [p.key for p in spec.space]
    for k in keys:
        table.add_column(k, justify="right")
    table.add_column("seconds", justify="right")
    for t in _completed(study)[:TOP_N]:
        table.add_row(str(t.number), f"{t.value:.4f}", *(short(t.params.get(k, "")) for k in keys),
                      f"{t.duration.total_seconds():.1f}" if t.duration else "")
    return table


def write_plots(study: Any, out: Path, console: Console) -> dict[str, str]:
    """history.png (>= 1 completed trial) and importances.png (>= 2 completed trials, >= 1 parameter)."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    files: dict[str, str] = {}
    done = _completed(study)
    plots = [("history", ovm.plot_optimization_history, 1)]
    if any(t.params for t in done):
        plots.append(("importances", ovm.plot_param_importances, 2))
    for name, plot, need in plots:
        path = out / f"{name}.png"
        if len(done) < need:
            console.print(f"{name}.png skipped: needs {need} completed trial(s), the study has {len(done)}")
            path.unlink(missing_ok=True)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is marked experimental
                ax = plot(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            files[name] = str(path)
        except (RuntimeError, ValueError, ZeroDivisionError) as exc:
            console.print(f"{name}.png skipped: {exc}")
            plt.close("all")
    return files


def write_outputs(study: Any, spec: TuneSpec, out: Path, storage: str, target: int | None,
                  show: bool = True) -> dict[str, Any]:
    """Write every study file and return the summary that `run_tune` hands back."""
    console = Console(stderr=True, quiet=not show)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name.lower() for t in trials)
    files: dict[str, str] = {"trials_csv": str(out / "trials.csv")}
    write_trials_csv(study, spec, out / "trials.csv")
    done = _completed(study)
    best = None
    if done:
        b = done[0]
        best = {"number": b.number, "value": b.value, "params": dict(b.params), "run_dir": b.user_attrs.get("run_dir")}
        save_config(spec.best_config(b.params), out / "best_config.yaml")
        files["best_config"] = str(out / "best_config.yaml")
        console.print(best_table(study, spec))
    else:
        console.print(f"study {study.study_name}: no completed trial yet, so no best_config.yaml")
    files.update(write_plots(study, out, console))
    result = {
        "study_name": study.study_name, "storage": storage, "study_dir": str(out), "target": target,
        "metric": spec.metric, "direction": spec.direction, "n_trials": len(trials),
        "states": {k: states.get(k, 0) for k in ("complete", "pruned", "fail", "running", "waiting")},
        "best": best, "files": files,
    }
    files["summary"] = str(out / "summary.json")
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    if done:
        console.print(f"best trial {best['number']}: {spec.metric} {best['value']:.4f}; train it with: "  # type: ignore[index]
                      f"ordinalage train --config {out / 'best_config.yaml'}")
    return result
