"""Prior correction under label shift: the UTKFace test split resampled to other age mixes.

For each trained run (a class-over-years model, a CORN model, ...), the test split is resampled
(seeded, with replacement) to four age mixes: the split's own, one peaked at young adults (as
most web photo sets are), a child-heavy and an elderly-heavy one. On each we report MAE and group
accuracy as trained, with the true mix given (what `--prior FILE` does) and with the mix
estimated by EM from the unlabeled images (`--prior em`), EM with a temperature fitted on the
validation split, and each decoder (mean, median, mode). The share of the known-mix gain that EM
recovers is the headline. EM's cost per 10,000 images is timed on the stored probabilities.

    python benchmarks/prior_shift.py --run class=runs/x --run corn=runs/y [--resamples 3] [--n 2000]
        [--json benchmarks/results/prior_shift.json] [--plot docs/img/prior_shift.png]
    python benchmarks/prior_shift.py --docs-only   # rewrite docs/results.md's table from the JSON

The model's predictions on the val and test splits are computed once per run and kept in
`<run>/prior_shift_cache.npz`, so the report reruns in seconds. Written to the default JSON, the
results also rewrite the table between docs/results.md's `prior-shift` markers (`docs_block`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, ROOT, parser, replace_block, write_result

from ordinalage.models.heads import age_decoder
from ordinalage.posterior.adapt import adapt
from ordinalage.posterior.calibration import apply_temperature, fit_temperature, to_logproba
from ordinalage.posterior.prior import DEFAULT_SMOOTH, em_prior, em_seconds_per_10k
from ordinalage.runs.rundir import RunDir

#: target age mixes (unnormalised densities over whole years)
MIXES: dict[str, Any] = {
    "own": None,  # the split as it is
    "young_adult": lambda a: np.exp(-0.5 * ((a - 27.0) / 6.0) ** 2) + 0.02,
    "child": lambda a: np.exp(-0.5 * ((a - 7.0) / 5.0) ** 2) + 0.02,
    "elderly": lambda a: np.exp(-0.5 * ((a - 72.0) / 10.0) ** 2) + 0.02,
}


def predictions(run: Path, device: str) -> dict[str, Any]:
    """Label distributions, ages and groups on val and test (cached in the run folder)."""
    cache = run / "prior_shift_cache.npz"
    if cache.is_file():
        data = np.load(cache)
        return {k: data[k] for k in data.files}
    from ordinalage.evaluation.model_predictions import predict_records
    from ordinalage.runs.checkpoint import load_model

    loaded = load_model(run, device)
    out: dict[str, Any] = {"train_prior": train_prior_of(run, loaded)}
    for split in ("val", "test"):
        p = predict_records(loaded, RunDir(run).read_split(split), device=device, show=True)
        out[f"{split}_label_proba"] = p.label_proba
        out[f"{split}_age"] = p.true_age
        out[f"{split}_pred_age"] = p.pred_age
    np.savez_compressed(cache, **out)
    return out


def train_prior_of(run: Path, loaded: Any) -> np.ndarray:
    """The stored training prior; for runs trained before it was stored, recomputed from the run's
    own config and data exactly as `fit` computes it."""
    if loaded.train_prior is not None:
        return loaded.train_prior
    from ordinalage.data.prepare import prepare_data
    from ordinalage.training.state import train_prior

    return train_prior(loaded.config, loaded.model, prepare_data(loaded.config.data))


def resample(ages: np.ndarray, mix: Any, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices drawn with replacement so the ages follow `mix`, and that mix over years 0..max."""
    years = np.clip(np.round(ages), 0, None).astype(int)
    counts = np.bincount(years)
    if mix is None:
        return rng.choice(len(ages), size=n, replace=True), counts / counts.sum()
    target = mix(np.arange(len(counts), dtype=float)) * (counts > 0)
    target = target / target.sum()
    w = target[years] / counts[years]
    return rng.choice(len(ages), size=n, replace=True, p=w / w.sum()), target


def score(age_pred: np.ndarray, age_true: np.ndarray, groups: Any) -> dict[str, float]:
    return {"mae": float(np.mean(np.abs(age_pred - age_true))),
            "accuracy": float(np.mean(groups.clip_indices(age_pred) == groups.clip_indices(age_true)))}


