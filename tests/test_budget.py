"""Time-budgeted training (`train.time_budget_min`, `--budget`): parsing, the epochs that fit, the
re-plan after every epoch (on a fake clock, and in a real 2-minute run whose start is slowed by
CPU-burning processes), the schedule that follows the plan, a budget run equal to a plain run with
the epochs it got, a resumed run that keeps the minutes it has left, and the deadline that stops a
run whose estimate was wrong within its budget plus one validation. Tiny synthetic data, one thread."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_training import tiny

from ordinalage.config import load_config
from ordinalage.errors import UsageError
from ordinalage.training import budget as budget_mod
from ordinalage.training.budget import BudgetCosine, BudgetPlan, epochs_that_fit, parse_budget, replan
from ordinalage.training.fit import fit
from ordinalage.training.optim import SCHEDULERS

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
    with pytest.raises(UsageError, match="^budget"):
        parse_budget(text)


def test_epochs_that_fit_counts_whole_epochs_after_setup_and_the_test_evaluation() -> None:
    # 600 s budget, 60 s gone, 20 s test, 10 s reserve: 510 s left; an epoch is (100 * 0.4 + 10) * 1.05 = 52.5 s
    assert epochs_that_fit(600, 60, 100, 0.4, 10, 20, reserve_s=10) == 9
    assert epochs_that_fit(600, 560, 100, 0.4, 10, 20, reserve_s=10) == 0  # not one epoch left


def test_time_budget_must_be_positive(synth_cache_dir: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="train.time_budget_min"):
        tiny(synth_cache_dir, tmp_path / "r", "train.time_budget_min=0")


@pytest.mark.parametrize("workers", [0, 1])
def test_a_budget_run_with_a_steady_plan_equals_a_plain_run_with_its_epochs(synth_cache_dir: str, tmp_path: Path,
                                                                            workers: int,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny epochs on a loaded machine are noisy: this run is about the plan, so its deadline never comes,
    # and the re-plans run (and are recorded) but keep the probe's epochs
    monkeypatch.setattr(budget_mod, "deadline", lambda started, plan: float("inf"))
    real_replan = budget_mod.replan

    def steady(plan: BudgetPlan, **kwargs: object) -> BudgetPlan:
        epochs = plan.epochs
        real_replan(plan, **kwargs)  # type: ignore[arg-type]
        plan.epochs = epochs
        return plan

    monkeypatch.setattr(budget_mod, "replan", steady)
    fit(tiny(synth_cache_dir, tmp_path / "warm", "train.epochs=1"), quiet=True)  # the synthetic set and cache exist
    w = f"data.num_workers={workers}"
    run = fit(tiny(synth_cache_dir, tmp_path / "budget", "train.time_budget_min=0.3", w), quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    plan = summary["budget"]
    assert plan["minutes"] == 0.3 and plan["fits"] and not plan["stopped_at_deadline"]
    assert summary["epochs"] == summary["epochs_done"] == plan["epochs"] == plan["first_epochs"] >= 1
    assert [r["epoch"] for r in plan["replans"]] == list(range(1, plan["epochs"] + 1))
    assert plan["used"] > 0  # (no deadline here: a loaded machine may take longer than the budget)
    assert f"epochs: {plan['epochs']}" in (run / "config.yaml").read_text()  # resumable with the current plan
    # the probe ran on a copy: same seed and epochs without a budget give the same run
    plain = fit(tiny(synth_cache_dir, tmp_path / "plain", f"train.epochs={plan['epochs']}", w), quiet=True)
    assert val_maes(run) == pytest.approx(val_maes(plain), abs=1e-6)


def test_a_resumed_budget_run_keeps_its_plan_and_epochs(synth_cache_dir: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget_mod, "deadline", lambda started, plan: float("inf"))
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.time_budget_min=0.3"), quiet=True, stop_after_epochs=1)
    spent = torch.load(run / "last.pt", weights_only=True)["elapsed_s"]
    assert spent > 0
    fit(None, resume=run, quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    plan = summary["budget"]
    assert plan["resumed"] and plan["minutes"] == 0.3
    assert summary["finished"] and summary["epochs_done"] == plan["epochs"] >= 2
    assert plan["seconds_before_test"] > spent  # the seconds before the resume count
    assert [r["epoch"] for r in plan["replans"]] == list(range(1, plan["epochs"] + 1))  # kept across the resume


def test_a_resumed_budget_run_keeps_the_minutes_it_has_left(synth_cache_dir: str, tmp_path: Path) -> None:
    """last.pt keeps the seconds spent: the resumed run re-plans for, and stops at the deadline of,
    what is left, not a whole new budget (which would end this run about `spent` seconds late)."""
    fit(tiny(synth_cache_dir, tmp_path / "warm", "train.epochs=1", "data.synth_n=400"), quiet=True)
    sets = ["train.time_budget_min=0.25", "data.synth_n=400", "train.batch_size=16"]
    run = fit(tiny(synth_cache_dir, tmp_path / "run", *sets), quiet=True, stop_after_epochs=3)
    spent = float(torch.load(run / "last.pt", weights_only=True)["elapsed_s"])
    start = time.monotonic()
    fit(None, resume=run, quiet=True)
    resumed_s = time.monotonic() - start
    budget = json.loads((run / "summary.json").read_text())["budget"]
    slack = budget["val_s"] + 2.0 + budget["step_s"]  # one validation, the last step, the summary
    assert spent + resumed_s <= 15.0 + slack, (spent, resumed_s, budget)
    assert budget["used"] == pytest.approx((spent + resumed_s) / 15.0, abs=0.1)


def test_deadline_stops_a_run_within_its_budget_plus_one_validation(synth_cache_dir: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fit(tiny(synth_cache_dir, tmp_path / "warm", "train.epochs=1", "data.synth_n=400"), quiet=True)
    real_plan = budget_mod.plan_budget

    def overoptimistic(*args: object, **kwargs: object) -> BudgetPlan:  # a machine that slowed after the probe
        plan = real_plan(*args, **kwargs)  # type: ignore[arg-type]
        plan.epochs, plan.test_s = 10_000, 0.0
        return plan

    real_replan = budget_mod.replan

    def still_overoptimistic(plan: BudgetPlan, **kwargs: object) -> BudgetPlan:  # and the re-plans do not see it
        real_replan(plan, **kwargs)  # type: ignore[arg-type]
        plan.epochs, plan.test_s = 10_000, 0.0
        return plan

    monkeypatch.setattr(budget_mod, "RESERVE_S", 0.0)
    monkeypatch.setattr(budget_mod, "plan_budget", overoptimistic)
    monkeypatch.setattr(budget_mod, "replan", still_overoptimistic)
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


# --------------------------------------------------------------------------------------------- re-planning


def _simulate(step_s_of_epoch, budget_s: float = 1800.0, steps: int = 500, val_s: float = 2.0,
              setup_s: float = 40.0, probe_step_s: float = 0.263) -> tuple[BudgetPlan, float]:
    """A budget run on a fake clock: the probe measures `probe_step_s`, epoch k then trains at
    `step_s_of_epoch(k)` s/step; the re-plan after every epoch sets the epochs and the deadline
    (which cuts an epoch short, as the training loop does). Returns the plan and the seconds when
    training and its last validation ended."""
    first = max(1, epochs_that_fit(budget_s, setup_s, steps, probe_step_s, val_s, 0.0,
                                   reserve_s=budget_mod.reserve_for(budget_s)))
    plan = BudgetPlan(minutes=budget_s / 60, epochs=first, steps_per_epoch=steps, step_s=probe_step_s, val_s=val_s,
                      epoch_overhead_s=0.0, test_s=0.0, setup_s=setup_s, probe_steps=24, first_epochs=first,
                      probe_step_s=probe_step_s)
    clock, done = setup_s, 0
    while done < plan.epochs:
        end = budget_mod.deadline(0.0, plan)
        step_s = step_s_of_epoch(done + 1)
        ran = min(steps, max(1, math.ceil((end - clock) / step_s)))  # the step that passes the deadline finishes
        clock += ran * step_s + val_s
        done += 1
        if ran < steps:
            break  # the deadline cut this epoch: validate once and stop
        replan(plan, epochs_done=done, steps=ran, train_s=ran * step_s, other_s=val_s, val_s=val_s,
               elapsed_s=clock, test_per_val=0.0)
    return plan, clock


def test_replanning_fills_a_budget_whose_probe_met_a_busy_machine() -> None:
    """The report: the probe measured 263 ms/step, the run then trained at 78 ms/step, and a plan
    fixed at the start trained 12 epochs where about 45 fitted, using a third of its budget."""
    plan, ended = _simulate(lambda epoch: 0.078)
    assert plan.first_epochs == 12
    assert plan.epochs >= 40 and ended / 1800 >= 0.9
    assert ended <= 1800 - budget_mod.reserve_for(1800)
    assert [r["epoch"] for r in plan.replans] == list(range(1, plan.epochs + 1))
    assert plan.replans[0]["step_s"] == pytest.approx(0.078)


def test_replanning_takes_the_median_of_recent_epochs() -> None:
    slow_start = {1: 0.3, 2: 0.25}  # a busy machine for the first two epochs, then a quiet one
    plan, ended = _simulate(lambda epoch: slow_start.get(epoch, 0.078))
    assert plan.replans[0]["epochs"] < plan.replans[1]["epochs"] < plan.replans[2]["epochs"]
    assert plan.replans[2]["step_s"] == pytest.approx(0.25)  # median of 0.3, 0.25, 0.078
    assert plan.replans[3]["step_s"] == pytest.approx(0.078)
    assert ended / 1800 >= 0.9


def test_a_machine_that_slows_down_later_ends_within_budget_plus_one_validation() -> None:
    plan, ended = _simulate(lambda epoch: 0.078 if epoch < 30 else 0.4)  # four times slower from epoch 30
    assert plan.epochs < 40  # the plan shrank
    assert ended <= 1800 + 2.0  # the budget and one validation
    assert ended / 1800 >= 0.85  # less than one of the slow 200 s epochs is left unused


def test_budget_cosine_equals_the_plain_cosine_until_a_replan_moves_its_end() -> None:
    config = load_config(sets=["train.epochs=10", "train.warmup_epochs=0.5"])
    steps = 20
    plain, budget = SCHEDULERS["cosine"](config, steps), BudgetCosine.for_config(config, steps)
    assert [budget(s) for s in range(220)] == [plain(s) for s in range(220)]
    budget.retarget(80, 400)  # after 4 epochs: 20 epochs fit, not 10
    assert budget(80) == plain(80)  # no jump
    factors = [budget(s) for s in range(80, 401)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))  # still annealing
    assert budget(400) == pytest.approx(0.0, abs=1e-12) and budget(200) > plain(200)
    budget.retarget(300, 320)  # a slower machine: the end comes sooner, still without a jump
    assert budget(300) == pytest.approx(factors[300 - 80]) and budget(320) == pytest.approx(0.0, abs=1e-12)
    early = BudgetCosine.for_config(config, steps)
    early.retarget(2, 100)  # during the warm-up only the end moves
    assert early(2) == plain(2) and early(100) == pytest.approx(0.0, abs=1e-12)


def test_budget_cosine_state_is_saved_with_the_scheduler() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, BudgetCosine(100, 5))
    sched.lr_lambdas[0].retarget(50, 300)
    state = sched.state_dict()
    other = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                                              BudgetCosine(100, 5))
    other.load_state_dict(state)
    assert other.lr_lambdas[0](120) == sched.lr_lambdas[0](120) != BudgetCosine(100, 5)(120)


@pytest.mark.slow
def test_a_budget_run_slowed_at_its_start_uses_its_budget(synth_cache_dir: str, tmp_path: Path) -> None:
    """A real 2-minute run on synthetic faces with CPU-burning processes beside it during its setup,
    probe and first epoch: the probe measures a slow machine and plans too few epochs; the re-plans
    after each epoch see the machine as it is, so the run still uses >= 90% of its budget, and it
    ends within its budget plus one validation."""
    sets = ["data.synth_n=400", "train.batch_size=16"]
    fit(tiny(synth_cache_dir, tmp_path / "warm", "train.epochs=1", *sets), quiet=True)  # the set and cache exist
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]

    def stop_burners() -> None:
        for proc in burners:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    start = time.monotonic()
    try:
        run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.time_budget_min=2", *sets), quiet=True,
                  on_epoch=lambda epoch, row: stop_burners() if epoch == 1 else None)
    finally:
        stop_burners()
    elapsed = time.monotonic() - start
    summary = json.loads((run / "summary.json").read_text())
    budget = summary["budget"]
    about = {k: budget[k] for k in ("first_epochs", "epochs", "probe_step_s", "step_s", "val_s", "used")}
    assert summary["epochs_done"] > budget["first_epochs"], about  # the slow probe planned too little
    assert budget["used"] >= 0.9, about
    assert elapsed <= 120 + budget["val_s"] + 2.0, (elapsed, about)  # budget + one validation (+ the summary)
    assert len(budget["replans"]) == summary["epochs_done"]
