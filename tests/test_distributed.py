"""Training with torchrun / DistributedDataParallel on CPU (gloo), sharding, and distributed Optuna trials."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ordinalage.config import load_config
from ordinalage.training.distributed import DistContext, ShardSampler
from ordinalage.training.fit import fit

GLOBAL_BATCH = 32
RUN_FILES = {"config.yaml", "metrics.csv", "last.pt", "best.pt", "split.csv", "summary.json", "val_best.json",
             "train_prior.json"}


# --------------------------------------------------------------------------------------------- sharding


def _shards(n: int, world: int, **kw) -> list[list[int]]:
    out = []
    for rank in range(world):
        s = ShardSampler(n, DistContext(rank=rank, world_size=world), **kw)
        s.set_epoch(3)
        out.append(list(s))
        assert len(s) == len(out[-1])
    return out


@pytest.mark.parametrize("weighted", [False, True])
def test_shards_cover_whole_global_batches_once(weighted: bool) -> None:
    n, world, b = 103, 2, 32
    weights = np.linspace(1.0, 3.0, n) if weighted else None
    one = _shards(n, 1, seed=5, weights=weights, global_batch=b)[0]
    two = _shards(n, world, seed=5, weights=weights, global_batch=b)
    assert len(one) == 96 and [len(s) for s in two] == [48, 48]  # 103 cut to 3 whole global batches
    if not weighted:  # a permutation: no index twice, none lost within the kept part
        assert sorted(two[0] + two[1]) == sorted(one) and len(set(one)) == 96
    local = b // world
    for k in range(3):  # global batch k is the same images with 1 or 2 processes
        assert sorted(one[k * b:(k + 1) * b]) == sorted(two[0][k * local:(k + 1) * local] + two[1][k * local:(k + 1) * local])


def test_validation_shards_keep_every_index_once() -> None:
    shards = _shards(23, 2, shuffle=False)
    assert [len(s) for s in shards] == [12, 11]
    assert sorted(shards[0] + shards[1]) == list(range(23))
    assert len(_shards(20, 2, seed=1, global_batch=32)[0]) == 10  # a set smaller than one global batch is kept whole


def test_epochs_differ_and_repeat() -> None:
    s = ShardSampler(50, DistContext(), seed=1, global_batch=10)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(1)
    assert list(s) != a
    s.set_epoch(0)
    assert list(s) == a


# --------------------------------------------------------------------------------------------- torchrun runs


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def _sets(cache_dir: str, out: Path) -> list[str]:
    # groups end at 60, so the synthetic 61-70 year olds are dropped: the "dropped" line must come from rank 0 alone
    return [f"data.cache_dir={cache_dir}", "data.groups=0-10,11-20,21-30,31-40,41-50,51-60", "data.synth_n=256", "data.synth_size=48", "data.image_size=32",
            "model.width=8", "data.num_workers=0", f"train.batch_size={GLOBAL_BATCH}", "train.epochs=2",
            "train.eval_on_end=false", "data.augment.enabled=false", "train.device=cpu", f"train.out_dir={out}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _train_cli(cache_dir: str, out: Path) -> subprocess.CompletedProcess:
    sets = [a for s in _sets(cache_dir, out) for a in ("--set", s)]
    return _torchrun("-m", "ordinalage", "train", "--head", "coral", *sets, cwd=out.parent)


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


@pytest.fixture(scope="module")
def dist_run(cache_dir: str, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("dist") / "run"
    return out, _train_cli(cache_dir, out)


def test_two_processes_write_one_run_folder(dist_run) -> None:
    run, proc = dist_run
    assert {p.name for p in run.parent.iterdir()} == {"run"}  # one run folder, nothing else
    assert {p.name for p in run.iterdir()} == RUN_FILES  # no stray temporary files
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    # rank 0 alone prints: one header, one line per epoch, one final line
    assert proc.stderr.count("2 processes") == 1 and proc.stderr.count("epoch 2/2") == 1
    assert proc.stderr.count("run folder:") == 1 and proc.stderr.count("dropped") == 1


def test_every_training_image_once_per_epoch(dist_run) -> None:
    """train_images counts images trained on over both ranks. The sampler cuts each epoch's order
    to whole global batches (drop_last on the global batch), so an epoch trains on exactly
    floor(n / 32) * 32 images: fewer would mean lost images, more duplicated or padded ones."""
    run, _ = dist_run
    n_train = sum(r["split"] == "train" for r in csv.DictReader((run / "split.csv").open()))
    assert n_train % GLOBAL_BATCH  # the cut is exercised
    assert [int(r["train_images"]) for r in _rows(run)] == [n_train // GLOBAL_BATCH * GLOBAL_BATCH] * 2


def test_validation_metrics_cover_the_split_exactly_once(dist_run) -> None:
    from ordinalage.evaluation.evaluate import evaluate_run

    run, _ = dist_run
    logged = json.loads((run / "val_best.json").read_text())
    single = evaluate_run(run, split="val", show=False, device="cpu")
    n_val = sum(r["split"] == "val" for r in csv.DictReader((run / "split.csv").open()))
    assert logged["n"] == single["n"] == n_val
    for key in ("mae", "accuracy", "one_off", "rmse", "ca5"):
        assert logged[key] == pytest.approx(single[key], abs=1e-6), key
    assert logged["confusion"] == single["confusion"]


def test_two_processes_match_one_process(dist_run, cache_dir: str, tmp_path: Path) -> None:
    """Same seed and global batch, augmentation off: both runs train on the same global batches
    with the same all-reduced (averaged) gradients. Only BatchNorm differs: each rank normalises
    its half batch of 16 with that half's statistics, which moves the losses by a few per cent."""
    run, _ = dist_run
    torch.set_num_threads(1)
    one = fit(load_config(sets=_sets(cache_dir, tmp_path / "one")), quiet=True)
    two_rows, one_rows = _rows(run), _rows(one)
    assert [r["train_images"] for r in two_rows] == [r["train_images"] for r in one_rows]
    for a, b in zip(two_rows, one_rows, strict=True):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=0.05)
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=0.05)
    # the first epoch's loss moves away from the start by far more than the two runs differ
    assert abs(float(two_rows[1]["train_loss"]) - float(one_rows[1]["train_loss"])) < 0.5 * abs(
        float(one_rows[0]["train_loss"]) - float(one_rows[1]["train_loss"]))


