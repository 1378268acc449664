"""The shipped model's decision metrics on the UTKFace test split: conformal intervals at three levels,
age-threshold error rates, error by gender and race, calibration.

    python benchmarks/decisions_utkface.py                # evaluate the run that ships as utkface-small
    python benchmarks/decisions_utkface.py --run RUN      # another run folder
    python benchmarks/decisions_utkface.py --report-only  # rewrite the docs' block from the JSON

For each interval level L in 0.8, 0.95 and then 0.9: `ordinalage evaluate RUN --tta --interval L
--threshold 18 --challenge 18,21,23,25 --by gender,race --calibrate --out RUN/eval-decisions-L`. The
interval is calibrated on the run's validation split and stored in the run, so 0.9 (the level the
shipped model carries) goes last. The run defaults to the student that zoo_utkface_small.json chose.
Writes benchmarks/results/decisions_utkface.json; written there (no --json), also copies the 0.9
evaluation's threshold, error-by-age and reliability plots to docs/img/ and rewrites the block between
docs/results.md's `decisions` markers (`docs_block`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, parser, replace_block, write_result

DOCS = ROOT / "docs" / "results.md"
IMG = ROOT / "docs" / "img"
LEVELS = (0.8, 0.95, 0.9)  # the shipped level last: the run keeps the last calibration
THRESHOLD = 18
CHALLENGES = (18, 21, 23, 25)
PLOTS = {f"threshold_{THRESHOLD}.png": f"utkface_threshold_{THRESHOLD}.png", "error_by_age.png": "utkface_error_by_age.png",
         "reliability.png": "utkface_reliability.png"}


def shipped_run() -> Path:
    """The run folder of the student that the zoo script chose (benchmarks/results/zoo_utkface_small.json)."""
    zoo = json.loads((RESULTS / "zoo_utkface_small.json").read_text(encoding="utf-8"))
    return ROOT / zoo["runs"][f"student {zoo['choice']['chosen']}".strip()]["run_dir"]


def evaluate(run: Path, level: float) -> dict[str, Any]:
    """One `ordinalage evaluate` of the run's test split at interval `level`: its metrics."""
    out = run / f"eval-decisions-{level:g}"
    command = [sys.executable, "-m", "ordinalage", "evaluate", str(run), "--tta", "--interval", f"{level:g}",
               "--threshold", str(THRESHOLD), "--challenge", ",".join(map(str, CHALLENGES)), "--by", "gender,race",
               "--calibrate", "--device", "cpu", "--out", str(out), "--json"]
    print(f"[decisions] interval {level:g}: {' '.join(command[2:])}", file=sys.stderr)
    return json.loads(subprocess.run(command, check=True, cwd=ROOT, capture_output=True, text=True).stdout)


def mean_true_age_by_race(predictions_csv: Path) -> dict[str, float]:
    """The test faces' mean true age per UTKFace race (the groups' age mixes differ)."""
    import csv

    from ordinalage.evaluation.breakdown import utkface_attributes

    ages: dict[str, list[float]] = {}
    with predictions_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            race = utkface_attributes(row["file"]).get("race")
            if race is not None:
                ages.setdefault(race, []).append(float(row["true_age"]))
    return {race: round(sum(a) / len(a), 1) for race, a in sorted(ages.items())}


def val_mae(run: Path) -> float | None:
    """The run's validation MAE with flip TTA, where the zoo script measured it (its `eval-val-tta`)."""
    path = run / "eval-val-tta" / "metrics.json"
    return float(json.loads(path.read_text(encoding="utf-8"))["mae"]) if path.is_file() else None


def collect(run: Path) -> dict[str, Any]:
    """Evaluate at every level; keep what the docs' block shows."""
    by_level = {level: evaluate(run, level) for level in LEVELS}
    main = by_level[0.9]
    out = Path(main["out"])
    out = out if out.is_absolute() else ROOT / out
    breakdown = main["breakdown"]
    return {
        "run_dir": str(run.relative_to(ROOT)), "eval_dir": str(out.relative_to(ROOT)),
        "n": main["n"], "mae": main["mae"], "n_cal": main["interval"]["n_cal"],
        "intervals": [{"level": level, "coverage": m["interval"]["coverage"], "mean_width": m["interval"]["mean_width"],
                       "per_group": m["interval"]["per_group"]} for level, m in sorted(by_level.items())],
        "threshold": main["threshold"],
        "gender": breakdown["gender"], "race": breakdown["race"], "gaps": breakdown["gaps"],
        "mean_true_age_by_race": mean_true_age_by_race(out / "predictions.csv"),
        "val_mae_tta": val_mae(run),
        "calibration": main["calibration"],
        "command": f"ordinalage evaluate {run.relative_to(ROOT)} --tta --interval L --threshold {THRESHOLD} "
                   f"--challenge {','.join(map(str, CHALLENGES))} --by gender,race --calibrate",
    }


def _ci(row: dict[str, Any], key: str, signed: bool = False) -> str:
    f = "{:+.2f}" if signed else "{:.2f}"
    return f"{f.format(row[key])} [{f.format(row[key + '_lo'])}, {f.format(row[key + '_hi'])}]"


