"""One worker of a study: take trials until the study reaches its target, train each with `fit`.

Workers coordinate only through the Optuna storage (plus a file lock in the study folder that
makes "count, then ask" atomic among the workers of one host, so a study stops at exactly its
target there). A trial's run folder is ``<study>/trials/<number>``. A trial that fails (NaN loss,
out of memory, a bad combination of values, any other error) is recorded as failed with its
reason in the user attribute ``fail_reason`` and the worker goes on; an interrupted trial is
recorded with ``fail_reason: interrupted`` and does not count towards the target.

A worker that gets SIGTERM or SIGUSR1 (a scheduler preempting it, `kill`) records its trial as
failed with ``fail_reason: preempted (SIGTERM)`` and stops; inside training the step in progress
finishes first (`TrainingPreempted`), elsewhere in the trial the signal stops it at once, and
between trials the worker just takes no further trial. Such a trial never stays RUNNING and, like
an interrupted one, does not count towards the target: rerunning the study replaces it.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ordinalage.data.loader_workers import apply_job_share
from ordinalage.errors import UsageError
from ordinalage.reporting.formatting import short
from ordinalage.training.preemption import PreemptionSignals, TrainingPreempted
from ordinalage.tuning.spec import TuneSpec, make_pruner, make_sampler
from ordinalage.tuning.storage import open_storage

HOST = socket.gethostname()
INTERRUPTED = "interrupted"
PREEMPTED = "preempted"  # fail_reason "preempted (SIGTERM)": does not count towards the target


class TrialFailed(Exception):
    """A trial failed for a recorded reason; the study goes on."""


class WorkerPreempted(KeyboardInterrupt):
    """SIGTERM or SIGUSR1 reached a tuning worker outside training (a KeyboardInterrupt, so that
    Optuna records the trial it stops as failed, and no `except Exception` swallows it)."""

    def __init__(self, signal_name: str = "SIGTERM") -> None:
        super().__init__(f"tuning worker stopped by {signal_name}")
        self.signal_name = signal_name

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.signal_name,)


class _WorkerSignals(PreemptionSignals):
    """The preemption handlers (`training.preemption`) around a worker's loop. Inside a trial the
    signal raises `WorkerPreempted` (training installs its own handlers, which finish the step
    first); between trials it is noted (`signal_name`) and no trial starts."""

    def __init__(self) -> None:
        super().__init__()
        self.in_trial = False

    def on_signal(self, name: str) -> None:
        if self.in_trial:
            self.in_trial = False  # raise once
            raise WorkerPreempted(name)


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker process needs (plain, picklable data)."""

    spec: TuneSpec
    study_name: str
    storage_url: str
    study_dir: str
    target: int | None  # total trials the study should reach; None: until the deadline
    deadline: float | None  # time.time() after which no trial starts
    index: int = 0
    workers: int = 1
    show: bool = True


# --------------------------------------------------------------------------------------------- counting


def counts_toward_target(trial: Any) -> bool:
    """Finished trials count, and running ones (they will finish); interrupted trials and trials
    failed by the storage for a lost worker (no `fail_reason`) do not, so a rerun replaces them."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
        return True
    reason = trial.user_attrs.get("fail_reason")
    return (trial.state == TrialState.FAIL and bool(reason) and reason != INTERRUPTED
            and not str(reason).startswith(PREEMPTED))


def target_count(trials: Iterable[Any]) -> int:
    return sum(1 for t in trials if counts_toward_target(t))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def fail_lost_trials(study: Any) -> list[int]:
    """Mark RUNNING trials whose worker process on this host is gone as failed (no `fail_reason`,
    so they do not count towards the target). Returns their numbers."""
    from optuna.trial import TrialState

    if os.name != "posix":
        return []
    lost = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == HOST and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid):
            study.tell(t.number, state=TrialState.FAIL)
            lost.append(t.number)
    return lost


class HostLock:
    """An advisory file lock shared by the workers of one host (a no-op where fcntl is missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        self._fh = self.path.open("a")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


# --------------------------------------------------------------------------------------------- the objective


def _reason(exc: BaseException) -> str:
    from ordinalage.training.loop import TrainingDiverged

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, TrainingDiverged):
        return f"diverged: {text}"
    if _is_oom(exc):
        return f"out of memory: {text}"
    if isinstance(exc, UsageError):
        return f"bad combination: {text}"
    return f"{type(exc).__name__}: {text}"


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Objective:
    """Train one trial with `fit` and return the best per-epoch value of the objective metric."""

    def __init__(self, job: WorkerJob, lock: HostLock, console: Console, device: str | None,
                 signals: _WorkerSignals | None = None) -> None:
        self.job, self.spec, self.lock, self.console, self.device = job, job.spec, lock, console, device
        self.signals = signals
        self.last_state = ""
        self.last_number: int | None = None

    def __call__(self, trial: Any) -> float:
        if self.signals is None:
            return self._run(trial)
        self.signals.in_trial = True
        try:
            if self.signals.signal_name:  # the signal came while Optuna created this trial
                raise WorkerPreempted(self.signals.signal_name)
            return self._run(trial)
        except WorkerPreempted as exc:
            trial.set_user_attr("fail_reason", f"{PREEMPTED} ({exc.signal_name})")
            self.last_state = "fail"
            raise
        finally:
            self.signals.in_trial = False

    def _run(self, trial: Any) -> float:
        import optuna

        from ordinalage.training import fit as train

        self.lock.release()  # the trial exists now: other workers may ask for theirs
        self.last_number = trial.number
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        run_dir = Path(self.job.study_dir) / "trials" / str(trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        minimize = self.spec.direction == "minimize"
        best: list[float] = []

        def on_epoch(epoch: int, row: dict[str, Any]) -> None:
            value = float(row[self.spec.metric])
            if not math.isfinite(value):
                return
            best[:] = [value if not best else (min if minimize else max)(best[0], value)]
            trial.report(value, epoch)
            if epoch < self.spec.epochs and trial.should_prune():  # after the last epoch there is nothing to save
                trial.set_user_attr("pruned_at", epoch)
                raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.spec.metric} {value:.4g}")

        try:
            values = {p.key: p.suggest(trial) for p in self.spec.space}
            config = self.spec.trial_config(values, run_dir, self.device)
            if run_dir.exists():  # left by an earlier study whose storage was reset: trial numbers restart
                shutil.rmtree(run_dir)
            train.fit(config, on_epoch=on_epoch, quiet=True)
        except optuna.TrialPruned:
            self.last_state = "pruned"
            raise
        except TrainingPreempted as exc:  # the step finished and last.pt was written; the trial is lost
            trial.set_user_attr("fail_reason", f"{PREEMPTED} ({exc.signal_name})")
            self.last_state = "fail"
            raise
        except WorkerPreempted:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, the study goes on
            reason = _reason(exc)
            if _is_oom(exc):
                _free_device_memory()
            elif not isinstance(exc, UsageError):
                traceback.print_exc(file=sys.stderr)
            return self._fail(trial, reason)
        if not best:
            return self._fail(trial, f"no finite {self.spec.metric} in any epoch")
        self.last_state = "complete"
        if "tensorboard" in config.train.loggers:  # one HParams row per trial under <study>/tensorboard
            from ordinalage.training.loggers import log_trial

            log_trial(self.job.study_dir, trial.number, values, best[0])
        return best[0]

    def _fail(self, trial: Any, reason: str) -> float:
        trial.set_user_attr("fail_reason", reason)
        self.last_state = "fail"
        raise TrialFailed(reason)


