"""`training.train.train`, the one training entry of `ordinalage train` and `ordinalage.fit`: with
`all_folds` a protocol of several folds trains every fold (and resuming its base folder goes on
with them), without it the config's `data.fold` alone (a bake-off cell); `ordinalage.fit` of a
folds protocol returns fold 0's Run with every fold reachable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ordinalage
from ordinalage.config import Config, load_config
from ordinalage.training import train as train_mod
from ordinalage.training.folds import is_folds_run


def _fake_train_run(calls: list[tuple[Config | None, Path | None]]):  # type: ignore[no-untyped-def]
    def train_run(config: Config | None, *, resume: Path | None = None, quiet: bool = False, **_: object) -> Path:
        calls.append((config, resume))
        run = Path(config.train.out_dir) if config is not None else Path(resume or "")
        run.mkdir(parents=True, exist_ok=True)
        (run / "summary.json").write_text(json.dumps({"finished": True, "monitor": "val_mae", "best_value": 5.0}))
        return run
    return train_run


def test_all_folds_trains_every_fold_and_returns_the_base_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Config | None, Path | None]] = []
    monkeypatch.setattr(train_mod, "train_run", _fake_train_run(calls))
    config = load_config(sets=["data.protocol=folds:3", f"train.out_dir={tmp_path / 'cv'}"])
    base = train_mod.train(config, quiet=True, all_folds=True, evaluate_fold=lambda run: {"mae": 1.0})
    assert base == tmp_path / "cv" and is_folds_run(base) and train_mod.resumable(base)
    assert [c.data.fold for c, _ in calls] == [0, 1, 2]
    rows = json.loads((base / "folds.json").read_text())["folds"]
    assert [r["run_dir"] for r in rows] == [str(base / f"fold-{k}") for k in range(3)]
    assert all(r["mae"] == 1.0 for r in rows)

    calls.clear()  # resuming the base folder keeps the finished folds
    assert train_mod.train(None, resume=base, quiet=True) == base and calls == []


def test_without_all_folds_the_config_trains_its_own_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Config | None, Path | None]] = []
    monkeypatch.setattr(train_mod, "train_run", _fake_train_run(calls))
    config = load_config(sets=["data.protocol=folds:3", "data.fold=2", f"train.out_dir={tmp_path / 'cell'}"])
    assert train_mod.train(config, quiet=True) == tmp_path / "cell"
    assert [c for c, _ in calls] == [config] and not is_folds_run(tmp_path / "cell")


def test_python_fit_of_a_folds_protocol_trains_and_evaluates_every_fold(tmp_path: Path) -> None:
    from conftest import TINY_SETS

    from ordinalage.config import parse_set

    overrides = {k.replace(".", "__"): v for k, v in (parse_set(s) for s in TINY_SETS)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = ordinalage.fit(None, quiet=True, out=str(tmp_path / "cv"), data__cache_dir=str(tmp_path / "c"),
                             data__protocol="folds:2", **overrides)
    finally:
        torch.set_num_threads(threads)
    assert isinstance(run, ordinalage.Run) and run.path == tmp_path / "cv" / "fold-0"
    assert [f.path for f in run.folds] == [tmp_path / "cv" / f"fold-{k}" for k in (0, 1)]
    assert run.summary["finished"] and run.config.data.fold == 0 and len(run.metrics) == 1
    cv = run.cross_validation
    assert cv is not None and cv["n_folds"] == 2 and cv["summary"]["mae"]["n"] == 2
    assert all(f.summary["test"]["n"] > 0 for f in run.folds)  # each fold evaluated on its own test part
