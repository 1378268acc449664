"""run_folds: one fit per fold with data.fold set, per-fold rows, mean +- std, reuse of finished folds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ordinalage.config import Config, load_config
from ordinalage.training.folds import mean_std, run_folds


def _fake_fit(calls: list[Config]):
    def fit(config: Config) -> Path:
        calls.append(config)
        run = Path(config.train.out_dir)
        run.mkdir(parents=True)
        k = config.data.fold
        (run / "summary.json").write_text(json.dumps({
            "finished": True, "monitor": "val_mae", "best_value": 5.0 + k,
            "test": {"mae": 4.0 + 2 * k, "accuracy": 0.5, "n": 10, "confusion": [[1]]}}))
        return run
    return fit


def test_run_folds_calls_fit_per_fold_and_summarises(tmp_path):
    config = load_config(sets=["data.protocol=folds:3", f"train.out_dir={tmp_path / 'cv'}"])
    calls: list[Config] = []
    result = run_folds(config, _fake_fit(calls), quiet=True)
    assert [c.data.fold for c in calls] == [0, 1, 2]
    assert [c.train.out_dir for c in calls] == [str(tmp_path / "cv" / f"fold-{k}") for k in range(3)]
    assert all(c.data.protocol == "folds:3" and c.model == config.model for c in calls)
    assert [(r["fold"], r["mae"], r["best_val_mae"]) for r in result["folds"]] == [(0, 4.0, 5.0), (1, 6.0, 6.0),
                                                                                   (2, 8.0, 7.0)]
    assert result["summary"]["mae"] == {"mean": 6.0, "std": 2.0, "n": 3}  # sample std of 4, 6, 8
    assert result["summary"]["accuracy"]["std"] == 0.0 and "confusion" not in result["summary"]
    assert json.loads((tmp_path / "cv" / "folds.json").read_text()) == result

    again: list[Config] = []  # finished folds are reused, not retrained
    result2 = run_folds(config, _fake_fit(again), quiet=True)
    assert again == [] and [r["reused"] for r in result2["folds"]] == [True] * 3
    assert result2["summary"]["mae"] == result["summary"]["mae"]


def test_run_folds_counts_loso_folds_from_the_data_and_uses_evaluate_fn(tmp_path):
    from fakes_data import write_jpeg

    folder = tmp_path / "FGNET"
    for s in (1, 2, 3):
        write_jpeg(folder / f"{s:03d}A{10 * s:02d}.JPG", s)
        write_jpeg(folder / f"{s:03d}A{10 * s + 5:02d}.JPG", 10 + s)
    config = load_config(sets=[f"data.sources=[fgnet:{folder}]", "data.protocol=loso",
                               f"train.out_dir={tmp_path / 'loso'}", f"data.cache_dir={tmp_path / 'cache'}"])
    calls: list[Config] = []
    result = run_folds(config, _fake_fit(calls), evaluate_fn=lambda run: {"mae": float(run.name[-1])}, quiet=True)
    assert result["n_folds"] == 3 and [r["mae"] for r in result["folds"]] == [0.0, 1.0, 2.0]
    assert result["summary"]["mae"]["mean"] == pytest.approx(1.0)


def test_mean_std_single_row_and_missing_keys():
    out = mean_std([{"fold": 0, "mae": 3.0, "flag": True}, {"fold": 1}])
    assert out == {"mae": {"mean": 3.0, "std": 0.0, "n": 1}}


def test_train_command_runs_every_fold_and_evaluates_each(tmp_path):
    """`ordinalage train` with data.protocol=folds:2 trains both folds and writes folds.json with test rows."""
    from conftest import TINY_SETS

    from ordinalage.cli import main

    sets = [*TINY_SETS, f"data.cache_dir={tmp_path / 'cache'}", "data.protocol=folds:2", f"train.out_dir={tmp_path / 'cv'}"]
    assert main(["train", *[a for s in sets for a in ("--set", s)]]) == 0
    result = json.loads((tmp_path / "cv" / "folds.json").read_text())
    assert [r["fold"] for r in result["folds"]] == [0, 1]
    assert all(r["n"] > 0 and r["mae"] >= 0 for r in result["folds"])  # each fold evaluated on its own test part
    assert result["summary"]["mae"]["n"] == 2
    tests = [json.loads((tmp_path / "cv" / f"fold-{k}" / "summary.json").read_text())["test"]["n"] for k in (0, 1)]
    assert sum(tests) >= 150  # the two test folds together cover (nearly) the whole set
