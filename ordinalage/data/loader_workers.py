"""How many cores this process may use, and how many DataLoader workers `data.num_workers: auto` means.

The rule (`resolve_num_workers`): `auto` is 0 workers on <= 2 usable cores (the model and the
workers would share them: on 2 cores 0 workers trained 1.3-1.7x more epochs per minute,
benchmarks/results/budget_utkface.json), otherwise `min(cores - 1, 8)`. Usable cores are this
process's CPU affinity (`os.sched_getaffinity`, else `os.cpu_count`), or the share that
`apply_job_share` gave it when N jobs run side by side (a bake-off's or a study's worker
processes): `cores // N` torch threads each, at least 1, and loader workers resolved from that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ordinalage.config import check_num_workers

AUTO = "auto"
MAX_AUTO_WORKERS = 8
KEY = "data.num_workers"

_share: int | None = None  # cores given to this process by apply_job_share (None: all usable cores)


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_budget() -> int:
    """The cores this process should use: its job share when one is set, else `usable_cores()`."""
    return _share if _share is not None else usable_cores()


def auto_workers(cores: int) -> int:
    """The loader workers `auto` means on `cores` cores: 0 on <= 2, else min(cores - 1, 8)."""
    return 0 if cores <= 2 else min(cores - 1, MAX_AUTO_WORKERS)


def resolve_num_workers(value: int | str, cores: int | None = None) -> int:
    """DataLoader workers for `data.num_workers` = `value` (`auto` or an int >= 0) on `cores`
    cores (default: `cpu_budget()`)."""
    checked = check_num_workers(value)
    if isinstance(checked, int):
        return checked
    return auto_workers(cpu_budget() if cores is None else cores)


def describe_num_workers(value: int | str, cores: int | None = None) -> str:
    """One line for the log, e.g. "data.num_workers auto -> 0 (2 usable cores)"."""
    n = cpu_budget() if cores is None else cores
    return f"{KEY} {value} -> {resolve_num_workers(value, n)} ({n} usable core{'s' if n != 1 else ''})"


def num_workers_record(value: int | str, cores: int | None = None) -> dict[str, int | str]:
    """What a run records: the value given, the workers it resolved to and the cores it saw."""
    n = cpu_budget() if cores is None else cores
    return {"given": value, "resolved": resolve_num_workers(value, n), "usable_cores": n}


@dataclass(frozen=True)
class JobShare:
    """One of N parallel jobs' share of the machine: torch threads and `auto` loader workers."""

    jobs: int
    threads: int
    loader_workers: int


def job_share(jobs: int, cores: int | None = None) -> JobShare:
    """`cores` (default: this process's usable cores) split over `jobs` parallel jobs."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    threads = max(1, (usable_cores() if cores is None else cores) // jobs)
    return JobShare(jobs=jobs, threads=threads, loader_workers=auto_workers(threads))


def apply_job_share(jobs: int, cores: int | None = None) -> JobShare:
    """Make this process one of `jobs` parallel jobs: torch threads and `auto` use its share
    (a single job keeps every core and torch's own thread count)."""
    global _share
    share = job_share(jobs, cores)
    if jobs > 1:
        import torch

        torch.set_num_threads(share.threads)
        _share = share.threads
    return share


def clear_job_share() -> None:
    """Forget a share set by `apply_job_share` (tests; a process that goes back to running alone)."""
    global _share
    _share = None


__all__ = ["AUTO", "JobShare", "apply_job_share", "auto_workers", "check_num_workers", "clear_job_share",
           "cpu_budget", "describe_num_workers", "job_share", "num_workers_record", "resolve_num_workers",
           "usable_cores"]
