"""Test MAE against wall-clock minutes on UTKFace: the best model for the minutes you have.

    python benchmarks/budget_utkface.py                                   # the full grid (about 16 hours)
    python benchmarks/budget_utkface.py --budgets 5,10 --models recipe --seeds 3
    python benchmarks/budget_utkface.py --report-only                     # JSON, plot and table from finished runs
    python benchmarks/budget_utkface.py --smoke                           # seconds, synthetic faces (tests)

Every run is `ordinalage train` (in this process, through `ordinalage.training.fit`) with
`train.time_budget_min` set to the budget: the run measures its own step time, trains the epochs
that fit and evaluates the test split (split_seed 0, 20%), all inside the budget. Models:

- `jitter4`: configs/experiments/utkface_30min.yaml, the recipe chosen on validation MAE: an
  ensemble of four models (`train.members: 4`), each trained for a quarter of the budget, with the
  random shift/scale/turn on 80% of the training faces (`data.augment.affine_p: 0.8`, which won
  on validation on 2026-12-06; the key is kept for its run folders);
- `recipe4`: the same with `data.augment.affine_p=0.2`, the recipe until 2026-12-06;
- `recipe`: `recipe4` with three models (`train.members=3`; the recipe until 2026-12-05, when
  four members won on validation at 30 minutes);
- `single`: `recipe4`'s settings as one model using the whole budget (`train.members=1`);
- `start`: configs/experiments/utkface_improved.yaml, the best model before time budgets;
- `ordinal`: the single model with the CORAL head (an ordinal head at equal time);
- `ordinal_jitter`: `ordinal` with the recipe's augmentation (`affine_p` 0.8);
- `ordinal_mixup`: `ordinal` with mixup by age (`train.mixup_alpha` 0.4, `train.mixup_sigma` 5
  years), configs/experiments/utkface_30min_one.yaml until 2026-12-06 (2 loader workers);
- `jitter4_mixup`: the recipe (`jitter4`) with the same mixup;
- `ordinal_swa`: `ordinal_mixup` with stochastic weight averaging over the last quarter of the
  epochs (`train.swa_start` 0.75, `train.swa_lr_scale` 0.1);
- `ordinal_mixup_w0`: configs/experiments/utkface_30min_one.yaml, the one-model recipe:
  `ordinal_mixup` with the faces decoded and augmented in the training process
  (`data.num_workers: 0`), which on 2 cores trains more epochs in the same minutes;
- `jitter4_w0`: `jitter4` with `data.num_workers=0`.
The keys measured before 2026-12-06 set `affine_p` 0.2 (and the one-model keys 2 loader workers)
explicitly, so rerunning them repeats what their rows measured.

Each finished run folder is kept and reused, so an interrupted grid continues where it stopped;
a run recorded in the JSON whose folder is gone is reported from the JSON (`--fresh` retrains it).
An ensemble whose members were all trained already as `single` runs (member i of seed s is the
single run of seed s*N+i at budget/N: the same config but for its folder) is assembled from them
(`assembled_from` in its row; its wall time is the members' wall times plus the ensemble's own
evaluation) instead of trained again.
Writes benchmarks/results/budget_utkface.json (every run: budget, seed, epochs, wall seconds,
`budget_used` (the fraction of the budget spent training: wall time from the start to the end of
training over the budget; an ensemble's members summed; the runs re-plan their epochs after every
epoch, so this should be 0.9 or more whatever the machine did during the first minute), the
machine's load average before and after, val and test MAE), docs/img/mae_vs_minutes.png and the
table between the `budget:` markers of docs/results.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import RESULTS, fit_or_reuse, mean_std, parser, write_result  # noqa: E402

from ordinalage.config import load_config  # noqa: E402

EXPERIMENTS = ROOT / "configs" / "experiments"
OLD = {"data.augment.affine_p": 0.2}  # the recipe's augmentation until 2026-12-06 (the rows measured with it)
MIXUP = {"train.mixup_alpha": 0.4, "train.mixup_sigma": 5.0}  # utkface_30min_one.yaml's mixup by age (C-Mixup)
WORKERS2 = {"data.num_workers": 2}  # utkface_30min_one.yaml's loader until 2026-12-06 (the rows measured with it)
MODELS: dict[str, tuple[Path, dict[str, Any]]] = {
    "jitter4": (EXPERIMENTS / "utkface_30min.yaml", {}),
    "jitter4_w0": (EXPERIMENTS / "utkface_30min.yaml", {"data.num_workers": 0}),
    "recipe4": (EXPERIMENTS / "utkface_30min.yaml", dict(OLD)),
    "recipe": (EXPERIMENTS / "utkface_30min.yaml", {"train.members": 3, **OLD}),
    "single": (EXPERIMENTS / "utkface_30min.yaml", {"train.members": 1, **OLD}),
    "start": (EXPERIMENTS / "utkface_improved.yaml", {}),
    "ordinal": (EXPERIMENTS / "utkface_30min.yaml", {"train.members": 1, "model.head": "coral",
                                                     "model.label_sigma": 0.0, **OLD}),
    "ordinal_jitter": (EXPERIMENTS / "utkface_30min.yaml", {"train.members": 1, "model.head": "coral",
                                                            "model.label_sigma": 0.0}),
    "ordinal_mixup": (EXPERIMENTS / "utkface_30min_one.yaml", dict(WORKERS2)),
    "ordinal_mixup_w0": (EXPERIMENTS / "utkface_30min_one.yaml", {}),
    "jitter4_mixup": (EXPERIMENTS / "utkface_30min.yaml", dict(MIXUP)),
    "ordinal_swa": (EXPERIMENTS / "utkface_30min_one.yaml", {"train.swa_start": 0.75, "train.swa_lr_scale": 0.1,
                                                                    **WORKERS2}),
}
LABELS = {"jitter4": "recipe: 4-model ensemble (utkface_30min.yaml)",
          "recipe4": "4 models, affine_p 0.2 (the recipe with milder augmentation)",
          "recipe": "3 models, affine_p 0.2 (--members 3)", "single": "one model, affine_p 0.2",
          "start": "start (utkface_improved.yaml)", "ordinal": "one model, CORAL head, affine_p 0.2",
          "ordinal_jitter": "one model, CORAL head (affine_p 0.8)",
          "ordinal_mixup": "one model: CORAL, affine_p 0.2, mixup, 2 loader workers",
          "jitter4_mixup": "the recipe with mixup (alpha 0.4, sigma 5 years)",
          "ordinal_swa": "one model with mixup and SWA over the last quarter (swa_lr_scale 0.1)",
          "ordinal_mixup_w0": "one model: CORAL, affine_p 0.2, mixup, no loader workers (utkface_30min_one.yaml)",
          "jitter4_w0": "the recipe without loader workers (num_workers 0)"}
BEGIN, END = "<!-- budget:begin -->", "<!-- budget:end -->"


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def run_dir_of(args: Any, model: str, minutes: float, seed: int) -> Path:
    return Path(args.runs) / f"{model}-{minutes:g}min-seed{seed}"


def config_of(args: Any, model: str, minutes: float, seed: int) -> Any:
    config_path, sets = MODELS[model]
    extra = [f"{k}={v}" for k, v in sets.items()] + [f"train.time_budget_min={minutes}", f"train.seed={seed}",
                                                     f"train.out_dir={run_dir_of(args, model, minutes, seed)}",
                                                     *args.set]
    if args.smoke:
        extra += ["data.sources=[synth]", "data.synth_n=240", "data.synth_size=48", "data.image_size=32",
                  "model.width=8", "data.num_workers=0", f"data.cache_dir={args.runs}/cache"]
    return load_config(config_path, sets=extra)


def _tested(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    return summary if summary.get("finished") and "test" in summary else None


def same_but_members(a: str, b: str) -> bool:
    """Models `a` and `b` have the same config file and overrides, `train.members` aside."""
    def rest(m: str) -> tuple[Path, dict[str, Any]]:
        path, sets = MODELS[m]
        return path, {k: v for k, v in sets.items() if k != "train.members"}

    return rest(a) == rest(b)


def assemble(args: Any, model: str, minutes: float, seed: int) -> list[str] | None:
    """Build ensemble run `model` from finished `single` runs of its members' seeds and budget share
    (symbolic links to their folders), then finish it as `ordinalage train --resume` would: the
    members are done, so only the ensemble's evaluation runs. None when a member run is missing."""
    from ordinalage.runs.members import MEMBER_PREFIX
    from ordinalage.runs.rundir import RunDir
    from ordinalage.training.train import train as fit

    config = config_of(args, model, minutes, seed)
    n = config.train.members
    sources = [run_dir_of(args, "single", minutes / n, seed * n + i) for i in range(n)]
    if n < 2 or not same_but_members(model, "single") or not all(_tested(s) for s in sources):
        return None
    run = RunDir(run_dir_of(args, model, minutes, seed))
    run.path.mkdir(parents=True, exist_ok=False)
    run.write_config(config)
    for i, src in enumerate(sources):
        (run.path / f"{MEMBER_PREFIX}{i}").symlink_to(src.resolve(), target_is_directory=True)
    members_wall = sum(float(_tested(s)["wall_seconds"]) for s in sources)  # type: ignore[index]
    run.write_summary({"members": [f"{MEMBER_PREFIX}{i}" for i in range(n)], "finished": False,
                       "wall_seconds": members_wall})
    print(f"[assemble] {run.path.name} from {', '.join(s.name for s in sources)}", file=sys.stderr)
    start = time.perf_counter()
    fit(None, resume=run.path, quiet=True)
    from ordinalage.evaluation.evaluate import evaluate_after_training

    evaluate_after_training(run.path)
    run.update_summary(wall_seconds=members_wall + time.perf_counter() - start,
                       assembled_from=[str(s) for s in sources])
    return [s.name for s in sources]