def shortfall(doc: dict[str, Any]) -> str:
    """A sentence on the intervals' coverage against their levels (and the validation split's part in it)."""
    gaps = [i["level"] - i["coverage"] for i in doc["intervals"]]
    if max(gaps) <= 0.005:
        return f"Coverage meets every level (within {max(0.0, max(gaps)):.3f})."
    text = (f"Coverage falls short of the level by {min(gaps):.3f} to {max(gaps):.3f}: the intervals are sized on "
            "the validation split, which also chose the model (its best epoch and its candidate)")
    if doc.get("val_mae_tta") is not None:
        text += f", and the model errs less there than on the test faces (MAE {doc['val_mae_tta']:.2f} against {doc['mae']:.2f})"
    return text + ". Where coverage matters, ask for a higher level than the coverage needed."


def docs_block(doc: dict[str, Any]) -> str:
    """docs/results.md's `decisions` block from the JSON."""
    levels = doc["intervals"]
    rows = [*doc["gender"], *sorted(doc["race"], key=lambda r: -r["n"])]
    at90 = next(i for i in levels if i["level"] == 0.9)["per_group"]
    low, high = min(at90, key=lambda g: g["coverage"]), max(at90, key=lambda g: g["coverage"])
    rates = ", ".join(f"{r['challenge']}: {r['false_accept']:.3f} / {r['false_reject']:.3f}" for r in doc["threshold"])
    first = doc["threshold"][0]
    g, r = doc["gaps"]["gender"], doc["gaps"]["race"]
    cal = doc["calibration"]
    ages = ", ".join(f"{race} {age:.1f}" for race, age in doc["mean_true_age_by_race"].items())
    return "\n".join([
        "<!-- decisions:start -->",
        f"The shipped `utkface-small` on the test split (n = {doc['n']:,}, flip TTA, MAE {doc['mae']:.2f}): "
        f"`{doc['command']}` for L = 0.8, 0.95, 0.9; intervals calibrated on validation ({doc['n_cal']:,} faces).",
        "",
        "| interval level | " + " | ".join(f"{i['level']:.2f}" for i in levels) + " |",
        "| --- | " + " | ".join("---" for _ in levels) + " |",
        "| coverage on test | " + " | ".join(f"{i['coverage']:.3f}" for i in levels) + " |",
        "| mean width (years) | " + " | ".join(f"{i['mean_width']:.1f}" for i in levels) + " |",
        "",
        shortfall(doc),
        "",
        f"![threshold {THRESHOLD}](img/utkface_threshold_{THRESHOLD}.png) ![error by age](img/utkface_error_by_age.png) "
        f"Coverage at 0.9 by age group: {low['coverage']:.2f} ({low['label']}) to {high['coverage']:.2f} "
        f"({high['label']}). Threshold {first['threshold']}, false accept / false reject at challenge {rates} "
        f"({first['n_under']:,} under {first['threshold']}, {first['n_over']:,} adults). By gender and race "
        "(UTKFace names, bootstrap 95% CIs):",
        "",
        "| | " + " | ".join(row["value"] for row in rows) + " |",
        "| --- | " + " | ".join("---" for _ in rows) + " |",
        "| n | " + " | ".join(f"{row['n']:,}" for row in rows) + " |",
        "| MAE [95% CI] | " + " | ".join(_ci(row, "mae") for row in rows) + " |",
        "| signed error [95% CI] | " + " | ".join(_ci(row, "bias", signed=True) for row in rows) + " |",
        "",
        f"Gender MAE gap {g['mae_gap']:.2f} (CI {g['mae_gap_lo']:.2f} to {g['mae_gap_hi']:.2f}), bias gap "
        f"{g['bias_gap']:.1f} years (CI {g['bias_gap_lo']:.1f} to {g['bias_gap_hi']:.1f}); largest race MAE gap "
        f"{r['mae_gap']:.1f} ({r['mae_high']} vs {r['mae_low']}, CI {r['mae_gap_lo']:.1f} to {r['mae_gap_hi']:.1f}), "
        f"not controlled for age (mean test age: {ages}). Top-label ECE {cal['ece']:.3f}, {cal['ece_after']:.3f} "
        f"after a validation temperature of {cal['T']:.2f} ([reliability](img/utkface_reliability.png)).",
        "<!-- decisions:end -->",
    ])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", type=Path, help="run folder (default: the student zoo_utkface_small.json chose)")
    p.add_argument("--report-only", action="store_true", dest="report_only",
                   help="only rewrite docs/results.md's block from benchmarks/results/decisions_utkface.json")
    args = p.parse_args()
    if not args.report_only:
        run = (args.run or shipped_run()).resolve()
        doc = collect(run)
        out = write_result("decisions_utkface", doc, args.json)
        print(f"wrote {out}", file=sys.stderr)
        if args.json:
            return
        for source, target in PLOTS.items():
            shutil.copyfile(ROOT / doc["eval_dir"] / source, IMG / target)
    replace_block(DOCS, docs_block(json.loads((RESULTS / "decisions_utkface.json").read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()
