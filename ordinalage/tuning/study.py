"""`ordinalage tune`: an Optuna study over augmentation, sampling and training knobs.

`run_tune` reads a tune YAML (see `ordinalage.tuning.spec`), creates or continues the study
(``load_if_exists``), runs ``workers`` processes that train trials with `ordinalage.training.fit.fit`
until the study holds ``trials`` trials in total (finished or running; interrupted ones do not
count), then writes the best config, ``trials.csv``, plots and a table into the study folder
(default ``studies/<study>``). Running the same command again continues the study: an
interrupted study is completed, and a larger ``--trials`` extends it.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console

from ordinalage.errors import UsageError
from ordinalage.tuning.outputs import write_outputs
from ordinalage.tuning.runner import WorkerJob, fail_lost_trials, run_worker, target_count
from ordinalage.tuning.spec import TuneSpec, load_tune_spec, make_pruner, make_sampler
from ordinalage.tuning.storage import mask, open_storage, resolve_storage

__all__ = ["run_tune", "load_tune_spec", "open_study"]
MARKER = "study.json"


def _check_args(trials: int | None, timeout: float | None, workers: int) -> None:
    if workers < 1:
        raise UsageError(f"workers {workers}: must be at least 1", option="workers")
    if trials is not None and trials < 1:
        raise UsageError(f"trials {trials}: must be at least 1", option="trials")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"timeout {timeout}: must be a positive number of seconds", option="timeout")


def _check_folder(study_dir: Path, study_name: str, storage: str, explicit: bool) -> None:
    """Refuse a study folder that belongs to another study, or whose study lives in another storage
    when no --storage was given."""
    marker = study_dir / MARKER
    if not marker.is_file():
        return
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        owner, where = recorded.get("study_name"), recorded.get("storage")
    except (OSError, ValueError, AttributeError):
        owner = where = None
    if owner and owner != study_name:
        raise UsageError(f"{study_dir}: this folder holds study {owner!r}, not {study_name!r}; give another `out`",
                         option="out")
    if where and where != mask(storage) and not explicit:
        raise UsageError(f"{study_dir}: study {study_name!r} lives in {where}; give that `storage` again",
                         option="storage")


def _write_marker(study_dir: Path, study_name: str, storage: str) -> None:
    """Create the study folder and record which study (and storage, without password) it belongs to."""
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        marker = study_dir / MARKER
        if not marker.is_file():
            marker.write_text(json.dumps({"study_name": study_name, "storage": mask(storage)}, indent=2),
                              encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{study_dir}: cannot write the study folder ({exc.strerror or exc})") from None


def open_study(spec: TuneSpec, study_name: str, storage_url: str) -> Any:
    """Create the study or load it (`load_if_exists`); its direction must match the tune file."""
    import optuna

    storage = open_storage(storage_url)
    study = optuna.create_study(study_name=study_name, storage=storage, direction=spec.direction,
                                load_if_exists=True, sampler=make_sampler(spec, spec.seed), pruner=make_pruner(spec))
    if study.direction.name.lower() != spec.direction:
        raise UsageError(f"study {study_name!r} in {mask(storage_url)} is set to {study.direction.name.lower()}, "
                         f"but {spec.path} asks to {spec.direction} {spec.metric}")
    about = {"tune_file": spec.path, "metric": spec.metric, "epochs": spec.epochs,
             "space": [p.key for p in spec.space]}
    old = study.user_attrs.get("tune")
    if old is None:
        study.set_user_attr("tune", about)
    elif old != about:
        Console(stderr=True).print(f"note: study {study_name!r} was started with other settings ({old}); continuing")
    return study


def _run_workers(jobs: list[WorkerJob]) -> dict[str, int]:
    """Run the jobs: in this process for one, in spawned processes for several."""
    if len(jobs) == 1:
        return run_worker(jobs[0])
    totals: dict[str, int] = {}
    errors: list[BaseException] = []
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_worker, job) for job in jobs]
        try:
            for fut in futures:
                try:
                    for k, v in fut.result().items():
                        totals[k] = totals.get(k, 0) + v
                except UsageError as exc:
                    errors.append(exc)
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if errors:
        raise errors[0]
    return totals


def run_tune(config_path: str | Path, study_name: str | None = None, storage: str | None = None,
             trials: int | None = None, timeout: float | None = None, workers: int = 1, out: str | Path | None = None,
             sets: Sequence[str] = (), show: bool = True) -> dict[str, Any]:
    """Create or continue a study and run it until it holds `trials` trials in total.

    `trials` (default: the tune file's `trials`) is the total the study should reach, counting
    finished and running trials from every run and worker, but not interrupted ones; so running the
    same command again after an interruption completes the study, and a larger number extends it.
    `timeout` (seconds) stops starting new trials after that time. `storage`: see
    `ordinalage.tuning.storage` (default: SQLite for one worker, a journal file for several, in the
    study folder). Returns the study summary (also written to `<study folder>/summary.json`).
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the runner prints one line per trial
    try:
        return _run_tune(config_path, study_name, storage, trials, timeout, workers, out, sets, show)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run_tune(config_path: str | Path, study_name: str | None, storage: str | None, trials: int | None,
              timeout: float | None, workers: int, out: str | Path | None, sets: Sequence[str],
              show: bool) -> dict[str, Any]:
    _check_args(trials, timeout, workers)
    spec = load_tune_spec(config_path, sets, study_name)
    target = trials if trials is not None else spec.trials
    timeout = timeout if timeout is not None else spec.timeout
    if target is None and timeout is None:
        raise UsageError(f"{spec.path}: give `trials` or `timeout` (the tune file sets neither 'trials' nor 'timeout')",
                         option="trials")
    study_dir = Path(out) if out is not None else Path("studies") / spec.study_name
    url = resolve_storage(storage, study_dir, workers)
    _check_folder(study_dir, spec.study_name, url, explicit=storage is not None)
    study = open_study(spec, spec.study_name, url)
    _write_marker(study_dir, spec.study_name, url)
    console = Console(stderr=True, quiet=not show)
    lost = fail_lost_trials(study)
    if lost:
        console.print(f"marked trial(s) {', '.join(map(str, lost))} failed: their worker process is gone")
    have = target_count(study.get_trials(deepcopy=False))
    goal = f"{have}/{target} trials" if target is not None else f"{have} trials, running for {timeout:.0f}s"
    console.print(f"study [bold]{spec.study_name}[/] ({spec.direction} {spec.metric}, {spec.epochs} epoch(s) per trial) "
                  f"in {mask(url)}: {goal}, {workers} worker(s); folder {study_dir}", highlight=False)
    deadline = time.time() + timeout if timeout is not None else None
    if target is None or have < target:
        jobs = [WorkerJob(spec=spec, study_name=spec.study_name, storage_url=url, study_dir=str(study_dir),
                          target=target, deadline=deadline, index=i, workers=workers, show=show)
                for i in range(workers)]
        _run_workers(jobs)
        study = open_study(spec, spec.study_name, url)
    return write_outputs(study, spec, study_dir, mask(url), target, show=show)
