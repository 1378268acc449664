"""Preemption: SIGTERM (or SIGUSR1) during training finishes the step, writes last.pt with the
position inside the epoch and exits with status 75; `--resume` continues mid-epoch and ends with
the weights of an uninterrupted run; `--resume auto` starts an empty folder and resumes a stopped
one; ensembles and folds name their own folder. Training runs in a subprocess that sends the signal
to itself after a given optimiser step (a real signal, delivered at a known place)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ordinalage.cli import main
from ordinalage.training.preemption import PREEMPTED_EXIT, TrainingPreempted

pytestmark = pytest.mark.usefixtures("one_thread")

#: runs `ordinalage <argv>`; with SIGNAL_AT_STEP=N the process signals itself during the N-th
#: optimiser step (inside backward_and_step, so the step has to finish before the run stops)
SIGNALLING_CLI = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from ordinalage.training import loop as fit_mod
at = int(os.environ.get("SIGNAL_AT_STEP", "0"))
sig = getattr(signal, os.environ.get("SIGNAL_NAME", "SIGTERM"))
real, count = fit_mod.backward_and_step, [0]
def step(*args, **kwargs):
    count[0] += 1
    if count[0] == at:
        os.kill(os.getpid(), sig)
    real(*args, **kwargs)
fit_mod.backward_and_step = step
from ordinalage.cli import main
sys.exit(main(sys.argv[1:]))
"""

# 240 faces: 168 training images, 5 batches of 32 per epoch; augmentation and dropout on, so the
# replayed batches, the transform's random stream and torch's random state all have to match
SETS = ["data.synth_n=240", "data.synth_size=48", "data.image_size=32", "data.num_workers=0", "model.width=8",
        "model.dropout=0.3", "train.batch_size=32", "train.device=cpu", "train.eval_on_end=false"]


def _cli_args(cache: str, out: Path, *extra: str, epochs: int = 3) -> list[str]:
    sets = [*SETS, f"data.cache_dir={cache}", *extra]
    return ["train", "--out", str(out), "--epochs", str(epochs), *[a for s in sets for a in ("--set", s)]]


def _run(tmp_path: Path, argv: list[str], at_step: int = 0, signal_name: str = "SIGTERM") -> subprocess.CompletedProcess:
    script = tmp_path / "signalling_cli.py"
    script.write_text(textwrap.dedent(SIGNALLING_CLI))
    env = {**os.environ, "SIGNAL_AT_STEP": str(at_step), "SIGNAL_NAME": signal_name, "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": "", "COLUMNS": "400"}  # rich wraps nothing
    return subprocess.run([sys.executable, str(script), *argv], env=env, capture_output=True, text=True, timeout=300)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(synth_cache_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    torch.set_num_threads(1)
    assert main(_cli_args(synth_cache_dir, out)) == 0
    return out


def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(uninterrupted: Path, synth_cache_dir: str,
                                                                     tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _run(tmp_path, _cli_args(synth_cache_dir, run), at_step=7)  # step 2 of 5 of the second epoch
    assert proc.returncode == PREEMPTED_EXIT, proc.stderr[-3000:]
    assert f"continue with: ordinalage train --resume {run}" in proc.stderr
    assert "preempted by SIGTERM, 2 batch(es) into epoch 2" in proc.stderr
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 7  # one finished epoch, seven optimiser steps (the 7th finished)
    position = ckpt["position"]
    assert position["epoch"] == 1 and position["batches"] == 2 and position["n"] == 64
    assert ckpt["elapsed_s"] > 0
    assert [r["epoch"] for r in _rows(run)] == ["1"]
    assert not (run / "summary.json").exists()

    assert main(["train", "--resume", str(run)]) == 0
    rows, full = _rows(run), _rows(uninterrupted)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for key in ("train_loss", "val_loss", "val_mae", "train_images", "lr"):  # the resumed epoch's loss too
        assert [float(r[key]) for r in rows] == pytest.approx([float(r[key]) for r in full], rel=1e-5, abs=1e-7), key
    a, b = _weights(uninterrupted), _weights(run)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], msg=k)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["epochs_done"] == 3


def test_a_signal_after_the_last_step_of_an_epoch_resumes_without_training_it_again(
        uninterrupted: Path, synth_cache_dir: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _run(tmp_path, _cli_args(synth_cache_dir, run), at_step=10, signal_name="SIGUSR1")  # the 2nd epoch's last
    assert proc.returncode == PREEMPTED_EXIT, proc.stderr[-3000:]
    assert "preempted by SIGUSR1" in proc.stderr
    assert torch.load(run / "last.pt", weights_only=True)["position"]["batches"] == 5
    assert main(["train", "--resume", "auto", "--out", str(run)]) == 0
    a, b = _weights(uninterrupted), _weights(run)
    for k in a:
        torch.testing.assert_close(b[k], a[k], msg=k)


def test_resume_auto_starts_an_empty_folder_and_resumes_a_stopped_run(synth_cache_dir: str, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    run = tmp_path / "auto"
    argv = ["train", "--resume", "auto", *_cli_args(synth_cache_dir, run, epochs=2)[1:]]
    proc = _run(tmp_path, argv, at_step=3)  # nothing there: it starts, then a signal stops it
    assert proc.returncode == PREEMPTED_EXIT, proc.stderr[-3000:]
    assert f"starting {run}" in proc.stderr
    proc = _run(tmp_path, argv)  # the same command again (what a requeued job runs): it resumes
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming {run}" in proc.stderr and "batch 4" in proc.stderr
    assert json.loads((run / "summary.json").read_text())["epochs_done"] == 2
    assert main(argv) == 0  # once more: a finished run is left as it is
    assert "finished training already" in capsys.readouterr().err
    assert main(["train", "--resume", "auto"]) == 2  # no --out
    assert "--resume auto needs --out" in capsys.readouterr().err


def test_an_ensemble_is_resumed_at_the_member_the_signal_stopped(synth_cache_dir: str, tmp_path: Path) -> None:
    run = tmp_path / "ens"
    argv = _cli_args(synth_cache_dir, run, "train.members=2", epochs=1)
    proc = _run(tmp_path, argv, at_step=7)  # member 0 takes 5 steps: step 2 of member 1
    assert proc.returncode == PREEMPTED_EXIT, proc.stderr[-3000:]
    assert "in member-1, 2 batch(es) into epoch 1" in proc.stderr
    assert f"continue with: ordinalage train --resume {run}" in proc.stderr
    assert json.loads((run / "member-0" / "summary.json").read_text())["finished"]
    assert torch.load(run / "member-1" / "last.pt", weights_only=True)["position"]["batches"] == 2
    assert main(["train", "--resume", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["finished"]


def test_preemption_is_not_an_exception_and_pickles_whole() -> None:
    import pickle

    exc = TrainingPreempted("runs/x", 2, 17, "SIGUSR1", where="fold-3")
    assert isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Exception)  # `except Exception` lets it through
    again = pickle.loads(pickle.dumps(exc))
    assert (again.run_dir, again.epoch, again.step, again.signal_name, again.where) == (
        Path("runs/x"), 2, 17, "SIGUSR1", "fold-3")


def test_handlers_are_restored_when_fit_returns(synth_cache_dir: str, tmp_path: Path) -> None:
    from tiny_training import tiny

    from ordinalage.training.fit import fit

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    fit(tiny(synth_cache_dir, tmp_path / "r", "train.epochs=1"), quiet=True)
    assert {s: signal.getsignal(s) for s in before} == before


def _rows(run: Path) -> list[dict[str, str]]:
    import csv

    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))
