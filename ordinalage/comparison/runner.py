"""Run a bake-off's cells: an Optuna study with `GridSampler` over the cell ids hands cells to
workers (on the same storages as `tune`: SQLite for one worker, a journal file for `--workers N`,
a database URL for many machines running the same command). Each cell is an ordinary run folder
`DIR/<cell id>/` and its outcome `DIR/<cell id>/cell.json`, the ground truth a rerun reads:

- a finished cell (`status: done`) is never trained again;
- a cell is trained by whoever holds its lock file (`DIR/<cell id>.lock`, an `flock` that the
  operating system releases when its process dies, `kill -9` included), so two workers on one
  host never run the same cell; a killed cell is resumed from its `last.pt` by the next worker
  or by a rerun of the command;
- a cell that fails (NaN loss, unreadable data) is recorded with its reason (`status: failed`)
  and listed as missing in the report, never silently averaged away.

After the study runs out of grid points, each worker sweeps the cells once more, so that a cell
whose trial died with its worker is finished too.
"""

from __future__ import annotations

import fcntl
import hashlib
import multiprocessing
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ordinalage.atomic import write_json
from ordinalage.comparison.spec import BakeoffSpec, Cell
from ordinalage.data.loader_workers import apply_job_share
from ordinalage.errors import UsageError
from ordinalage.runs.rundir import RunDir, read_json_object

CELL_FILE = "cell.json"
LOG_FILE = "cells.log"  # one line per cell start and end: who trained what, and when
STUDY_NAME = "bakeoff"
TEST_KEYS = ("mae", "accuracy", "one_off", "ca5", "ca3", "n")


@dataclass(frozen=True)
class WorkerJob:
    spec: BakeoffSpec
    out: str
    storage: str
    index: int = 0
    quiet: bool = False
    jobs: int = 1  # parallel jobs on this host: each gets cores // jobs torch threads (data/loader_workers.py)


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / cell.id


def read_cell(out: Path, cell: Cell) -> dict[str, Any] | None:
    """The recorded outcome of a cell (None when it has none yet)."""
    path = cell_dir(out, cell) / CELL_FILE
    if not path.is_file():
        return None
    try:
        return read_json_object(path)
    except UsageError:
        return None  # half-written by a killed process (it is written atomically, so this is rare)


def cell_record(cell: Cell, out: Path, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": cell.id, "method": cell.method.name, "params": cell.method.params, "seed": cell.seed,
            "fold": cell.fold, "dataset": cell.dataset, "run": str(cell_dir(out, cell)), "status": status, **extra}


