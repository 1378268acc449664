"""`ordinalage tune`: search spaces, storages, workers, resuming, failures and the study's files.

Real training runs on a tiny synthetic set (configs/tune/smoke.yaml); the bookkeeping tests swap
`ordinalage.training.fit.fit` for a fake whose validation MAE is a known function of the trial, and still
go through `run_tune` and a real Optuna storage.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from ordinalage.cli import main
from ordinalage.config import load_config
from ordinalage.errors import UsageError
from ordinalage.training import fit as train
from ordinalage.tuning.runner import HOST
from ordinalage.tuning.spec import load_tune_spec, make_pruner
from ordinalage.tuning.storage import mask, open_storage, resolve_storage
from ordinalage.tuning.study import run_tune

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "tune" / "smoke.yaml"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
PG_URL = os.environ.get("ORDINALAGE_TEST_POSTGRES_URL")


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One synthetic-face cache for the module (spawned workers inherit it through the environment)."""
    old = os.environ.get("ORDINALAGE_CACHE")
    os.environ["ORDINALAGE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(1)
    yield
    if old is None:
        os.environ.pop("ORDINALAGE_CACHE", None)
    else:
        os.environ["ORDINALAGE_CACHE"] = old


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def _tune_yaml(tmp_path: Path, name: str = "t.yaml", **over: Any) -> Path:
    """The smoke tune file with top-level keys replaced; base files resolved to absolute paths."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["base_config"]["base"] = str(REPO / "configs" / "model" / "scratch.yaml")
    raw.update(over)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _assert_accounted(study: optuna.Study, n: int) -> None:
    """Trials 0..n-1, each once, all finished, each with its own run folder."""
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state in FINISHED for t in trials), [t.state for t in trials]
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(run_dirs)) == n
    for t in trials:
        assert Path(t.user_attrs["run_dir"]).name == str(t.number)


# --------------------------------------------------------------------------------------------- a fake fit


def fake_mae(config: Any, number: int, epoch: int) -> float:
    """A known validation MAE: best at lr 3e-3 and no flips, worse for later epochs never."""
    return 5.0 + abs(math.log10(config.train.lr / 3e-3)) + config.data.augment.hflip_p + 1.0 / epoch


class FakeFit:
    """Stands in for `train.fit`: reports `fake_mae` each epoch; `fail` maps trial numbers to errors."""

    def __init__(self, fail: dict[int, BaseException] | None = None, mae: Any = fake_mae) -> None:
        self.fail, self.mae, self.epochs_run = fail or {}, mae, {}

    def __call__(self, config: Any, *, on_epoch: Any = None, quiet: bool = False, **_: Any) -> Path:
        assert quiet and not config.train.eval_on_end
        run = Path(config.train.out_dir)
        number = int(run.name)
        run.mkdir(parents=True)
        if number in self.fail:
            raise self.fail[number]
        for epoch in range(1, config.train.epochs + 1):
            self.epochs_run[number] = epoch
            on_epoch(epoch, {"epoch": epoch, "val_mae": self.mae(config, number, epoch), "val_loss": 1.0,
                             "val_accuracy": 0.5, "val_one_off": 0.6})
        return run


# --------------------------------------------------------------------------------------------- end to end


def test_small_study_end_to_end_then_train_the_best_config(tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = run_tune(SMOKE, trials=3, out=out, show=False)
    study = _study(f"sqlite:///{out / 'study.db'}", "smoke")
    _assert_accounted(study, 3)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3  # one epoch per trial: nothing left to prune
    best = min(done, key=lambda t: t.value)
    assert result["best"]["number"] == best.number and result["best"]["value"] == pytest.approx(best.value)
    assert result["states"]["complete"] == 3 and result["n_trials"] == 3

    for t in done:  # each trial trained for the tune file's epochs, quietly, without a test evaluation
        cfg = load_config(Path(t.user_attrs["run_dir"]) / "config.yaml")
        assert cfg.train.epochs == 1 and cfg.train.eval_on_end is False
        assert cfg.train.lr == pytest.approx(t.params["train.lr"])
        assert cfg.data.sampling == t.params["data.sampling"]
        with open(Path(t.user_attrs["run_dir"]) / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert float(rows[0]["val_mae"]) == pytest.approx(t.value, rel=1e-4)  # objective = the epoch's val MAE

    with open(out / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert {"train.lr", "data.augment.hflip_p", "data.sampling", "fail_reason"} <= set(rows[0])
    assert (out / "history.png").stat().st_size > 1000 and (out / "importances.png").stat().st_size > 1000

    best_cfg = load_config(out / "best_config.yaml")
    assert best_cfg.train.lr == pytest.approx(best.params["train.lr"])
    assert best_cfg.data.augment.hflip_p == pytest.approx(best.params["data.augment.hflip_p"])
    assert best_cfg.model.width == 8 and best_cfg.train.out_dir is None
    assert main(["train", "--config", str(out / "best_config.yaml"), "--epochs", "1",
                 "--out", str(tmp_path / "final")]) == 0
    assert (tmp_path / "final" / "summary.json").is_file()


def test_cli_tune_json_and_rerun_reaches_the_total(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setattr(train, "fit", FakeFit())
    out = tmp_path / "s"
    assert main(["tune", "--config", str(SMOKE), "--trials", "2", "--out", str(out), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["n_trials"] == 2 and first["storage"].startswith("sqlite:///")
    assert main(["tune", "--config", str(SMOKE), "--trials", "2", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_trials"] == 2  # the target is a total: nothing to do
    assert main(["tune", "--config", str(SMOKE), "--trials", "4", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_trials"] == 4


# --------------------------------------------------------------------------------------------- resuming


def test_rerun_after_interruption_completes_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "s"
    monkeypatch.setattr(train, "fit", FakeFit(fail={1: KeyboardInterrupt()}))
    with pytest.raises(KeyboardInterrupt):
        run_tune(SMOKE, trials=3, out=out, show=False)
    url = f"sqlite:///{out / 'study.db'}"
    before = _study(url, "smoke").trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.FAIL]
    assert before[1].user_attrs["fail_reason"] == "interrupted"

    # a worker killed outright leaves a RUNNING trial behind: a rerun on this host marks it failed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    zombie = _study(url, "smoke").ask()
    zombie.set_user_attr("host", HOST)
    zombie.set_user_attr("pid", dead.pid)

    monkeypatch.setattr(train, "fit", FakeFit())
    result = run_tune(SMOKE, trials=3, out=out, show=False)
    trials = _study(url, "smoke").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL,
                                         TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].params == before[0].params and trials[0].value == before[0].value  # earlier trials kept
    assert result["states"]["complete"] == 3  # interrupted and lost trials do not count towards the 3
    for t in trials:
        if t.state == TrialState.COMPLETE:  # the value is the fake's MAE of the trial's own parameters
            cfg = load_config(None, overrides={"train.lr": t.params["train.lr"],
                                               "data.augment.hflip_p": t.params["data.augment.hflip_p"]})
            assert t.value == pytest.approx(fake_mae(cfg, t.number, 1))
    with open(out / "trials.csv") as fh:
        reasons = [r["fail_reason"] for r in csv.DictReader(fh)]
    assert reasons == ["", "interrupted", "worker lost", "", ""]


# --------------------------------------------------------------------------------------------- failures and pruning


def test_failing_trials_are_recorded_and_the_study_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeFit(fail={1: train.TrainingDiverged("loss is nan at step 3"),
                         2: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                         3: UsageError("data.sampling undersample leaves an empty group")})
    monkeypatch.setattr(train, "fit", fake)
    out = tmp_path / "s"
    result = run_tune(SMOKE, trials=5, out=out, show=False)
    trials = _study(f"sqlite:///{out / 'study.db'}", "smoke").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"] == "diverged: loss is nan at step 3"
    assert trials[2].user_attrs["fail_reason"].startswith("out of memory: CUDA out of memory")
    assert trials[3].user_attrs["fail_reason"] == "bad combination: data.sampling undersample leaves an empty group"
    assert result["states"] == {"complete": 2, "pruned": 0, "fail": 3, "running": 0, "waiting": 0}
    assert result["best"]["number"] in (0, 4)


def test_a_base_config_that_always_fails_stops_after_a_few_trials(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "fit", FakeFit(fail={i: UsageError("utkface:/nowhere: folder not found")
                                                    for i in range(10)}))
    path = _tune_yaml(tmp_path, stop_after_failures=2)
    with pytest.raises(UsageError, match=r"2 trials in a row failed.*utkface:/nowhere"):
        run_tune(path, trials=10, out=tmp_path / "s", show=False)
    assert len(_study(f"sqlite:///{tmp_path / 's' / 'study.db'}", "smoke").trials) == 2


def test_median_pruner_stops_a_poor_trial_after_its_first_epoch(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeFit(mae=lambda config, number, epoch: 10.0 + number - 0.1 * epoch)  # each trial worse than the last
    monkeypatch.setattr(train, "fit", fake)
    path = _tune_yaml(tmp_path, epochs=3, pruner={"type": "median", "n_startup_trials": 1})
    run_tune(path, trials=3, out=tmp_path / "s", show=False)
    trials = _study(f"sqlite:///{tmp_path / 's' / 'study.db'}", "smoke").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    assert trials[0].value == pytest.approx(9.7)  # the best epoch of trial 0
    assert fake.epochs_run == {0: 3, 1: 1, 2: 1} and trials[1].user_attrs["pruned_at"] == 1


def test_pruners_and_sampler_are_built_from_the_tune_file(tmp_path: Path) -> None:
    spec = load_tune_spec(_tune_yaml(tmp_path, epochs=9, pruner={"type": "hyperband", "reduction_factor": 2}))
    pruner = make_pruner(spec)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._max_resource == 9
    assert spec.sampler["multivariate"] is True and spec.sampler["constant_liar"] is True
    assert isinstance(make_pruner(load_tune_spec(_tune_yaml(tmp_path, pruner={"type": "none"}))),
                      optuna.pruners.NopPruner)


@pytest.mark.parametrize("name", ["coral", "corn", "class", "regression"])
def test_shipped_head_configs_load(name: str) -> None:
    spec = load_tune_spec(REPO / "configs" / "tune" / f"{name}.yaml")
    keys = {p.key for p in spec.space}
    assert {"train.lr", "train.weight_decay", "train.batch_size", "data.sampling", "data.class_weighted_loss",
            "data.cap_train", "data.augment.hflip_p", "data.augment.rotate"} <= keys
    assert spec.base["model"]["head"] == name and spec.metric == "val_mae" and spec.direction == "minimize"


def test_utkface_study_config_loads_and_resolves_every_value() -> None:
    spec = load_tune_spec(REPO / "configs" / "tune" / "utkface_class.yaml")
    assert spec.base["model"]["head"] == "class" and spec.epochs == 4
    keys = {p.key for p in spec.space}
    assert {"train.lr", "model.label_sigma", "data.sampling", "data.augment.affine_p"} <= keys
    cfg = spec.best_config({"model.label_sigma": 3.0, "data.sampling": "weighted", "train.lr": 0.002})
    assert cfg.model.label_sigma == 3.0 and cfg.data.sampling == "weighted" and cfg.data.image_size == 64
    assert cfg.data.sources == ("utkface:../shared/data/UTKFace",) and cfg.train.epochs == 8


# --------------------------------------------------------------------------------------------- bad input


BAD_SPACES = [
    ({"train.lrr": {"type": "float", "low": 0.1, "high": 0.2}}, "unknown parameter key 'train.lrr'.*train.lr"),
    ({"data.sampling": {"type": "categorical", "choices": []}}, "space.data.sampling.*non-empty list"),
    ({"train.lr": {"type": "float", "low": 0.1, "high": 0.01}}, r"space.train.lr.*low \(0.1\) is greater than high"),
    ({"train.lr": {"type": "uniform", "low": 0.1, "high": 0.2}}, "space.train.lr.*unknown type 'uniform'"),
    ({"train.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "log: true' needs low > 0"),
    ({"train.lr": {"type": "float", "low": 0.01, "hihg": 0.1}}, "unknown field 'hihg'"),
    ({"train.batch_size": {"type": "float", "low": 16, "high": 64}}, "type float does not fit.*train.batch_size"),
    ({"data.sampling": {"type": "categorical", "choices": ["none", "smote"]}}, "unknown choice 'smote'"),
    ({"data.augment": {"type": "float", "low": 0, "high": 1}}, "unknown parameter key 'data.augment'"),
    ({"train.epochs": {"type": "int", "low": 1, "high": "many"}}, "'high' must be a finite number"),
]


@pytest.mark.parametrize(("space", "message"), BAD_SPACES)
def test_a_bad_search_space_is_exit_2_before_any_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, space: dict[str, Any],
                                                      message: str) -> None:
    monkeypatch.setattr(train, "fit", FakeFit(fail={0: AssertionError("no trial should run")}))
    path = _tune_yaml(tmp_path, space=space)
    assert main(["tune", "--config", str(path), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    import re

    assert re.search(message, " ".join(err.split())), err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("over", "message"), [
    ({"objective": {"metric": "val_qwk"}}, "unknown metric 'val_qwk'"),
    ({"pruner": {"type": "sha"}}, "unknown pruner 'sha'"),
    ({"pruner": {"type": "median", "warmup": 2}}, "pruner.warmup: not an option of the median pruner"),
    ({"sampler": {"n_startup": 2}}, "sampler.n_startup: not a TPESampler option"),
    ({"epochs": 0}, "'epochs' must be an integer >= 1"),
    ({"base_config": {"train": {"lrr": 1}}}, "base_config: unknown config key 'train.lrr'"),
    ({"spaces": {}}, "unknown key 'spaces'"),
])
def test_bad_tune_file_keys_are_usage_errors(tmp_path: Path, over: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_tune_spec(_tune_yaml(tmp_path, **over))


def test_storage_choices(tmp_path: Path) -> None:
    assert resolve_storage(None, tmp_path, 1) == f"sqlite:///{tmp_path / 'study.db'}"
    assert resolve_storage(None, tmp_path, 2) == f"journal:{tmp_path / 'journal.log'}"
    with pytest.raises(UsageError, match="SQLite is not for parallel workers"):
        resolve_storage("sqlite:///x.db", tmp_path, 2)
    with pytest.raises(UsageError, match="expected sqlite:///FILE, journal:FILE"):
        resolve_storage("studies/x.db", tmp_path, 1)
    (tmp_path / "study.db").touch()  # an existing SQLite study is kept, and refused for several workers
    assert resolve_storage(None, tmp_path, 1).endswith("study.db")
    with pytest.raises(UsageError, match="rerun it with `workers` 1"):
        resolve_storage(None, tmp_path, 2)
    assert mask("postgresql+psycopg2://me:s3cret@db:5432/x") == "postgresql+psycopg2://me:***@db:5432/x"


def test_unreachable_database_and_foreign_folder_are_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "fit", FakeFit())
    url = "postgresql+psycopg2://me:s3cret@127.0.0.1:1/nowhere"
    assert main(["tune", "--config", str(SMOKE), "--storage", url, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "cannot open the study database" in err and "s3cret" not in err
    assert not (tmp_path / "a" / "study.json").exists()  # a failed start claims no folder
    with pytest.raises(UsageError, match="^workers 0: must be at least 1"):
        run_tune(SMOKE, workers=0, out=tmp_path / "z", show=False)
    assert main(["tune", "--config", str(SMOKE), "--trials", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["tune", "--config", str(SMOKE), "--study", "other", "--out", str(tmp_path / "b")]) == 2
    assert "holds study 'smoke'" in capsys.readouterr().err
    journal = f"journal:{tmp_path / 'c.log'}"  # a study in an explicit storage needs that storage on reruns
    assert main(["tune", "--config", str(SMOKE), "--trials", "1", "--storage", journal, "--out", str(tmp_path / "c")]) == 0
    assert main(["tune", "--config", str(SMOKE), "--trials", "2", "--out", str(tmp_path / "c")]) == 2
    assert f"lives in {journal}; give that --storage again" in " ".join(capsys.readouterr().err.split())


# --------------------------------------------------------------------------------------------- parallel workers


def test_two_workers_share_one_journal_study(tmp_path: Path) -> None:
    out = tmp_path / "j"
    result = run_tune(SMOKE, trials=4, workers=2, out=out, show=False)
    assert result["storage"] == f"journal:{out / 'journal.log'}"
    study = _study(result["storage"], "smoke")
    _assert_accounted(study, 4)
    assert result["n_trials"] == 4 and (out / "best_config.yaml").is_file()


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="ORDINALAGE_TEST_POSTGRES_URL is not set (.ci/postgres.sh sets it)")
def test_two_workers_share_one_postgres_study(tmp_path: Path) -> None:
    name = f"pg-{uuid.uuid4().hex[:10]}"
    result = run_tune(SMOKE, study_name=name, storage=PG_URL, trials=4, workers=2, out=tmp_path / "p", show=False)
    study = _study(PG_URL, name)  # type: ignore[arg-type]
    _assert_accounted(study, 4)
    assert result["n_trials"] == 4 and "***" in result["storage"]
    assert {t.user_attrs["host"] for t in study.trials} == {HOST}


# --------------------------------------------------------------------------------------------- preemption

SIGTERMED_WORKER = """
import os, sys, time
from pathlib import Path
from ordinalage.training import fit as train

def fit(config, *, on_epoch=None, quiet=False, **_):
    run = Path(config.train.out_dir)
    run.mkdir(parents=True)
    if run.name == "1":  # the second trial waits here for the test's SIGTERM
        Path(os.environ["TRIAL_STARTED"]).write_text("1")
        time.sleep(120)
    for epoch in range(1, config.train.epochs + 1):
        on_epoch(epoch, {"epoch": epoch, "val_mae": 6.0, "val_loss": 1.0, "val_accuracy": 0.5, "val_one_off": 0.6})
    return run

train.fit = fit
from ordinalage.tuning.study import run_tune
run_tune(sys.argv[1], trials=3, out=sys.argv[2], show=False)
"""


def test_sigterm_to_a_tune_worker_fails_its_trial_with_the_reason_and_a_rerun_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import time

    out, started = tmp_path / "s", tmp_path / "trial-1-started"
    script = tmp_path / "worker.py"
    script.write_text(SIGTERMED_WORKER)
    worker = subprocess.Popen([sys.executable, str(script), str(SMOKE), str(out)],
                              env={**os.environ, "TRIAL_STARTED": str(started)}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), worker.communicate(timeout=10)[1][-3000:]
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode != 0, err[-3000:]  # stopped, not finished
    url = f"sqlite:///{out / 'study.db'}"
    trials = _study(url, "smoke").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL], err[-3000:]  # none left RUNNING
    assert trials[1].user_attrs["fail_reason"] == "preempted (SIGTERM)"

    # a preemption that training saw (TrainingPreempted: the step finished, last.pt written) is recorded the same way
    monkeypatch.setattr(train, "fit", FakeFit(fail={2: train.TrainingPreempted(out / "trials" / "2", 0, 3, "SIGUSR1")}))
    with pytest.raises(train.TrainingPreempted):
        run_tune(SMOKE, trials=3, out=out, show=False)
    assert _study(url, "smoke").trials[2].user_attrs["fail_reason"] == "preempted (SIGUSR1)"

    monkeypatch.setattr(train, "fit", FakeFit())  # the rerun replaces the preempted trials
    result = run_tune(SMOKE, trials=3, out=out, show=False)
    trials = _study(url, "smoke").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL,
                                         TrialState.COMPLETE, TrialState.COMPLETE]
    assert result["states"]["complete"] == 3