# --------------------------------------------------------------------------------------------- the worker loop


def _trial_line(t: Any, spec: TuneSpec) -> str:
    """One console line per finished trial."""
    from optuna.trial import TrialState

    params = "  ".join(f"{k}={short(v)}" for k, v in t.params.items())
    secs = f"{t.duration.total_seconds():.1f}s" if t.duration else ""
    if t.state == TrialState.COMPLETE:
        what = f"[green]complete[/] {spec.metric} {t.value:.4g}"
    elif t.state == TrialState.PRUNED:
        what = f"[yellow]pruned[/] after epoch {t.user_attrs.get('pruned_at', '?')}"
    else:
        what = f"[red]{t.state.name.lower()}[/] ({t.user_attrs.get('fail_reason', 'no reason recorded')})"
    return f"trial {t.number} {what}  {secs}  {params}"


def _device_for(job: WorkerJob) -> str | None:
    """Spread workers over the GPUs of a multi-GPU host when the base config leaves the device to us."""
    if job.workers <= 1:
        return None
    device = str(job.spec.base.get("train", {}).get("device", "auto"))
    if device not in ("auto", "cuda"):
        return None
    import torch

    n = torch.cuda.device_count()
    return f"cuda:{job.index % n}" if n > 1 else None


def run_worker(job: WorkerJob) -> dict[str, int]:
    """Run trials until the study reaches `job.target` (or the deadline). Returns counts by outcome."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # this loop prints one line per trial instead
    try:
        return _work(job)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _work(job: WorkerJob) -> dict[str, int]:
    import optuna

    console = Console(stderr=True, quiet=not job.show)
    apply_job_share(job.workers)  # one of N workers: cores // N torch threads, `auto` loader workers from that
    storage = open_storage(job.storage_url)
    done_before = len(optuna.load_study(study_name=job.study_name, storage=storage).trials)
    sampler = make_sampler(job.spec, seed=(job.spec.seed * 1_000_003 + job.index * 7919 + done_before) % 2**32)
    study = optuna.load_study(study_name=job.study_name, storage=storage, sampler=sampler,
                              pruner=make_pruner(job.spec))
    lock = HostLock(Path(job.study_dir) / ".ask.lock")
    with _WorkerSignals() as signals:
        return _trials(job, study, lock, Objective(job, lock, console, _device_for(job), signals), console, signals)


def _trials(job: WorkerJob, study: Any, lock: HostLock, objective: Objective, console: Console,
            signals: _WorkerSignals) -> dict[str, int]:
    outcomes = {"complete": 0, "pruned": 0, "fail": 0}
    fails_in_row = 0
    while job.deadline is None or time.time() < job.deadline:
        if signals.signal_name:  # signalled between trials: take no further trial
            raise WorkerPreempted(signals.signal_name)
        lock.acquire()
        try:
            if job.target is not None and target_count(study.get_trials(deepcopy=False)) >= job.target:
                break
            objective.last_state, objective.last_number = "", None
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        finally:
            lock.release()
        number = objective.last_number
        trial = study.get_trials(deepcopy=False)[number] if number is not None else None
        if trial is not None:
            console.print(_trial_line(trial, job.spec), highlight=False)
        state = objective.last_state or "fail"
        outcomes[state] = outcomes.get(state, 0) + 1
        fails_in_row = fails_in_row + 1 if state == "fail" else 0
        limit = job.spec.stop_after_failures
        if limit and fails_in_row >= limit:
            reason = trial.user_attrs.get("fail_reason", "?") if trial is not None else "?"
            raise UsageError(f"{job.spec.path}: {fails_in_row} trials in a row failed, the last with: {reason} "
                             "(check the base config; stop_after_failures sets this limit)")
    return outcomes