def budget_used(summary: dict[str, Any], minutes: float) -> float | None:
    """The fraction of the budget a run spent training (summary.json `budget.used`); for an ensemble,
    its members' training seconds summed over the whole budget. None for runs from before it was kept."""
    budget = summary.get("budget") or {}
    if budget.get("used") is not None:
        return round(float(budget["used"]), 4)
    members = [(r.get("budget") or {}).get("seconds_before_test") for r in summary.get("member_runs") or []]
    if members and all(m is not None for m in members):
        return round(sum(float(m) for m in members) / (minutes * 60.0), 4)
    return None


def run_one(args: Any, model: str, minutes: float, seed: int) -> dict[str, Any] | None:
    run_dir = run_dir_of(args, model, minutes, seed)
    recorded = args.recorded.get((model, minutes, seed))
    if recorded is not None and not run_dir.exists() and not args.fresh:
        return {**recorded, "recorded": True}  # measured before; its folder is gone
    fresh = _tested(run_dir) is None
    load_before = _load()
    if fresh and not args.report_only and not run_dir.exists():
        assemble(args, model, minutes, seed)
    summary = fit_or_reuse(run_dir, lambda: config_of(args, model, minutes, seed), args.report_only, run_dir.name)
    if summary is None:
        return None
    if fresh:  # the machine's load around this run, kept with it
        from ordinalage.runs.rundir import RunDir

        summary = RunDir(run_dir).update_summary(load_avg_before=load_before, load_avg_after=_load())
    val = json.loads((run_dir / "val_best.json").read_text())
    budget = summary.get("budget") or {}
    row = {"model": model, "minutes": minutes, "seed": seed, "run_dir": str(run_dir),
           "epochs": summary.get("epochs_done"), "wall_seconds": summary.get("wall_seconds"),
           "within_budget": (summary.get("wall_seconds") or 0) <= minutes * 60,
           "budget_used": budget_used(summary, minutes),
           "stopped_at_deadline": budget.get("stopped_at_deadline"), "step_s": budget.get("step_s"),
           "load_avg_before": summary.get("load_avg_before"), "load_avg_after": summary.get("load_avg_after"),
           "val_mae": val.get("mae"), "test_mae": summary["test"]["mae"]}
    if summary.get("assembled_from"):
        row["assembled_from"] = summary["assembled_from"]
    return row


