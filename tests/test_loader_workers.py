"""`data.num_workers: auto` (the default) and the per-job share of the cores (data/loader_workers.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from tiny_training import tiny

from ordinalage.config import Config, DataConfig, from_dict, load_config, save_config, to_dict
from ordinalage.data import loader_workers as lw
from ordinalage.errors import UsageError


@pytest.fixture(autouse=True)
def no_share() -> Iterator[None]:
    """Every test starts and ends without a job share, and with torch's thread count as it found it."""
    threads = torch.get_num_threads()
    lw.clear_job_share()
    yield
    lw.clear_job_share()
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (3, 2), (4, 3), (9, 8), (16, 8), (64, 8)])
def test_auto_is_0_on_2_cores_or_fewer_else_cores_minus_1_up_to_8(cores: int, workers: int) -> None:
    assert lw.resolve_num_workers("auto", cores=cores) == workers


@pytest.mark.parametrize("value", [0, 1, 2, 5, 12])
def test_an_explicit_int_is_kept_whatever_the_cores(value: int) -> None:
    assert lw.resolve_num_workers(value, cores=1) == lw.resolve_num_workers(value, cores=64) == value


@pytest.mark.parametrize("value", [-1, "Auto", "three", "", None, True, 1.5, [2]])
def test_bad_values_name_the_key(value: object) -> None:
    with pytest.raises(UsageError, match=r"data\.num_workers"):
        lw.resolve_num_workers(value, cores=4)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["-1", "'auto?'", "true", "[2]", "1.5"])
def test_bad_values_in_a_config_name_the_key(value: str) -> None:
    with pytest.raises(UsageError, match=r"data\.num_workers"):
        load_config(sets=[f"data.num_workers={value}"])


def test_the_default_is_auto_and_a_digit_string_is_an_int() -> None:
    assert DataConfig().num_workers == "auto" and load_config().data.num_workers == "auto"
    assert DataConfig(num_workers="3").num_workers == 3  # type: ignore[arg-type]  # as a command-line flag gives it


def test_usable_cores_follow_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lw.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert lw.usable_cores() == 3 and lw.resolve_num_workers("auto") == 2
    monkeypatch.delattr(lw.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(lw.os, "cpu_count", lambda: 2)
    assert lw.usable_cores() == 2 and lw.resolve_num_workers("auto") == 0


@pytest.mark.parametrize(("cores", "jobs", "threads", "workers"),
                         [(16, 8, 2, 0), (16, 2, 8, 7), (2, 2, 1, 0), (16, 1, 16, 8), (3, 4, 1, 0), (64, 4, 16, 8)])
def test_each_of_n_jobs_gets_cores_over_n_threads_and_workers_from_that_share(cores: int, jobs: int, threads: int,
                                                                              workers: int) -> None:
    share = lw.job_share(jobs, cores=cores)
    assert (share.jobs, share.threads, share.loader_workers) == (jobs, threads, workers)


def test_applying_a_share_sets_torch_threads_and_what_auto_means(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lw, "usable_cores", lambda: 16)
    assert lw.resolve_num_workers("auto") == 8
    share = lw.apply_job_share(2)
    assert torch.get_num_threads() == share.threads == 8
    assert lw.cpu_budget() == 8 and lw.resolve_num_workers("auto") == 7 and lw.resolve_num_workers(3) == 3
    assert lw.describe_num_workers("auto") == "data.num_workers auto -> 7 (8 usable cores)"
    lw.clear_job_share()
    assert lw.resolve_num_workers("auto") == 8


def test_one_job_keeps_every_core_and_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lw, "usable_cores", lambda: 16)
    before = torch.get_num_threads()
    assert lw.apply_job_share(1).threads == 16
    assert torch.get_num_threads() == before and lw.cpu_budget() == 16


def test_describe_and_record_say_what_auto_chose() -> None:
    assert lw.describe_num_workers("auto", cores=2) == "data.num_workers auto -> 0 (2 usable cores)"
    assert lw.describe_num_workers(4, cores=1) == "data.num_workers 4 -> 4 (1 usable core)"
    assert lw.num_workers_record("auto", cores=16) == {"given": "auto", "resolved": 8, "usable_cores": 16}


def test_a_config_with_auto_loads_validates_and_round_trips_through_config_yaml(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  num_workers: auto\ntrain:\n  epochs: 2\n")
    config = load_config(path)
    assert config.data.num_workers == "auto"
    saved = tmp_path / "config.yaml"
    save_config(config, saved)
    assert yaml.safe_load(saved.read_text())["data"]["num_workers"] == "auto"  # what was given, not what it chose
    assert load_config(saved) == config and from_dict(Config, to_dict(config)) == config
    assert load_config(path, sets=["data.num_workers=3"]).data.num_workers == 3


def test_training_says_once_what_auto_chose_and_records_it(synth_cache_dir: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from ordinalage.training.fit import fit

    monkeypatch.setattr(lw, "usable_cores", lambda: 2)
    torch.set_num_threads(1)
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "data.num_workers=auto", "train.epochs=1"), quiet=False)
    err = capsys.readouterr().err
    assert err.count("data.num_workers auto -> 0 (2 usable cores)") == 1
    assert json.loads((run / "summary.json").read_text())["num_workers"] == {
        "given": "auto", "resolved": 0, "usable_cores": 2}
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["num_workers"] == "auto"


class _Applied(Exception):
    """Raised by a stand-in for apply_job_share: the worker asked for its share first thing."""


def _record_share(jobs: int, cores: int | None = None) -> lw.JobShare:
    raise _Applied(jobs)


def test_each_bakeoff_job_applies_its_share(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from concurrent.futures import Future

    from ordinalage.comparison import runner

    submitted: list[runner.WorkerJob] = []

    class InlinePool:
        def __init__(self, max_workers: int, mp_context: object) -> None:
            self.max_workers = max_workers

        def __enter__(self) -> InlinePool:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def submit(self, fn: object, job: runner.WorkerJob) -> Future[int]:
            submitted.append(job)
            done: Future[int] = Future()
            done.set_result(0)
            return done

    monkeypatch.setattr(runner, "ProcessPoolExecutor", InlinePool)
    runner.run_cells(None, tmp_path, "journal:x", workers=3)  # type: ignore[arg-type]
    assert [j.jobs for j in submitted] == [3, 3, 3] and [j.index for j in submitted] == [0, 1, 2]
    monkeypatch.setattr(runner, "apply_job_share", _record_share)
    with pytest.raises(_Applied, match="3"):
        runner.run_worker(submitted[0])


def test_each_tune_worker_applies_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    from ordinalage.tuning import runner

    monkeypatch.setattr(runner, "apply_job_share", _record_share)
    job = runner.WorkerJob(spec=None, study_name="s", storage_url="journal:x", study_dir=".", target=1,  # type: ignore[arg-type]
                           deadline=None, index=0, workers=4, show=False)
    with pytest.raises(_Applied, match="4"):
        runner._work(job)
