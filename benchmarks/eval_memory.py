"""Evaluation memory: peak RSS of `ordinalage evaluate RUN --data csv:... --split all` on N and 4N images.

A tiny run is trained first (`fit` on the synthetic set, one epoch). Each evaluation runs in a
fresh child process; its peak RSS is the kernel's high-water mark for that child
(`os.wait4` rusage `ru_maxrss`, which for a child with loader workers is the largest single
process), and a 20 ms poll of /proc sums the RSS of the child and its workers (shared library
pages counted once per process, so this sum overstates; it is for the N vs 4N comparison only).
N and 4N alternate, `--repeats` times each; figures are medians.

    python benchmarks/eval_memory.py [--json OUT] [--n 500] [--repeats 2] [--workers 0 2]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import UTKFACE, parser, ratio, summary, utkface_files, write_csv_spec, write_result

from ordinalage.config import Config


def train_tiny_run(out: Path, cache: Path) -> Path:
    """One epoch of the default model on a small synthetic set (quiet)."""
    from ordinalage.training.fit import fit

    base = Config()
    config = replace(
        base,
        data=replace(base.data, sources=("synth",), synth_n=200, synth_size=64, num_workers=0,
                     cache_dir=str(cache)),
        train=replace(base.train, epochs=1, batch_size=32, eval_on_end=False, out_dir=str(out)),
    )
    return fit(config, quiet=True)


def _tree_rss_kib(pid: int) -> int:
    """RSS (KiB) of `pid` plus all its descendants, from /proc (0 for processes already gone)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            for task in Path(f"/proc/{p}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def measure(run_dir: Path, spec: str, workers: int, out: Path) -> dict[str, Any]:
    """Peak memory of one `ordinalage evaluate` child process."""
    cmd = [sys.executable, "-m", "ordinalage", "evaluate", str(run_dir), "--data", spec, "--split", "all",
           "--json", "--workers", str(workers), "--device", "cpu", "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree_peak = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        tree_peak = max(tree_peak, _tree_rss_kib(proc.pid))
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return {"maxrss_mib": usage.ru_maxrss / 1024, "tree_rss_mib": tree_peak / 1024,
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=str(UTKFACE), help="UTKFace folder")
    p.add_argument("--n", type=int, default=500, help="N (the larger set has 4N images)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = p.parse_args(argv)
    files = utkface_files(args.data, 4 * args.n, seed=0)
    by_workers: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        run_dir = train_tiny_run(tmp_path / "run", tmp_path / "cache")
        specs = {"N": write_csv_spec(files[: args.n], tmp_path / "n.csv"),
                 "4N": write_csv_spec(files, tmp_path / "4n.csv")}
        for w in args.workers:
            runs: dict[str, list[dict[str, Any]]] = {"N": [], "4N": []}
            for r in range(args.repeats):
                for which in (("N", "4N") if r % 2 == 0 else ("4N", "N")):
                    m = measure(run_dir, specs[which], w, tmp_path / f"eval-{w}-{which}-{r}")
                    runs[which].append(m)
                    print(f"workers={w} {which}: maxrss {m['maxrss_mib']:.0f} MiB, tree {m['tree_rss_mib']:.0f} MiB, "
                          f"{m['seconds']:.1f} s", file=sys.stderr)
            fig = {k: {key: summary([m[key] for m in v]) for key in ("maxrss_mib", "tree_rss_mib", "seconds")}
                   for k, v in runs.items()}
            fig["ratio_maxrss"] = ratio(fig["4N"]["maxrss_mib"]["median"], fig["N"]["maxrss_mib"]["median"])
            fig["ratio_tree_rss"] = ratio(fig["4N"]["tree_rss_mib"]["median"], fig["N"]["tree_rss_mib"]["median"])
            by_workers[str(w)] = fig
    headline = by_workers[str(args.workers[0])]["ratio_maxrss"]
    settings = {"data": args.data, "n": args.n, "n4": 4 * args.n, "repeats": args.repeats, "workers": args.workers,
                "run": "default scratch model + coral head, 1 epoch on 200 synthetic faces"}
    write_result("eval_memory", {"settings": settings, "ratio": headline, "target": 1.2, "target_is": "at most",
                                 "ratio_is": f"median peak RSS (ru_maxrss) at 4N / at N, workers={args.workers[0]}",
                                 "by_workers": by_workers}, args.json)
    for w, f in by_workers.items():
        print(f"workers {w}: peak RSS N {f['N']['maxrss_mib']['median']:.0f} MiB, 4N {f['4N']['maxrss_mib']['median']:.0f}"
              f" MiB (ratio {f['ratio_maxrss']:.2f}); tree RSS ratio {f['ratio_tree_rss']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