def recorded_rows(path: Path) -> dict[tuple[str, float, int], dict[str, Any]]:
    """The runs recorded in an earlier JSON, by (model, minutes, seed)."""
    if not path.is_file():
        return {}
    return {(r["model"], float(r["minutes"]), int(r["seed"])): r for r in json.loads(path.read_text()).get("runs", [])}


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["model"], r["minutes"]), []).append(r)
    out = []
    for (model, minutes), rs in sorted(cells.items(), key=lambda kv: (list(MODELS).index(kv[0][0]), kv[0][1])):
        test, val = mean_std([r["test_mae"] for r in rs]), mean_std([r["val_mae"] for r in rs])
        used = [r["budget_used"] for r in rs if r.get("budget_used") is not None]
        out.append({"model": model, "minutes": minutes, "seeds": [r["seed"] for r in rs], "n": len(rs),
                    "test_mae_mean": round(test["mean"], 3), "test_mae_std": round(test["std"], 3),
                    "val_mae_mean": round(val["mean"], 3), "epochs": [r["epochs"] for r in rs],
                    "wall_minutes_max": round(max(r["wall_seconds"] or 0 for r in rs) / 60, 2),
                    "budget_used_min": round(min(used), 3) if used else None,
                    "budget_used_mean": round(sum(used) / len(used), 3) if used else None})
    return out


