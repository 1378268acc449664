"""`ordinalage bakeoff plan PILOT_DIR --halfwidth 0.1`: how many runs a bake-off needs so that every
pair's verdict interval is at most +-halfwidth years wide, and what that costs in CPU minutes.

From a finished pilot bake-off, per pair of methods: the training noise of one run's MAE difference
(the variance between seeds, or between folds less their test-set noise) and the per-image variance of
the differences. The interval of a design then follows the verdict's own formula
(evaluation/verdicts.py): on one fixed test split with S seeds, the training part shrinks with S but
the test set's noise does not; with K folds every run has its own test images, so both shrink.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ordinalage.atomic import write_json
from ordinalage.comparison.analysis import pair_blocks
from ordinalage.comparison.spec import BakeoffSpec, Method
from ordinalage.errors import UsageError
from ordinalage.evaluation.pairing import paired_runs
from ordinalage.evaluation.verdicts import PairedRun, test_sets

PLAN_FILE = "plan.json"
MAX_SEEDS = 50
FOLD_CHOICES = (5, 10)
Z = float(stats.norm.ppf(0.975))


def _pilot(folder: Path) -> tuple[BakeoffSpec, list[dict[str, Any]], dict[str, Any]]:
    path = folder / "bakeoff.json"
    if not path.is_file():
        raise UsageError(f"{folder}: no finished bake-off here (no bakeoff.json); run a bake-off into this folder "
                         "first, with at least 2 seeds or folds")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        raw = result["spec"]
        spec = BakeoffSpec(methods=tuple(Method(n, p) for n, p in raw["methods"].items()), datasets=tuple(raw["data"]),
                           seeds=int(raw["seeds"]), folds=int(raw.get("folds") or 1))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: not a bakeoff.json written by `ordinalage bakeoff` ({exc})") from None
    records = []
    for cell in result.get("cells") or []:
        if cell.get("status") == "done":
            cell_path = Path(cell["run"]) / "cell.json"
            records.append(json.loads(cell_path.read_text(encoding="utf-8")) if cell_path.is_file() else cell)
    if not records:
        raise UsageError(f"{folder}: the bake-off has no finished cell; finish it first (rerun the same command)")
    return spec, records, result


def noise_components(runs: list[PairedRun]) -> dict[str, float] | None:
    """Per pair: ``run_var`` (training variance of one run's MAE difference), ``image_var`` (variance of
    one image's difference) and ``n_images`` (test images per run); None when training noise cannot be
    estimated (one run per method)."""
    sets = test_sets(runs)
    image_var = float(np.mean([np.var(r.diffs, ddof=1) for r in runs if r.diffs.size > 1]))
    n_images = float(np.mean([r.diffs.size for r in runs]))
    within = [s for s in sets if s.x.shape[0] >= 2]
    if within:  # seeds of one test set: their spread less its run-by-image part
        run_var = float(np.mean([max(0.0, float(np.var(s.run_means(), ddof=1)) - s.x.shape[0] * s.interaction_variance())
                                 for s in within]))
    elif len(sets) >= 2:  # folds, one seed each: their spread less each fold's own test-set noise
        set_means = np.array([float(s.run_means()[0]) for s in sets])
        run_var = max(0.0, float(np.var(set_means, ddof=1)) - image_var / n_images)
    else:
        return None
    return {"run_var": run_var, "image_var": image_var, "n_images": n_images}


def halfwidth_seeds(c: dict[str, float], seeds: int, n_test: float) -> float:
    """Half-width on one fixed test split of ``n_test`` images with ``seeds`` runs (the hybrid t)."""
    t = float(stats.t.ppf(0.975, max(1, seeds - 1)))
    return math.sqrt(t**2 * c["run_var"] / seeds + Z**2 * c["image_var"] / n_test) if seeds >= 2 else math.inf


def halfwidth_folds(c: dict[str, float], folds: int, seeds: int, n_total: float) -> float:
    """Half-width with ``folds`` folds of ``n_total`` images, ``seeds`` seeds each."""
    per_fold = c["run_var"] / seeds + c["image_var"] / (n_total / folds)
    df = folds - 1 if seeds == 1 else folds * (seeds - 1)
    return float(stats.t.ppf(0.975, df)) * math.sqrt(per_fold / folds)


def plan(folder: str | Path, halfwidth: float) -> dict[str, Any]:
    """The plan (plan.json's dict) for a pilot bake-off folder, written to FOLDER/plan.json."""
    folder = Path(folder)
    if not (halfwidth > 0 and math.isfinite(halfwidth)):
        raise UsageError(f"halfwidth {halfwidth!r}: expected a number of years > 0, e.g. 0.1", option="halfwidth")
    spec, records, result = _pilot(folder)
    minutes = [float(r["minutes"]) for r in records if r.get("minutes") is not None]
    cell_minutes = float(np.median(minutes)) if minutes else None
    blocks = pair_blocks(records, spec)
    rows, unknown = [], []
    n_total = None
    for (a, b), pair in blocks.items():
        if not pair:
            continue
        c = noise_components(paired_runs(pair))
        if c is None:
            unknown.append(f"{a} vs {b}")
            continue
        test_sets = {blk[0]: blk[1].keys for blk in pair}
        n_pilot_total = sum(len(k) for k in test_sets.values())
        n_total = n_pilot_total if spec.folds >= 2 else n_pilot_total / _test_fraction(records)
        n_test = n_pilot_total if spec.folds < 2 else n_pilot_total / spec.folds
        seeds = next((s for s in range(2, MAX_SEEDS + 1) if halfwidth_seeds(c, s, n_test) <= halfwidth), None)
        floor = Z * math.sqrt(c["image_var"] / n_test)
        folds = [{"folds": k, "seeds": s, "runs": k * s, "halfwidth": halfwidth_folds(c, k, s, n_total)}
                 for k in FOLD_CHOICES for s in range(1, MAX_SEEDS + 1)
                 if halfwidth_folds(c, k, s, n_total) <= halfwidth]
        best_folds = min(folds, key=lambda d: d["runs"]) if folds else None
        rows.append({"a": a, "b": b, "run_sd": math.sqrt(c["run_var"]), "image_sd": math.sqrt(c["image_var"]),
                     "test_images": n_test, "test_noise_floor": floor,
                     "seeds_on_one_split": seeds, "folds_design": best_folds})
    if not rows:
        raise UsageError(f"{folder}: one run per method, so training noise cannot be estimated; run the pilot with "
                         "`seeds` 2 (or more) or data.protocol=folds:5 and plan again")
    n_methods = len(spec.methods)
    need_seeds = [r["seeds_on_one_split"] for r in rows]
    need_folds = [r["folds_design"] for r in rows]
    out: dict[str, Any] = {
        "pilot": str(folder), "halfwidth": halfwidth, "methods": n_methods, "cell_minutes": cell_minutes,
        "pairs": rows, "pairs_without_training_noise": unknown,
        "seeds_on_one_split": None if None in need_seeds else max(need_seeds),
        "folds_design": None if None in need_folds else max(need_folds, key=lambda d: d["runs"]),
    }
    for key in ("seeds_on_one_split", "folds_design"):
        runs = out[key] if key == "seeds_on_one_split" else (out[key] or {}).get("runs")
        out[f"{key}_cpu_minutes"] = (runs * n_methods * cell_minutes) if runs and cell_minutes else None
    write_json(folder / PLAN_FILE, out)
    return out


def _test_fraction(records: list[dict[str, Any]]) -> float:
    import yaml

    cfg = yaml.safe_load((Path(records[0]["run"]) / "config.yaml").read_text(encoding="utf-8")) or {}
    return float((cfg.get("data") or {}).get("test_fraction") or 0.2)


def print_plan(result: dict[str, Any]) -> None:
    """The plan as a rich table on stderr."""
    from rich.table import Table

    from ordinalage.console import stderr_console

    table = Table(title=f"runs for a ±{result['halfwidth']:g}-year verdict interval (pilot {result['pilot']})")
    for col in ("a", "b", "run sd", "image sd", "test-set floor", "seeds, one split", "folds x seeds"):
        table.add_column(col)
    for r in result["pairs"]:
        f = r["folds_design"]
        table.add_row(r["a"], r["b"], f"{r['run_sd']:.3f}", f"{r['image_sd']:.2f}", f"±{r['test_noise_floor']:.3f}",
                      str(r["seeds_on_one_split"] or f"> {MAX_SEEDS}"), f"{f['folds']} x {f['seeds']}" if f else "-")
    console = stderr_console()
    console.print(table)
    for key, words in (("seeds_on_one_split", "seeds on one split"), ("folds_design", "folds")):
        value, mins = result[key], result[f"{key}_cpu_minutes"]
        what = (f"{value['folds']} folds x {value['seeds']} seed(s)" if isinstance(value, dict) else f"{value} seeds") \
            if value else "not reachable"
        cost = f", about {mins:.0f} CPU minutes for {result['methods']} methods" if mins else ""
        console.print(f"every pair, {words}: {what}{cost}", highlight=False)
