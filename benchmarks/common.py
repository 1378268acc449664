"""Shared helpers for the benchmark scripts: machine and version records, medians, JSON output.

Every script writes one JSON object with `benchmark`, `created`, `machine`, `versions`,
`settings`, its figures and a top-level `ratio` (package figure / reference figure; higher is
better, except memory where it is peak(4N) / peak(N)).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
UTKFACE = ROOT / ".." / "shared" / "data" / "UTKFace"
VERSIONED = ("torch", "torchvision", "numpy", "cv2", "albumentations", "PIL", "coral_pytorch", "ordinalage")

if str(ROOT) not in sys.path:  # `python benchmarks/NAME.py` from anywhere finds the package checkout
    sys.path.insert(0, str(ROOT))

from ordinalage.data.files import list_images, parse_utkface_name  # noqa: E402


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU, cores usable by this process, memory, load, GPU (if torch sees one)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "mem_total_gib": _mem_total_gib(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def versions() -> dict[str, str | None]:
    """Versions of the libraries that matter for speed (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "unknown")
        except ImportError:
            out[name] = None
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["git_commit"] = None
    return out


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and every run (rounded), for repeated measurements."""
    vals = [float(v) for v in values]
    return {
        "median": round(statistics.median(vals), 3),
        "min": round(min(vals), 3),
        "max": round(max(vals), 3),
        "runs": [round(v, 3) for v in vals],
    }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0.0 for a single value) of repeated runs, e.g. seeds."""
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}


def fit_or_reuse(run_dir: Path, make_config: Callable[[], Any], report_only: bool, label: str) -> dict[str, Any] | None:
    """The `summary.json` of the finished, tested run in `run_dir`; else train `make_config()` there
    (an unfinished folder starts again from scratch) and add its `wall_seconds`. None when
    `report_only` and the run has not finished. Lets accuracy benchmarks resume where they stopped."""
    import shutil

    from ordinalage.evaluation.evaluate import evaluate_after_training
    from ordinalage.runs.rundir import RunDir
    from ordinalage.training.train import train as fit

    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if summary.get("finished") and "test" in summary:
        print(f"[reuse] {run_dir}", file=sys.stderr)
        return summary
    if report_only:
        return None
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = make_config()
    print(f"[train] {label}", file=sys.stderr)
    start = time.perf_counter()
    fit(config)
    evaluate_after_training(run_dir)
    return RunDir(run_dir).update_summary(wall_seconds=time.perf_counter() - start)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def write_result(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write `payload` plus machine/version records to `out` (default benchmarks/results/NAME.json)."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "versions": versions(),
        **payload,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"wrote {path}", file=sys.stderr)
    return path


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="OUT", help="output file (default benchmarks/results/<name>.json)")
    return p


def utkface_files(folder: str | Path = UTKFACE, n: int | None = None, seed: int = 0) -> list[Path]:
    """`n` UTKFace files (a seeded sample; all when n is None) or exit with a clear message."""
    folder = Path(folder)
    if not folder.is_dir():
        sys.exit(f"UTKFace folder not found: {folder} (pass --data PATH)")
    files = list_images(folder, recursive=False)
    if n is not None:
        if n > len(files):
            sys.exit(f"{folder}: asked for {n} images, found {len(files)}")
        files = random.Random(seed).sample(files, n)
    return files


def utkface_age(path: Path) -> int:
    """The age of a UTKFace file name (the package's parser; a name without one is an error)."""
    parsed = parse_utkface_name(path.name)
    if parsed is None:
        sys.exit(f"{path}: not a UTKFace file name (age_gender_race_time.jpg)")
    return parsed.age


def write_csv_spec(files: Iterable[Path], out: str | Path) -> str:
    """A `csv:` data spec (columns path, age) listing UTKFace `files`; returns the spec string."""
    out = Path(out)
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "age"])
        for f in files:
            w.writerow([str(Path(f).resolve()), utkface_age(Path(f))])
    return f"csv:{out}"


def replace_block(path: str | Path, block: str) -> None:
    """Replace the text between a docs file's markers with `block`, which starts with the start marker
    and ends with the end marker (`<!-- NAME:start -->` ... `<!-- NAME:end -->`)."""
    path = Path(path)
    start, end = block.splitlines()[0], block.splitlines()[-1]
    text = path.read_text(encoding="utf-8")
    if start not in text or end not in text:
        sys.exit(f"{path}: no {start} ... {end} markers to replace")
    head, rest = text.split(start, 1)
    path.write_text(head + block + rest.split(end, 1)[1], encoding="utf-8")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result