STOP_AFTER_ONE = """
import sys
from ordinalage.config import load_config
from ordinalage.training.fit import fit
fit(load_config(sets=sys.argv[1:]), quiet=True, stop_after_epochs=1)
"""


def test_distributed_resume_equals_uninterrupted_run(dist_run, cache_dir: str, tmp_path: Path) -> None:
    run, _ = dist_run
    script = tmp_path / "stop_after_one.py"
    script.write_text(textwrap.dedent(STOP_AFTER_ONE))
    part = tmp_path / "part"
    _torchrun(str(script), *_sets(cache_dir, part), cwd=tmp_path)
    assert len(_rows(part)) == 1 and not json.loads((part / "summary.json").read_text())["finished"]
    proc = _torchrun("-m", "ordinalage", "train", "--resume", str(part), cwd=tmp_path)
    assert proc.stderr.count("resuming") == 1
    full_rows, part_rows = _rows(run), _rows(part)
    assert len(part_rows) == 2
    for key in ("train_loss", "val_loss", "val_mae", "train_images"):
        assert [float(r[key]) for r in part_rows] == pytest.approx([float(r[key]) for r in full_rows], rel=1e-5)
    a = torch.load(run / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def _end_rank(dist) -> None:
    """End a spawned rank without leaving its process-group threads to the interpreter's teardown.

    A DistributedDataParallel wrapper (even one deleted and garbage-collected) keeps the gloo
    process group alive after `destroy_process_group`: its worker threads (`pt_gloo_runloop`), its
    socket loop (`gloo_tcp_loop`) and, on rank 0, the TCPStore server that rank 1 is connected to
    (`pt_tcpstore_uv`) run until the process exits. A normal exit then tears them down in
    interpreter finalization and static destruction, racing with the other rank's exit; under load
    (the whole suite) rank 1 aborted there with SIGABRT, 'terminate called without an active
    exception'. So: a barrier (no rank leaves while another still communicates), destroy the
    group, flush, and leave with os._exit(0), which runs no teardown (the results are on disk; an error
    before this point still ends the rank the usual way, with its traceback and a non-zero status)."""
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _buffers_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ordinalage.training.distributed import sync_buffers

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ddp = DistributedDataParallel(net)
    ddp(torch.randn(8, 3) + 5 * rank).sum().backward()  # each rank's own half batch updates its own stats
    before = net[1].running_mean.clone()
    sync_buffers(DistContext(rank=rank, world_size=2), net)
    torch.save({"before": before, "after": net[1].running_mean.clone()}, Path(out, f"bn{rank}.pt"))
    _end_rank(dist)


def test_sync_buffers_gives_every_rank_rank0_batchnorm_statistics(tmp_path: Path) -> None:
    """Without it, rank 1 would validate with BatchNorm statistics that the checkpoint lacks."""
    import torch.multiprocessing as mp

    mp.spawn(_buffers_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in (0, 1))
    assert not torch.allclose(r0["before"], r1["before"])
    assert torch.equal(r0["after"], r0["before"]) and torch.equal(r1["after"], r0["before"])


# --------------------------------------------------------------------------------------------- distributed trials


def _trial_worker(rank: int, port: int, out: str) -> None:
    import optuna
    import torch.distributed as dist

    from ordinalage.tuning.distributed import optimize_distributed

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seen: list[dict] = []

    def objective(trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        width = trial.suggest_int("width", 4, 64)
        head = trial.suggest_categorical("head", ["coral", "corn", "class"])
        trial.set_user_attr("rank_of_writer", dist.get_rank())
        record = {"number": trial.number, "lr": lr, "width": width, "head": head, "pruned_at": None}
        seen.append(record)
        for step in range(1, 4):
            value = lr * 100 + width / step  # large widths lose: the median pruner stops them
            trial.report(value, step)
            if trial.should_prune():
                record["pruned_at"] = step
                raise optuna.TrialPruned()
        return value

    study = None
    if rank == 0:  # only rank 0 holds a study (here in memory; in practice a database)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    optimize_distributed(study, objective, n_trials=6)
    result = {"seen": seen}
    if study is not None:
        result["trials"] = [{"number": t.number, "state": t.state.name, "params": t.params,
                             "attrs": t.user_attrs, "steps": sorted(t.intermediate_values)} for t in study.trials]
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    _end_rank(dist)


def test_distributed_trials_share_parameters_and_prune_together(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    import torch.multiprocessing as mp

    mp.spawn(_trial_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["seen"] == r1["seen"]  # same values, same trial numbers, same prune decisions on both ranks
    trials = r0["trials"]
    assert [t["number"] for t in trials] == [s["number"] for s in r0["seen"]] == list(range(6))
    for t, s in zip(trials, r0["seen"], strict=True):
        assert t["params"] == {"lr": s["lr"], "width": s["width"], "head": s["head"]}
        assert t["attrs"] == {"rank_of_writer": 0}  # rank 1's set_user_attr never reached the study
        assert t["state"] == ("PRUNED" if s["pruned_at"] else "COMPLETE")
        assert t["steps"] == list(range(1, (s["pruned_at"] or 3) + 1))  # each report stored once
    assert any(s["pruned_at"] for s in r0["seen"]) and any(not s["pruned_at"] for s in r0["seen"])


def test_freeze_epochs_under_two_processes(cache_dir: str, tmp_path: Path) -> None:
    """train.freeze_epochs works under torchrun: after one frozen epoch the backbone (weights and
    BatchNorm statistics) is exactly the one-process run's untouched backbone, while the head trained."""
    sets = [*_sets(cache_dir, tmp_path / "two"), "train.epochs=1", "train.freeze_epochs=1"]
    _torchrun("-m", "ordinalage", "train", *[a for s in sets for a in ("--set", s)], cwd=tmp_path)
    torch.set_num_threads(1)
    one = fit(load_config(sets=[*_sets(cache_dir, tmp_path / "one"), "train.epochs=1", "train.freeze_epochs=1",
                                "train.lr=0"]), quiet=True)
    two_state = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    start_state = torch.load(one / "last.pt", weights_only=True)["model"]  # lr 0: the starting weights
    backbone = [k for k in two_state if k.startswith("backbone.")]
    head = [k for k in two_state if k.startswith("head.") and two_state[k].is_floating_point()]
    assert backbone and head
    for k in backbone:
        torch.testing.assert_close(two_state[k], start_state[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(two_state[k], start_state[k]) for k in head)
