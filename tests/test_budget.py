"""Time-budgeted training (`train.time_budget_min`, `--budget`): parsing, the epochs that fit, a
budget run equal to a plain run with the epochs it chose, and the deadline that stops a run whose
estimate was wrong within its budget plus one validation. Tiny synthetic data, one thread."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from tiny_training import tiny

from ordinalage.errors import UsageError
from ordinalage.training import budget as budget_mod
from ordinalage.training.budget import BudgetPlan, epochs_that_fit, parse_budget
from ordinalage.training.fit import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def val_maes(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["val_mae"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize(("text", "minutes"), [("30m", 30.0), ("90s", 1.5), ("1.5h", 90.0), ("45min", 45.0),
                                               ("12", 12.0), (5, 5.0), (" 2.5 m ", 2.5)])
def test_parse_budget(text: str | int, minutes: float) -> None:
    assert parse_budget(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["", "m", "30 days", "-5m", "0", "1e3"])
def test_parse_budget_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="--budget"):
        parse_budget(text)


def test_epochs_that_fit_counts_whole_epochs_after_setup_and_the_test_evaluation() -> None:
    # 600 s budget, 60 s gone, 20 s test, 10 s reserve: 510 s left; an epoch is (100 * 0.4 + 10) * 1.05 = 52.5 s
    assert epochs_that_fit(600, 60, 100, 0.4, 10, 20, reserve_s=10) == 9
    assert epochs_that_fit(600, 560, 100, 0.4, 10, 20, reserve_s=10) == 0  # not one epoch left


def test_time_budget_must_be_positive(synth_cache_dir: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="train.time_budget_min"):
        tiny(synth_cache_dir, tmp_path / "r", "train.time_budget_min=0")


@pytest.mark.parametrize("workers", [0, 1])
def test_budget_run_fixes_its_epochs_and_equals_a_plain_run_with_them(synth_cache_dir: str, tmp_path: Path, workers: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny epochs on a loaded machine are noisy: this run is about the plan, so its deadline never comes
    monkeypatch.setattr(budget_mod, "deadline", lambda started, plan: float("inf"))
    fit(tiny(synth_cache_dir, tmp_path / "warm", "train.epochs=1"), quiet=True)  # the synthetic set and cache exist
    w = f"data.num_workers={workers}"
    run = fit(tiny(synth_cache_dir, tmp_path / "budget", "train.time_budget_min=0.3", w), quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    plan = summary["budget"]
    assert plan["minutes"] == 0.3 and plan["fits"] and not plan["stopped_at_deadline"]
    assert summary["epochs"] == summary["epochs_done"] == plan["epochs"] >= 1
    assert f"epochs: {plan['epochs']}" in (run / "config.yaml").read_text()  # resumable with the fixed epochs
    # the probe ran on a copy: same seed and epochs without a budget give the same run
    plain = fit(tiny(synth_cache_dir, tmp_path / "plain", f"train.epochs={plan['epochs']}", w), quiet=True)
    assert val_maes(run) == pytest.approx(val_maes(plain), abs=1e-6)


def test_a_resumed_budget_run_keeps_its_plan_and_epochs(synth_cache_dir: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget_mod, "deadline", lambda started, plan: float("inf"))
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.time_budget_min=0.3"), quiet=True, stop_after_epochs=1)
    fit(None, resume=run, quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    plan = summary["budget"]
    assert plan["resumed"] and plan["minutes"] == 0.3
    assert summary["finished"] and summary["epochs_done"] == plan["epochs"] >= 2


def test_deadline_stops_a_run_within_its_budget_plus_one_validation(synth_cache_dir: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fit(tiny(synth_cache_dir, tmp_path / "warm", "train.epochs=1", "data.synth_n=400"), quiet=True)
    real_plan = budget_mod.plan_budget

    def overoptimistic(*args: object, **kwargs: object) -> BudgetPlan:  # a machine that slowed after the probe
        plan = real_plan(*args, **kwargs)  # type: ignore[arg-type]
        plan.epochs, plan.test_s = 10_000, 0.0
        return plan

    monkeypatch.setattr(budget_mod, "RESERVE_S", 0.0)
    monkeypatch.setattr(budget_mod, "plan_budget", overoptimistic)
    start = time.monotonic()
    run = fit(tiny(synth_cache_dir, tmp_path / "deadline", "train.time_budget_min=0.1",
                   "data.synth_n=400", "train.batch_size=16"), quiet=True)
    elapsed = time.monotonic() - start
    summary = json.loads((run / "summary.json").read_text())
    assert summary["budget"]["stopped_at_deadline"] and summary["finished"]
    assert 1 <= summary["epochs_done"] < 10_000
    validation = summary["budget"]["val_s"]
    assert elapsed <= 6.0 + validation + 2.0 + summary["budget"]["step_s"], (elapsed, validation)
    assert (run / "best.pt").is_file()


def test_cli_budget_flag_reaches_the_config(synth_cache_dir: str, tmp_path: Path) -> None:
    from ordinalage.cli import main

    code = main(["train", "--budget", "20s", "--out", str(tmp_path / "cli"), "--set", f"data.cache_dir={synth_cache_dir}",
                 "--set", "data.synth_n=160", "--set", "data.image_size=32", "--set", "model.width=8",
                 "--set", "train.eval_on_end=false", "--set", "data.num_workers=0", "--device", "cpu"])
    assert code == 0
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["budget"]["minutes"] == pytest.approx(1 / 3, abs=1e-3)


def test_cli_budget_flag_rejects_a_bad_time(capsys: pytest.CaptureFixture[str]) -> None:
    from ordinalage.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--budget", "soon"])
    assert "--budget" in capsys.readouterr().err


def test_probe_takes_the_median_chunk_so_one_burst_of_load_does_not_set_the_plan() -> None:
    calls = []

    def step(batch: int) -> None:
        calls.append(batch)
        time.sleep(0.05 if 5 <= len(calls) <= 7 else 0.002)  # a burst of load: the second chunk (calls 5-7)

    per_step, _, timed = budget_mod._timed_steps(step, list(range(100)), steps=12, warmup=1, chunks=4)
    assert timed == 12 and len(calls) == 13
    assert per_step < 0.01  # the mean over all 12 steps would be 0.014