SMOOTH_CANDIDATES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def choose_smooth(pr: dict[str, Any], s: np.ndarray, groups: Any, how: str, resamples: int) -> dict[str, Any]:
    """The EM smoothing (years) with the lowest mean EM MAE over the shifted mixes of the VALIDATION
    split (resampled like the test split); the test split is not looked at."""
    p_all, y_all = pr["val_label_proba"].astype(float), pr["val_age"]
    ages_l = np.arange(len(s), dtype=float)
    table = {}
    for smooth in SMOOTH_CANDIDATES:
        maes = []
        for mix in MIXES.values():
            for seed in range(resamples):
                idx, _ = resample(y_all, mix, len(y_all), np.random.default_rng(1000 + seed))
                em = em_prior(p_all[idx], s, smooth=smooth, label_ages=ages_l).prior
                maes.append(score(adapt(p_all[idx], s, em, ages_l, groups, "age", how)[0], y_all[idx], groups)["mae"])
        table[smooth] = float(np.mean(maes))
    return {"chosen": min(table, key=table.get), "val_mae_by_smooth": table}


def evaluate_run(name: str, run: Path, resamples: int, n: int, smooth: float | None, device: str) -> dict[str, Any]:
    from ordinalage.config import load_config
    from ordinalage.groups import AgeGroups

    cfg = load_config(RunDir(run).config_yaml)
    groups = AgeGroups.parse(cfg.data.groups)
    pr = predictions(run, device)
    s = np.asarray(pr["train_prior"], dtype=float)
    ages_l = np.arange(len(s), dtype=float)
    max_age = len(s) - 1
    val_labels = np.clip(np.round(pr["val_age"]), 0, max_age).astype(int)
    temperature = fit_temperature(to_logproba(pr["val_label_proba"]), val_labels)
    p_all, y_all = pr["test_label_proba"].astype(float), pr["test_age"]
    own = age_decoder(cfg.model.head, cfg.model.decode)
    # the decoder chosen on validation (as trained): the one with the lowest val MAE
    val_mae = {how: float(np.mean(np.abs(adapt(pr["val_label_proba"].astype(float), s, s, ages_l, groups, "age",
                                                 how)[0] - pr["val_age"]))) for how in ("mean", "median", "mode")}
    chosen = min(val_mae, key=val_mae.get)
    selection = choose_smooth(pr, s, groups, chosen, resamples) if smooth is None else None
    if selection is not None:
        smooth = selection["chosen"]
        print(f"{name}: EM smoothing chosen on validation: {smooth} years ({selection['val_mae_by_smooth']})",
              file=sys.stderr)
    rows = []
    for mix_name, mix in MIXES.items():
        per_seed = []
        for seed in range(resamples):
            idx, true_mix = resample(y_all, mix, n, np.random.default_rng(seed))
            p, y = p_all[idx], y_all[idx]
            true_prior = np.zeros(len(s))
            true_prior[: min(len(true_mix), len(s))] = true_mix[: len(s)]
            true_prior = 0.999 * true_prior / true_prior.sum() + 0.001 / len(s)
            t0 = time.perf_counter()
            em = em_prior(p, s, smooth=smooth, label_ages=ages_l).prior
            em_s = time.perf_counter() - t0
            em_t = em_prior(apply_temperature(to_logproba(p), temperature), s, smooth=smooth, label_ages=ages_l).prior
            row: dict[str, Any] = {"em_seconds": em_s}
            for how in ("mean", "median", "mode"):
                for label, prior in (("trained", s), ("true", true_prior), ("em", em), ("em_T", em_t)):
                    row[f"{label}_{how}"] = score(adapt(p, s, prior, ages_l, groups, "age", how)[0], y, groups)
            per_seed.append(row)
        summary: dict[str, Any] = {"mix": mix_name, "n": n, "resamples": resamples,
                                   "em_seconds": float(np.mean([r["em_seconds"] for r in per_seed]))}
        for key in per_seed[0]:
            if key == "em_seconds":
                continue
            for metric in ("mae", "accuracy"):
                vals = [r[key][metric] for r in per_seed]
                summary[f"{key}_{metric}"] = float(np.mean(vals))
                summary[f"{key}_{metric}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        for how in ("mean", "median", "mode"):
            base, true = summary[f"trained_{how}_mae"], summary[f"true_{how}_mae"]
            for est in ("em", "em_T"):
                gain = base - true
                summary[f"{est}_{how}_recovered"] = (base - summary[f"{est}_{how}_mae"]) / gain if gain > 0.05 else None
        rows.append(summary)
        print(f"{name} {mix_name:>12}: MAE trained {summary[f'trained_{chosen}_mae']:.2f}  true mix "
              f"{summary[f'true_{chosen}_mae']:.2f}  EM {summary[f'em_{chosen}_mae']:.2f}  "
              f"EM+T {summary[f'em_T_{chosen}_mae']:.2f}  ({chosen})", file=sys.stderr)
    return {"name": name, "run": str(run), "head": cfg.model.head, "label_sigma": cfg.model.label_sigma,
            "own_decoder": own, "val_mae_by_decoder": val_mae, "chosen_decoder": chosen,
            "temperature": temperature, "smooth": smooth, "smooth_selection": selection, "rows": rows}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        how = res["chosen_decoder"]
        mixes = [r["mix"] for r in res["rows"]]
        x = np.arange(len(mixes))
        for k, (label, key) in enumerate((("as trained", "trained"), ("true mix", "true"), ("EM", "em"),
                                          ("EM + T", "em_T"))):
            ax.bar(x + (k - 1.5) * 0.2, [r[f"{key}_{how}_mae"] for r in res["rows"]], 0.2, label=label)
        ax.set_xticks(x, mixes)
        ax.set_ylabel("test MAE (years)")
        ax.set_title(f"{res['name']} ({res['head']}, {how} decoder)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


DOCS = ROOT / "docs" / "results.md"
START, END = "<!-- prior-shift:start -->", "<!-- prior-shift:end -->"
HEAD_TITLES = {"corn": "CORN", "coral": "CORAL"}


def column_title(res: dict[str, Any]) -> str:
    """A model's column: the head, and for the class head its `label_sigma`."""
    if res["head"] == "class":
        return f"class, label_sigma {res['label_sigma']:g}"
    return HEAD_TITLES.get(res["head"], res["head"])


def docs_block(result: dict[str, Any]) -> str:
    """docs/results.md's prior-shift table from prior_shift.json: per test mix and model, test MAE (mean ± std over the
    resamples) as trained / true mix given / mix estimated by EM, each with the decoder chosen on validation."""
    models = result["results"]
    lines = [START, "| test mix | " + " | ".join(column_title(r) for r in models) + " |",
             "| " + " | ".join(["---"] * (len(models) + 1)) + " |"]
    for mix in (r["mix"] for r in models[0]["rows"]):
        cells = []
        for res in models:
            row, how = next(r for r in res["rows"] if r["mix"] == mix), res["chosen_decoder"]
            cells.append(" / ".join(f"{row[f'{k}_{how}_mae']:.2f} ± {row[f'{k}_{how}_mae_std']:.2f}"
                                    for k in ("trained", "true", "em")))
        lines.append(f"| {mix.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", END])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--run", action="append", metavar="NAME=RUN_DIR", help="NAME=RUN_DIR, once per model (required "
                   "unless --docs-only)")
    p.add_argument("--docs-only", action="store_true", dest="docs_only",
                   help="only rewrite docs/results.md's table from benchmarks/results/prior_shift.json")
    p.add_argument("--resamples", type=int, default=3)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--smooth", type=float, default=None,
                   help="EM smoothing in years (default: chosen per run on the validation split)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "prior_shift.png"))
    args = p.parse_args()
    if args.docs_only:
        replace_block(DOCS, docs_block(json.loads((RESULTS / "prior_shift.json").read_text(encoding="utf-8"))))
        return
    if not args.run:
        p.error("--run NAME=RUN_DIR is required (or --docs-only)")
    results = []
    for item in args.run:
        name, _, run = item.partition("=")
        results.append(evaluate_run(name, Path(run), args.resamples, args.n, args.smooth, args.device))
    cost = em_seconds_per_10k()
    plot(results, Path(args.plot))
    out = write_result("prior_shift", {"results": results, "em_cost": cost, "package_default_smooth": DEFAULT_SMOOTH,
                                       "mixes": {k: ("split" if v is None else "gaussian, see MIXES") for k, v in MIXES.items()}},
                       args.json)
    print(f"wrote {out} and {args.plot}", file=sys.stderr)
    if not args.json:
        replace_block(DOCS, docs_block(json.loads(out.read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()
