"""A distilled student against its teacher and against a plain model of equal minutes, on UTKFace.

    python benchmarks/distill_utkface.py --teacher benchmarks/runs/recipe30_burst --budget 10 --seeds 0,1,2
    python benchmarks/distill_utkface.py --teacher RUN --temperatures 1,2 --seeds 0     # choose T on validation
    python benchmarks/distill_utkface.py --teacher RUN --report-only                    # JSON from finished runs
    python benchmarks/distill_utkface.py --teacher RUN --budget 30 --runs benchmarks/runs/distill_utkface_30 \
        --json benchmarks/results/distill_utkface_30.json                                # 30-minute students

Each student is `ordinalage distill TEACHER --budget B --seed S --temperature T` (in this process):
the teacher's pass over the training images and the student's training share the budget, and the
student is tested on the teacher's test split at one forward pass per face (no TTA). The plain
model (`--plain`) is the teacher's member config as one class-head model with the same budget and
seed, trained from the true ages alone (the teacher's config.yaml with `train.members=1`, also
tested without TTA). Differences are paired per test image
(`ordinalage.evaluation.paired`: bootstrap CI over images, each student seed paired with the one
teacher and with the plain model of its seed). Finished run folders under
benchmarks/runs/distill_utkface/ are reused. Writes benchmarks/results/distill_utkface.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import mean_std, parser, write_result  # noqa: E402

from ordinalage.config import load_config  # noqa: E402
from ordinalage.evaluation.compare import test_predictions_csv  # noqa: E402
from ordinalage.evaluation.predictions import read_abs_errors  # noqa: E402
from ordinalage.runs.rundir import RunDir  # noqa: E402

RUNS = ROOT / "benchmarks" / "runs" / "distill_utkface"


def test_errors(run_dir: Path) -> dict[str, float]:
    """{image path: absolute error} of the run's test evaluation (with flip TTA when its config evaluates so)."""
    return read_abs_errors(test_predictions_csv(run_dir))


def row_of(run_dir: Path, **extra: Any) -> dict[str, Any]:
    summary = RunDir(run_dir).read_summary()
    budget = summary.get("budget") or {}
    run_dir = run_dir.resolve()
    return {"run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
            "val_mae": summary.get("best_value"), "test_mae": (summary.get("test") or {}).get("mae"),
            "epochs": summary.get("epochs_done"), "budget_used": budget.get("used"), "n_test": summary.get("n_test"),
            "wall_seconds": summary.get("wall_seconds"), **extra}


def finished(run_dir: Path) -> bool:
    summary = RunDir(run_dir).read_summary(tolerant=True)
    return bool(summary.get("finished")) and "test" in summary


def run_student(teacher: Path, budget: float, seed: int, temperature: float, report_only: bool,
                runs: Path = RUNS) -> dict[str, Any] | None:
    import shutil

    from ordinalage.distillation import distill
    from ordinalage.evaluation.evaluate import evaluate_after_training

    out = runs / f"student-T{temperature:g}-s{seed}"
    if not finished(out):
        if report_only:
            return None
        if out.exists():
            shutil.rmtree(out)
        print(f"[distill] T={temperature:g} seed {seed} -> {out}", file=sys.stderr)
        start = time.perf_counter()
        distill(teacher, budget_min=budget, out=out, seed=seed, temperature=temperature)
        evaluate_after_training(out)
        RunDir(out).update_summary(wall_seconds=time.perf_counter() - start)
    return row_of(out, kind="student", seed=seed, temperature=temperature)


def run_plain(teacher: Path, budget: float, seed: int, report_only: bool, runs: Path = RUNS) -> dict[str, Any] | None:
    """One model of the teacher's config (its member config, one model) trained on the true ages."""
    from common import fit_or_reuse

    out = runs / f"plain-s{seed}"

    def make() -> Any:
        return load_config(teacher / "config.yaml", {"train.members": 1, "train.time_budget_min": budget,
                                                     "train.seed": seed, "train.eval_tta": False,
                                                     "train.out_dir": str(out)})

    if fit_or_reuse(out, make, report_only, f"plain seed {seed}") is None:
        return None
    return row_of(out, kind="plain", seed=seed)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="the teacher's run folder (an ensemble's folder)")
    p.add_argument("--budget", type=float, default=10.0, help="minutes per student (and per plain model)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--temperatures", default="1")
    p.add_argument("--plain", action="store_true", help="also train the plain model of each seed")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--runs", type=Path, default=RUNS, help="folder of the students' and plain models' runs")
    args = p.parse_args(argv)
    from ordinalage.evaluation.paired import paired_comparison

    teacher = Path(args.teacher)
    seeds = [int(s) for s in args.seeds.split(",")]
    temps = [float(t) for t in args.temperatures.split(",")]
    teacher_row = row_of(teacher, kind="teacher")
    rows: list[dict[str, Any]] = []
    for t in temps:
        for s in seeds:
            r = run_student(teacher, args.budget, s, t, args.report_only, args.runs)
            if r is not None:
                rows.append(r)
    plain = {s: run_plain(teacher, args.budget, s, args.report_only, args.runs) for s in seeds} if args.plain else {}
    rows += [r for r in plain.values() if r is not None]
    cells, comparisons = [], []
    teacher_errors = test_errors(teacher)
    for t in temps:
        students = [r for r in rows if r["kind"] == "student" and r["temperature"] == t]
        if not students:
            continue
        cells.append({"kind": "student", "temperature": t, "n": len(students),
                      "seeds": [r["seed"] for r in students],
                      "test_mae": mean_std([r["test_mae"] for r in students]),
                      "val_mae": mean_std([r["val_mae"] for r in students]),
                      "budget_used": [r["budget_used"] for r in students]})
        blocks = [test_errors(ROOT / r["run_dir"]) for r in students]
        comparisons.append(paired_comparison(f"student T={t:g}", "teacher", blocks, [teacher_errors] * len(blocks)))
        paired_plain = [(b, test_errors(ROOT / plain[r["seed"]]["run_dir"])) for b, r in zip(blocks, students, strict=True)
                        if plain.get(r["seed"])]
        if paired_plain:
            comparisons.append(paired_comparison(f"student T={t:g}", "plain", [a for a, _ in paired_plain],
                                                 [b for _, b in paired_plain]))
    plains = [r for r in rows if r["kind"] == "plain"]
    if plains:
        cells.append({"kind": "plain", "n": len(plains), "seeds": [r["seed"] for r in plains],
                      "test_mae": mean_std([r["test_mae"] for r in plains]),
                      "val_mae": mean_std([r["val_mae"] for r in plains]),
                      "budget_used": [r["budget_used"] for r in plains]})
    write_result("distill_utkface", {
        "settings": {"teacher": str(teacher), "budget_min": args.budget, "seeds": seeds, "temperatures": temps},
        "teacher": teacher_row, "cells": cells, "comparisons": comparisons, "runs": rows}, args.json)
    print(f"teacher: test MAE {teacher_row['test_mae']:.3f}", file=sys.stderr)
    for c in cells:
        print(f"{c['kind']} {c.get('temperature', '')}: test MAE {c['test_mae']['mean']:.3f} ± {c['test_mae']['std']:.3f} "
              f"(n={c['n']}), val {c['val_mae']['mean']:.3f}", file=sys.stderr)
    for c in comparisons:
        print(c["verdict"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
