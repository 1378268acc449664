"""Ensembles' MAE under each age decoder: the mean, median and mode of the averaged distribution.

    python benchmarks/decode_ensembles.py benchmarks/runs/budget_utkface/recipe-30min-seed{0,1,2}

For every ensemble run folder (`train.members`), each member predicts the validation and test
splits (with flip TTA when the run's `train.eval_tta` is on, as its own evaluation did); the
members' label distributions are averaged and decoded by each rule of `model.decode`; the column
of the run's own rule (`run_decoder`; a class head's `auto` is the mean) repeats its own figures;
the median is the point that minimises the expected absolute error under the distribution.
Choose on validation; the test column is for the record. Writes
benchmarks/results/decode_ensembles.json (per run and split, and the mean over runs).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import mean_std, parser, write_result  # noqa: E402

RULES = ("mean", "median", "mode")


def decoded_maes(run: Path, split: str) -> dict[str, Any]:
    """MAE of ensemble `run` on `split` under each decoding rule, and each member's own (mean).
    The members are averaged as `ordinalage evaluate` averages them (`combine_predictions`)."""
    from ordinalage.evaluation.model_predictions import combine_predictions, predict_records
    from ordinalage.models.heads import age_decoder
    from ordinalage.posterior.prior import decode_age
    from ordinalage.runs.members import load_members, member_dirs
    from ordinalage.runs.rundir import RunDir

    members = member_dirs(run)
    if not members:
        sys.exit(f"{run}: not an ensemble run folder (no member-* folders)")
    models = load_members(run, device="cpu")
    first = models[0]
    records = RunDir(members[0]).read_split(split)
    parts = [predict_records(m, records, tta=m.config.train.eval_tta, workers=0) for m in models]
    ensemble = combine_predictions(parts, first)
    if ensemble.label_proba is None or first.label_ages is None:
        sys.exit(f"{run}: its heads have no age distribution to decode")
    truth, label_ages = np.asarray(ensemble.true_age, dtype=float), np.asarray(first.label_ages, dtype=float)
    mae = lambda proba, rule: float(np.mean(np.abs(decode_age(proba, label_ages, rule) - truth)))  # noqa: E731
    return {**{rule: mae(ensemble.label_proba, rule) for rule in RULES},
            "members_mean": [mae(p.label_proba, "mean") for p in parts], "n": int(len(truth)),
            "run_decoder": age_decoder(first.config.model.head, first.config.model.decode)}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("runs", nargs="+", help="ensemble run folders")
    p.add_argument("--splits", default="val,test")
    args = p.parse_args(argv)
    splits = args.splits.split(",")
    rows = []
    for run in map(Path, args.runs):
        for split in splits:
            row = {"run": str(run), "split": split, **decoded_maes(run, split)}
            rows.append(row)
            print(f"{run.name} {split}: " + ", ".join(f"{r} {row[r]:.3f}" for r in RULES), file=sys.stderr)
    summary = {split: {rule: mean_std([r[rule] for r in rows if r["split"] == split]) for rule in RULES}
               for split in splits}
    write_result("decode_ensembles", {"settings": {"runs": args.runs, "splits": splits}, "rows": rows,
                                      "mean_over_runs": summary}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
