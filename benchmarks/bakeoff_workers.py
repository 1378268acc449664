"""Wall time of `ordinalage bakeoff` with `--jobs 1` against `--jobs 2` on the same 4-cell grid
(2 heads x 2 seeds, a small scratch CNN on the embedded synthetic faces), run one after the other
in one process tree, so the ratio is measured side by side. Writes
benchmarks/results/bakeoff_workers.json.

    python benchmarks/bakeoff_workers.py [--epochs 3] [--repeats 2]

On 2 CPU cores the two processes share the cores with each other's data loading and math threads;
the published run took 0.66x the time of one process (`ratio_2_over_1`), and the grid finishes
with each cell run once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bakeoff_workers.json"


def _run(out: Path, workers: int, epochs: int, cache: Path) -> float:
    sets = [f"data.cache_dir={cache}", "data.synth_n=600", "data.synth_size=64", "data.image_size=48",
            "data.num_workers=0", "model.width=16", "train.batch_size=64", "train.device=cpu"]
    argv = [sys.executable, "-m", "ordinalage", "bakeoff", "--grid", "model.head=class,coral", "--seeds", "2",
            "--data", "synth", "--epochs", str(epochs), "--jobs", str(workers), "--out", str(out), "--json"]
    for item in sets:
        argv += ["--set", item]
    started = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - started
    starts = sum(1 for line in (out / "cells.log").read_text().splitlines() if " start " in line)
    if starts != 4:
        raise SystemExit(f"{out}: {starts} cell starts for 4 cells")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bakeoff_workers_"))
    cache = work / "cache"
    rows = []
    try:
        _run(work / "warm", 1, 1, cache)  # generate the synthetic faces and their cache once
        for r in range(args.repeats):
            for workers in (1, 2):
                seconds = _run(work / f"r{r}-w{workers}", workers, args.epochs, cache)
                rows.append({"repeat": r, "workers": workers, "seconds": round(seconds, 2)})
                print(f"repeat {r}: {workers} worker(s): {seconds:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one = [r["seconds"] for r in rows if r["workers"] == 1]
    two = [r["seconds"] for r in rows if r["workers"] == 2]
    result = {"grid": "model.head=class,coral x 2 seeds (4 cells)", "epochs": args.epochs, "cpus": os.cpu_count(),
              "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2), "runs": rows,
              "median_seconds": {"1": sorted(one)[len(one) // 2], "2": sorted(two)[len(two) // 2]},
              "ratio_2_over_1": round(sorted(two)[len(two) // 2] / sorted(one)[len(one) // 2], 3)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
