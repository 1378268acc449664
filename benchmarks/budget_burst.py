"""A budget run with a deliberate CPU burst at its start: does it still use its budget?

    python benchmarks/budget_burst.py                                  # the 30-minute recipe, seed 0 (~30 min)
    python benchmarks/budget_burst.py --report-only --run benchmarks/runs/recipe30_burst
    python benchmarks/budget_burst.py --config C --budget 2 --burst-s 20 --run R   # any config and budget

Starts `--burners` processes that spin on a core for `--burst-s` seconds, and at the same moment
`ordinalage train --config CONFIG --seed S --out RUN` (with `--budget` when given) in a child
process. Reports, from the run's summary.json: each model's probe (its ms/step and planned epochs,
the burst's doing), its first re-plan, the epochs it trained and the share of its budget it used,
the whole run's budget use (training seconds of all members over the budget), the wall minutes from
the start to the end of the test evaluation, and the test MAE. Writes
benchmarks/results/budget_burst.json.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import parser, write_result  # noqa: E402


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def models_of(summary: dict[str, Any], run: Path) -> list[dict[str, Any]]:
    """One row per trained model (the members of an ensemble, or the run itself)."""
    runs = summary.get("member_runs") or [dict(summary, run=str(run))]
    rows = []
    for r in runs:
        b = r.get("budget") or {}
        replans = b.get("replans") or []
        rows.append({"model": r.get("member") or r.get("run") or r.get("run_dir"), "seed": r.get("seed"),
                     "probe_ms_per_step": round(1000 * b["probe_step_s"], 1) if b.get("probe_step_s") else None,
                     "probe_epochs": b.get("first_epochs"),
                     "first_replan": ({"ms_per_step": round(1000 * replans[0]["step_s"], 1),
                                       "epochs": replans[0]["epochs"]} if replans else None),
                     "epochs": r.get("epochs_done"), "minutes": b.get("minutes"),
                     "seconds_before_test": b.get("seconds_before_test"), "used": b.get("used")})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/experiments/utkface_30min.yaml")
    p.add_argument("--budget", help="--budget for train (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", type=Path, default=ROOT / "benchmarks" / "runs" / "recipe30_burst")
    p.add_argument("--burners", type=int, default=2)
    p.add_argument("--burst-s", type=float, default=20.0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to train (repeatable)")
    p.add_argument("--report-only", action="store_true", help="report the finished run in --run")
    args = p.parse_args(argv)
    started = None
    if not args.report_only:
        if (args.run / "summary.json").is_file():
            raise SystemExit(f"{args.run}: holds a run already; report it with --report-only or choose another --run")
        cmd = [sys.executable, "-m", "ordinalage", "train", "--config", args.config, "--seed", str(args.seed),
               "--out", str(args.run)] + (["--budget", args.budget] if args.budget else [])
        cmd += [a for item in args.set for a in ("--set", item)]
        burners = [mp.Process(target=_spin, args=(args.burst_s,)) for _ in range(args.burners)]
        started = time.time()
        for b in burners:
            b.start()
        subprocess.run(cmd, check=True)
        for b in burners:
            b.join()
    summary = json.loads((args.run / "summary.json").read_text())
    minutes = float(summary.get("time_budget_min") or (summary.get("budget") or {}).get("minutes") or 0)
    rows = models_of(summary, args.run)
    seconds = [r["seconds_before_test"] for r in rows]
    used = sum(seconds) / (minutes * 60) if minutes and all(s is not None for s in seconds) else None
    wall = summary.get("wall_seconds") if started is None else time.time() - started
    result = {"settings": {"config": args.config, "seed": args.seed, "run": str(args.run), "burners": args.burners,
                           "burst_s": args.burst_s, "budget_min": minutes},
              "budget_used": round(used, 4) if used is not None else None,
              "wall_minutes": round(wall / 60, 2) if wall else None,
              "test_mae": (summary.get("test") or {}).get("mae"), "models": rows}
    write_result("budget_burst", result, args.json)
    print(f"budget used {result['budget_used']}, wall {result['wall_minutes']} min, test MAE {result['test_mae']}",
          file=sys.stderr)
    for r in rows:
        print(f"  {r['model']}: probe {r['probe_ms_per_step']} ms/step -> {r['probe_epochs']} epochs; "
              f"first re-plan {r['first_replan']}; trained {r['epochs']}; used {r['used']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