def published_start() -> dict[str, Any] | None:
    """The start model as published (8 epochs, no budget, flip TTA; 3 seeds), from improve_utkface.json."""
    path = RESULTS / "improve_utkface.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    tta = (doc.get("seeds") or {}).get("combined + flip TTA")
    walls = [r["wall_seconds"] for r in doc.get("runs_combined", []) if r.get("wall_seconds")]
    if not tta or not walls:
        return None
    return {"minutes": round(sum(walls) / len(walls) / 60, 2), "test_mae_mean": round(tta["mae"]["mean"], 3),
            "test_mae_std": round(tta["mae"]["std"], 3), "n": len(tta["seeds"]),
            "source": "benchmarks/results/improve_utkface.json (combined + flip TTA; minutes without the TTA pass)"}


def _seeds_label(cells: list[dict[str, Any]]) -> str:
    """'n=3', or 'n=2-3' when the cells of one line have different numbers of seeds."""
    low, high = min(c["n"] for c in cells), max(c["n"] for c in cells)
    return f"n={high}" if low == high else f"n={low}-{high}"


def plot(cells: list[dict[str, Any]], path: Path, start: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in MODELS:
        cs = [c for c in cells if c["model"] == model]
        if cs:
            ax.errorbar([c["minutes"] for c in cs], [c["test_mae_mean"] for c in cs],
                        yerr=[c["test_mae_std"] for c in cs], marker="o", capsize=3,
                        label=f"{LABELS[model]} ({_seeds_label(cs)})")
    if start is not None:
        ax.errorbar([start["minutes"]], [start["test_mae_mean"]], yerr=[start["test_mae_std"]], marker="s",
                    linestyle="none", color="grey", capsize=3,
                    label=f"start as published, 8 epochs, no budget (n={start['n']})")
    ax.set_xlabel("wall-clock budget, minutes (training + test evaluation, 2-core CPU)")
    ax.set_ylabel("UTKFace test MAE (years)")
    ax.set_title("Test MAE against minutes (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_docs(path: Path, cells: list[dict[str, Any]], rows: list[dict[str, Any]], command: str,
               start: dict[str, Any] | None = None) -> None:
    lines = [BEGIN, "", "Reproduce: `" + command + "` (JSON: `benchmarks/results/budget_utkface.json`).", "",
             "| model | budget (min) | seeds | epochs | test MAE (mean ± std) | val MAE | longest run (min) "
             "| budget used (lowest) |",
             "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        epochs = ", ".join("+".join(map(str, e)) if isinstance(e, list) else str(e) for e in c["epochs"])
        used = f"{c['budget_used_min']:.0%}" if c.get("budget_used_min") is not None else ""
        lines.append(f"| {LABELS[c['model']]} | {c['minutes']:g} | {c['n']} | {epochs} | "
                     f"**{c['test_mae_mean']:.2f} ± {c['test_mae_std']:.2f}** | {c['val_mae_mean']:.2f} | "
                     f"{c['wall_minutes_max']:.1f} | {used} |")
    if start is not None:
        lines.append(f"| start as published (utkface_improved.yaml, 8 epochs, no budget) | {start['minutes']:.1f} "
                     f"| {start['n']} | 8 | **{start['test_mae_mean']:.2f} ± {start['test_mae_std']:.2f}** | | "
                     f"{start['minutes']:.1f} | |")
    loads = [r["load_avg_before"] for r in rows if r.get("load_avg_before") is not None]
    if loads:
        lines += ["", f"Machine load (1-minute load average before each run): {min(loads):.2f}-{max(loads):.2f} "
                      "on 2 cores."]
    lines += ["", "![test MAE against minutes](img/mae_vs_minutes.png)", "", END]
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + "\n".join(lines) + rest.split(END, 1)[1]
    else:
        text += "\n" + "\n".join(lines) + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--budgets", default="5,10,20,30", help="minutes, comma-separated")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--runs", default=str(ROOT / "benchmarks" / "runs" / "budget_utkface"))
    p.add_argument("--set", action="append", default=[], help="extra config override for every run")
    p.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
    p.add_argument("--smoke", action="store_true", help="synthetic faces and tiny budgets (for the tests)")
    p.add_argument("--fresh", action="store_true", help="retrain runs that the JSON records but whose folders are gone")
    p.add_argument("--docs", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "mae_vs_minutes.png"))
    args = p.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",") if b]
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        p.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    recorded = Path(args.json) if args.json else None if args.smoke else RESULTS / "budget_utkface.json"
    args.recorded = recorded_rows(recorded) if recorded else {}
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):  # every cell gets a first seed before any gets a third
        for minutes in budgets:
            for model in models:
                row = run_one(args, model, minutes, seed)
                if row is not None:
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr)
    if not rows:
        print("no finished run to report", file=sys.stderr)
        return 2
    cells = aggregate(rows)
    shown = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report-only"]
    command = "python benchmarks/budget_utkface.py " + " ".join(shown)  # what trains these runs
    settings = {"budgets": budgets, "seeds": args.seeds, "set": args.set, "smoke": args.smoke}
    write_result("budget_utkface", {"settings": settings, "budgets": budgets, "models": {m: str(MODELS[m][0].relative_to(ROOT))
                                                                   + (f" + {MODELS[m][1]}" if MODELS[m][1] else "")
                                                                   for m in models},
                                    "cells": cells, "runs": rows,
                                    "start_as_published": None if args.smoke else published_start()}, args.json)
    if not args.smoke:
        start = published_start()
        plot(cells, Path(args.plot), start)
        write_docs(Path(args.docs), cells, rows, command, start)
    else:
        plot(cells, Path(args.runs) / "mae_vs_minutes.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