@contextmanager
def cell_lock(out: Path, cell: Cell) -> Iterator[bool]:
    """True while this process holds the cell's lock; False when another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / f"{cell.id}.lock", "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


def run_cell(spec: BakeoffSpec, cell: Cell, out: Path, quiet: bool = True) -> dict[str, Any] | None:
    """Train and test one cell unless it is done or another process holds it (then None)."""
    done = read_cell(out, cell)
    if done is not None and done.get("status") in ("done", "failed"):
        return done
    with cell_lock(out, cell) as mine:
        if not mine:
            return None
        done = read_cell(out, cell)  # finished by another process between the first look and the lock
        if done is not None and done.get("status") in ("done", "failed"):
            return done
        return _train_and_test(spec, cell, out, quiet)


def _train_and_test(spec: BakeoffSpec, cell: Cell, out: Path, quiet: bool) -> dict[str, Any]:
    from ordinalage.evaluation.compare import test_predictions_csv
    from ordinalage.evaluation.evaluate import evaluate_after_training
    from ordinalage.training.loop import TrainingDiverged
    from ordinalage.training.preemption import TrainingInterrupted
    from ordinalage.training.train import train

    folder = cell_dir(out, cell)
    started = time.monotonic()
    try:
        run = RunDir(folder)
        if run.last_pt.is_file():
            log_event(out, cell, "resume")
            _say(quiet, f"bake-off: resuming {cell.id}")
            train(None, resume=folder, quiet=True)
        else:
            if folder.exists():  # killed before its first checkpoint: start it again
                shutil.rmtree(folder)
            log_event(out, cell, "start")
            _say(quiet, f"bake-off: training {cell.id}")
            train(spec.cell_config(cell, out), quiet=True)
        trained_s = time.monotonic() - started
        summary = run.read_summary(tolerant=True)
        if not summary.get("finished"):
            raise UsageError(f"{folder}: the run stopped before it finished")
        eval_started = time.monotonic()
        result = evaluate_after_training(folder, show=False, force=True) or {}
        eval_s = time.monotonic() - eval_started
    except (KeyboardInterrupt, TrainingInterrupted):
        raise
    except (UsageError, TrainingDiverged, RuntimeError, ValueError, OSError) as exc:
        record = cell_record(cell, out, "failed", reason=f"{type(exc).__name__}: {exc}")
        write_json(folder / CELL_FILE, record)
        log_event(out, cell, "failed")
        _say(quiet, f"bake-off: {cell.id} failed: {exc}")
        return record
    train_s = float(summary.get("wall_seconds") or (summary.get("budget") or {}).get("seconds_before_test")
                    or trained_s)
    record = cell_record(cell, out, "done", minutes=round((train_s + eval_s) / 60.0, 3),
                         train_minutes=round(train_s / 60.0, 3), epochs=summary.get("epochs_done"),
                         budget_used=(summary.get("budget") or {}).get("used"),
                         test={k: result.get(k) for k in TEST_KEYS if k in result},
                         predictions=str(test_predictions_csv(folder).relative_to(folder)))
    write_json(folder / CELL_FILE, record)
    log_event(out, cell, "done")
    return record


def log_event(out: Path, cell: Cell, event: str) -> None:
    """Append `time host pid event cell` to DIR/cells.log (one write with O_APPEND: lines never interleave)."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {socket.gethostname()} {os.getpid()} {event} {cell.id}\n"
    fd = os.open(out / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def run_worker(job: WorkerJob, on_cell: Callable[[dict[str, Any] | None], None] | None = None) -> int:
    """One worker: take grid points from the study until none is left, then sweep the cells once."""
    import optuna

    from ordinalage.tuning.storage import open_storage

    apply_job_share(job.jobs)  # one of N jobs: its share of the cores, and `auto` loader workers from that
    out = Path(job.out)
    cells = job.spec.cells()
    by_id = {c.id: c for c in cells}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.GridSampler({"cell": [c.id for c in cells]}, seed=job.index)
    study = optuna.create_study(study_name=study_name(cells), storage=open_storage(job.storage), sampler=sampler,
                                direction="minimize", load_if_exists=True)
    ran = 0

    def objective(trial: Any) -> float:
        nonlocal ran
        cell = by_id[trial.suggest_categorical("cell", list(by_id))]
        trial.set_user_attr("pid", os.getpid())
        record = run_cell(job.spec, cell, out, quiet=job.quiet)
        if on_cell is not None:
            on_cell(record)
        if record is None:
            raise optuna.TrialPruned(f"{cell.id} is being trained by another worker")
        ran += 1
        if record.get("status") != "done":
            trial.set_user_attr("fail_reason", record.get("reason"))
            return float("nan")
        return float(record["test"].get("mae", float("nan")))

    study.optimize(objective, catch=())
    for cell in cells:  # cells whose trial died with its worker, or that the sampler handed out twice
        record = run_cell(job.spec, cell, out, quiet=job.quiet)
        if on_cell is not None:
            on_cell(record)
    return ran


def study_name(cells: list[Cell]) -> str:
    """The grid's study: one per set of cells, so that methods added to a bake-off get a new grid
    (Optuna fixes a parameter's choices per study) while their finished cells are reused from disk."""
    digest = hashlib.sha1("\n".join(sorted(c.id for c in cells)).encode()).hexdigest()[:10]
    return f"{STUDY_NAME}-{len(cells)}-{digest}"


def _worker_entry(job: WorkerJob) -> int:
    return run_worker(job)


def run_cells(spec: BakeoffSpec, out: Path, storage: str, workers: int = 1, quiet: bool = False,
              on_cell: Callable[[dict[str, Any] | None], None] | None = None) -> None:
    """Run every cell: in this process for one worker, in `workers` spawned processes otherwise
    (each with `cores // workers` torch threads and `data.num_workers: auto` resolved from that share)."""
    jobs = [WorkerJob(spec, str(out), storage, i, quiet, jobs=workers) for i in range(workers)]
    if workers == 1:
        run_worker(jobs[0], on_cell)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(_worker_entry, job) for job in jobs]:
            future.result()
