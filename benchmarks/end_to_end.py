"""End to end: `fit` on UTKFace images against the bare in-memory training loop.

`fit` trains the default scratch model (64 px, CORAL head) on a csv: spec listing `--images`
UTKFace files for `--epochs` epochs; its train images/s come from `metrics.csv` (train epoch
seconds only: no validation, no checkpoint writing; the first epoch, which also starts the
workers, is shown but left out of the median). The reference is train_overhead.py's bare
forward/backward/step loop on in-memory tensors, same model, batch and device, measured before
and after every fit (median). The ratio says how close the data path keeps the model busy.

Each setting is (loader workers, torch threads in the main process); workers `auto` is the
package default (`data.num_workers: auto`, data/loader_workers.py: 0 on <= 2 usable cores, else
min(cores - 1, 8)) and each setting records what its run resolved it to; "default" threads is what
torch picks (all cores). On a 2-core machine the workers and the model share the same cores. The
first setting gives the headline ratio; the 1-minute load average is kept before and after each
fit, since a shared machine's other jobs slow both sides.

    python benchmarks/end_to_end.py [--json OUT] [--images 2000] [--epochs 2] [--settings auto:default 2:default 0:default]
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from common import UTKFACE, parser, ratio, summary, utkface_files, write_csv_spec, write_result
from train_overhead import run as bare_run

from ordinalage.config import Config, to_dict
from ordinalage.training.fit import fit


def fit_images_per_s(config: Config, out: Path) -> tuple[list[float], int, dict[str, Any]]:
    """Train images/s of every epoch of one `fit` run, the images one epoch trains, and its summary.json."""
    run_dir = fit(replace(config, train=replace(config.train, out_dir=str(out))), quiet=True)
    with (run_dir / "metrics.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    summary_json = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return [float(r["images_per_s"]) for r in rows], int(float(rows[-1]["train_images"])), summary_json


def load1() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def bare_images_per_s(config: Config, steps: int) -> float:
    return bare_run(config, steps, repeats=1)["bare_images_per_s"]["median"]


def parse_setting(text: str) -> tuple[int | str, int | None]:
    """WORKERS:THREADS, WORKERS an int or `auto`, THREADS an int or `default`."""
    workers, _, threads = text.partition(":")
    return (workers if workers == "auto" else int(workers)), None if threads in ("", "default") else int(threads)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=str(UTKFACE), help="UTKFace folder")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--settings", nargs="+", default=["auto:default", "2:default", "0:default"],
                   help="WORKERS:THREADS pairs (WORKERS an int or auto); the first one gives the headline ratio")
    p.add_argument("--bare-steps", type=int, default=8)
    args = p.parse_args(argv)
    default_threads = torch.get_num_threads()
    base = Config()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_csv_spec(utkface_files(args.data, args.images, seed=0), Path(tmp) / "subset.csv")
        config = replace(
            base,
            data=replace(base.data, sources=(spec,), cache_dir=str(Path(tmp) / "cache")),
            train=replace(base.train, epochs=args.epochs, batch_size=args.batch_size, eval_on_end=False),
        )
        bare = [bare_images_per_s(config, args.bare_steps)]
        n_train: int | None = None  # images one training epoch trains (the same in every setting)
        for k, text in enumerate(args.settings):
            workers, threads = parse_setting(text)
            torch.set_num_threads(threads or default_threads)
            cfg = replace(config, data=replace(config.data, num_workers=workers))
            load_before = load1()
            epochs, n_train, run_summary = fit_images_per_s(cfg, Path(tmp) / f"run{k}")
            load_after = load1()
            torch.set_num_threads(default_threads)
            bare.append(bare_images_per_s(config, args.bare_steps))
            resolved = run_summary["num_workers"]
            results[text] = {"workers": workers, "resolved_workers": resolved["resolved"],
                             "usable_cores": resolved["usable_cores"], "threads": threads or default_threads,
                             "fit_images_per_s_by_epoch": [round(v, 1) for v in epochs],
                             "fit_images_per_s": round(statistics.median(epochs[1:] or epochs), 1),
                             "loadavg_1min": {"before": load_before, "after": load_after}}
            print(f"workers={workers} (-> {resolved['resolved']}) threads={threads or default_threads}: "
                  f"fit {epochs} img/s, bare {bare[-1]:.0f} img/s, load {load_before} -> {load_after}", file=sys.stderr)
    bare_summary = summary(bare)
    for k, r in enumerate(results.values()):
        r["ratio"] = ratio(r["fit_images_per_s"], bare_summary["median"])
        # against the bare runs just before and after this fit only: steadier when the machine's load drifts
        r["ratio_vs_adjacent_bare"] = ratio(r["fit_images_per_s"], statistics.mean(bare[k:k + 2]))
        if n_train:
            r["fit_epochs_per_s"] = round(r["fit_images_per_s"] / n_train, 4)
    headline = results[args.settings[0]]
    settings = {"data": args.data, "images": args.images, "epochs": args.epochs, "batch_size": args.batch_size,
                "settings": args.settings, "default_threads": default_threads, "bare_steps": args.bare_steps,
                "images_per_epoch": n_train, "config": to_dict(config)}
    write_result("end_to_end", {
        "settings": settings, "ratio": headline["ratio"], "target": 0.95,
        "headline": {"setting": args.settings[0], "workers": headline["workers"],
                     "resolved_workers": headline["resolved_workers"], "usable_cores": headline["usable_cores"]},
        "ratio_is": f"fit train images/s (median over epochs after the first, which starts the workers) with workers:threads {args.settings[0]} / "
                    "median bare-loop images/s (measured before and after each fit; ratio_vs_adjacent_bare: the mean of "
                    "the two around that fit); epochs/s = images/s / images per training epoch",
        "bare_images_per_s": bare_summary,
        "bare_epochs_per_s": round(bare_summary["median"] / n_train, 4) if n_train else None,
        "loadavg_1min_at_end": load1(), "by_setting": results}, args.json)
    for text, r in results.items():
        print(f"{text:>12}: workers -> {r['resolved_workers']}, fit {r['fit_images_per_s']:.0f} img/s, "
              f"bare {bare_summary['median']:.0f} img/s, ratio {r['ratio']:.2f} "
              f"(vs the adjacent bare runs {r['ratio_vs_adjacent_bare']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
