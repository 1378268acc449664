"""End to end: `fit` on UTKFace images against the bare in-memory training loop.

`fit` trains the default scratch model (64 px, CORAL head) on a csv: spec listing `--images`
UTKFace files for `--epochs` epochs; its train images/s come from `metrics.csv` (train epoch
seconds only: no validation, no checkpoint writing; the first epoch, which also starts the
workers, is shown but left out of the median). The reference is train_overhead.py's bare
forward/backward/step loop on in-memory tensors, same model, batch and device, measured before
and after every fit (median). The ratio says how close the data path keeps the model busy.

Each setting is (loader workers, torch threads in the main process); "default" threads is what
torch picks (all cores). On a 2-core machine the workers and the model share the same cores.

    python benchmarks/end_to_end.py [--json OUT] [--images 2000] [--epochs 2] [--settings 2:default 2:1 0:default]
"""

from __future__ import annotations

import csv
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


def fit_images_per_s(config: Config, out: Path) -> list[float]:
    """Train images/s of every epoch of one `fit` run."""
    run_dir = fit(replace(config, train=replace(config.train, out_dir=str(out))), quiet=True)
    with (run_dir / "metrics.csv").open(encoding="utf-8") as fh:
        return [float(row["images_per_s"]) for row in csv.DictReader(fh)]


def bare_images_per_s(config: Config, steps: int) -> float:
    return bare_run(config, steps, repeats=1)["bare_images_per_s"]["median"]


def parse_setting(text: str) -> tuple[int, int | None]:
    workers, _, threads = text.partition(":")
    return int(workers), None if threads in ("", "default") else int(threads)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=str(UTKFACE), help="UTKFace folder")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--settings", nargs="+", default=["2:default", "2:1", "0:default"],
                   help="WORKERS:THREADS pairs; the first one gives the headline ratio")
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
        for k, text in enumerate(args.settings):
            workers, threads = parse_setting(text)
            torch.set_num_threads(threads or default_threads)
            cfg = replace(config, data=replace(config.data, num_workers=workers))
            epochs = fit_images_per_s(cfg, Path(tmp) / f"run{k}")
            torch.set_num_threads(default_threads)
            bare.append(bare_images_per_s(config, args.bare_steps))
            results[text] = {"workers": workers, "threads": threads or default_threads,
                             "fit_images_per_s_by_epoch": [round(v, 1) for v in epochs],
                             "fit_images_per_s": round(statistics.median(epochs[1:] or epochs), 1)}
            print(f"workers={workers} threads={threads or default_threads}: fit {epochs} img/s, "
                  f"bare {bare[-1]:.0f} img/s", file=sys.stderr)
    bare_summary = summary(bare)
    for r in results.values():
        r["ratio"] = ratio(r["fit_images_per_s"], bare_summary["median"])
    headline = results[args.settings[0]]
    settings = {"data": args.data, "images": args.images, "epochs": args.epochs, "batch_size": args.batch_size,
                "settings": args.settings, "default_threads": default_threads, "bare_steps": args.bare_steps,
                "config": to_dict(config)}
    write_result("end_to_end", {
        "settings": settings, "ratio": headline["ratio"], "target": 0.8,
        "ratio_is": f"fit train images/s (median over epochs after the first, which starts the workers) with workers:threads {args.settings[0]} / "
                    "median bare-loop images/s (measured before and after each fit)",
        "bare_images_per_s": bare_summary, "by_setting": results}, args.json)
    for text, r in results.items():
        print(f"{text:>10}: fit {r['fit_images_per_s']:.0f} img/s, bare {bare_summary['median']:.0f} img/s, "
              f"ratio {r['ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
