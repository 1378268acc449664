"""How often each interval covers the true difference, on simulated bake-offs with a known answer.

For several designs (seeds on one test split, folds; more or less training noise), simulated as in
ordinalage/evaluation/simulate.py, the coverage of four 95% intervals of MAE(a) - MAE(b):

    verdict       the interval verdicts use (evaluation/verdicts.py: hybrid t, or t over test sets)
    images_only   percentile bootstrap over test images, runs held fixed (the bake-off's former interval)
    runs_only     t interval over the per-run differences
    two_level     two-level percentile bootstrap (runs, then images)

and the family-wise rate of false "lower" verdicts after Holm when four methods are equal.

    python benchmarks/verdict_calibration.py            # 400 simulations per design (a few minutes)
    python benchmarks/verdict_calibration.py --reps 50  # quick look
    python benchmarks/verdict_calibration.py --docs-only  # rewrite the table in docs/bakeoff.md from the JSON
"""

from __future__ import annotations

import gc
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT, parser, replace_block, write_result  # noqa: E402

from ordinalage.evaluation.simulate import simulate_errors, simulated_pair  # noqa: E402
from ordinalage.evaluation.verdicts import (  # noqa: E402
    decide,
    holm,
    images_interval,
    posterior,
    runs_interval,
    two_level_bootstrap_interval,
)

TRUE = 0.2
DESIGNS = [  # runs, images per run (or in all, for folds), sd of a run's training noise, folds
    {"runs": 3, "images": 2000, "run_sd": 0.1, "folds": 0},
    {"runs": 3, "images": 2000, "run_sd": 0.0, "folds": 0},
    {"runs": 3, "images": 500, "run_sd": 0.3, "folds": 0},
    {"runs": 5, "images": 2000, "run_sd": 0.1, "folds": 0},
    {"runs": 10, "images": 2000, "run_sd": 0.05, "folds": 0},
    {"runs": 5, "images": 5000, "run_sd": 0.1, "folds": 5},
    {"runs": 10, "images": 5000, "run_sd": 0.1, "folds": 5},
]


def coverage(design: dict, reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(("verdict", "images_only", "runs_only", "two_level"), 0)
    widths = []
    method = None
    for rep in range(reps):
        errors, names, index = simulate_errors([TRUE, 0.0], runs=design["runs"], images=design["images"],
                                               run_sd=design["run_sd"], folds=design["folds"], rng=rng)
        runs = simulated_pair(errors, names, index, 0, 1)
        post = posterior(runs)
        method = post.method
        intervals = {"verdict": post.interval(0.95), "images_only": images_interval(runs, n_resamples=400, seed=rep),
                     "runs_only": runs_interval(runs),
                     "two_level": two_level_bootstrap_interval(runs, n_resamples=400, seed=rep)}
        for name, (low, high) in intervals.items():
            hits[name] += low <= TRUE <= high
        widths.append(intervals["verdict"][1] - intervals["verdict"][0])
    return {**design, "verdict_method": method, "reps": reps, "mean_halfwidth": float(np.mean(widths) / 2),
            **{f"coverage_{k}": v / reps for k, v in hits.items()}}


def false_winners(reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    lower = any_lower = 0
    gc.freeze()  # statsmodels' multipletests calls gc.collect() each time
    for _ in range(reps):
        errors, names, index = simulate_errors([0.0] * 4, runs=3, images=600, run_sd=0.1, rng=rng)
        posts = [posterior(simulated_pair(errors, names, index, a, b)) for a, b in itertools.combinations(range(4), 2)]
        states = [decide(p.interval(0.95), p.mean, q, rope=0.1)
                  for p, q in zip(posts, holm([p.p_value() for p in posts]), strict=True)]
        hits = sum(s in ("a lower", "b lower") for s in states)
        lower += hits
        any_lower += hits > 0
    gc.unfreeze()
    return {"methods": 4, "runs": 3, "images": 600, "run_sd": 0.1, "reps": reps,
            "rate_lower_per_pair": lower / (6 * reps), "family_wise_rate": any_lower / reps}


DOCS = ROOT / "docs" / "bakeoff.md"
START, END = "<!-- calibration:start -->", "<!-- calibration:end -->"


def docs_block(result: dict) -> str:
    """The calibration table of docs/bakeoff.md, from verdict_calibration.json."""
    lines = [START, "", "| design | runs | test images | run sd | verdict interval | verdict | images only | runs only "
             "| two-level bootstrap |", "|---|---|---|---|---|---|---|---|---|"]
    for d in result["designs"]:
        design = f"{d['folds']} folds" if d["folds"] else "seeds, one split"
        images = f"{d['images']} in all" if d["folds"] else f"{d['images']}"
        lines.append(f"| {design} | {d['runs']} | {images} | {d['run_sd']:g} | {d['verdict_method']} | "
                     f"{d['coverage_verdict']:.1%} | {d['coverage_images_only']:.1%} | {d['coverage_runs_only']:.1%} "
                     f"| {d['coverage_two_level']:.1%} |")
    fw = result["false_winners"]
    lines += ["", f"{result['settings']['reps']} simulated bake-offs per design, true difference "
              f"{result['settings']['true_difference']:g} years; run sd: the spread of one method's test MAE between "
              f"runs (years). Four equal methods, {fw['runs']} seeds, "
              f"{fw['reps']} simulations: \"lower\" verdicts after Holm in {fw['rate_lower_per_pair']:.1%} of the pairs, "
              f"and in {fw['family_wise_rate']:.1%} of the bake-offs at least one.", "", END]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=400)
    p.add_argument("--docs-only", action="store_true", help="rewrite docs/bakeoff.md's table from the JSON")
    args = p.parse_args()
    if args.docs_only:
        replace_block(DOCS, docs_block(json.loads((RESULTS / "verdict_calibration.json").read_text(encoding="utf-8"))))
        return
    start = time.perf_counter()
    rows = []
    for i, design in enumerate(DESIGNS):
        rows.append(coverage(design, args.reps, seed=i))
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}, file=sys.stderr)
    fw = false_winners(2 * args.reps, seed=99)
    print(fw, file=sys.stderr)
    path = write_result("verdict_calibration", {
        "settings": {"true_difference": TRUE, "level": 0.95, "reps": args.reps},
        "designs": rows, "false_winners": fw, "seconds": round(time.perf_counter() - start, 1),
    }, out=args.json)
    if not args.json:
        replace_block(DOCS, docs_block(json.loads(path.read_text(encoding="utf-8"))))


if __name__ == "__main__":
    main()
