"""Training options through the public `fit(config, on_epoch=...)`, judged by what the run folder
holds (metrics.csv, last.pt, best.pt): freezing, early stopping, the monitored metric, SGD, the step
and constant schedules, fp16 with a GradScaler, torch.compile. Tiny synthetic data, one thread."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from tiny_training import tiny

from ordinalage.runs.checkpoint import load_checkpoint, load_model
from ordinalage.runs.runtime import fp16_supported
from ordinalage.training.fit import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def averaged_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model entries of a saved `AveragedModel` state, keyed like the plain model's."""
    return {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}


def split(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone, head) entries of a model state dict, parameters and buffers alike."""
    back = {k: v.clone() for k, v in state.items() if k.startswith("backbone.")}
    head = {k: v.clone() for k, v in state.items() if k.startswith("head.")}
    assert back and head and len(back) + len(head) == len(state)
    return back, head


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshots(run_dir: Path) -> tuple[list[dict[str, torch.Tensor]], object]:
    """An `on_epoch` callback that keeps the model state of last.pt after every epoch."""
    states: list[dict[str, torch.Tensor]] = []

    def on_epoch(epoch: int, row: dict) -> None:
        ck = load_checkpoint(run_dir / "last.pt")
        assert ck["epoch"] == epoch
        states.append(ck["model"])

    return states, on_epoch


# --------------------------------------------------------------------------------------------- freezing


def test_freeze_epochs_keep_the_backbone_fixed_then_train_it(synth_cache_dir: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    states, on_epoch = snapshots(run_dir)
    fit(tiny(synth_cache_dir, run_dir, "train.epochs=3", "train.freeze_epochs=2", "train.scheduler=none"),
        on_epoch=on_epoch)
    (b1, h1), (b2, h2), (b3, h3) = (split(s) for s in states)
    # epoch 2 is frozen: no backbone weight and no BatchNorm statistic moved, the head did learn
    assert same(b1, b2)
    assert not same(h1, h2)
    # epoch 3 is not: the backbone trains again (weights and running statistics)
    changed = [k for k in b2 if not torch.equal(b2[k], b3[k])]
    assert any(k.endswith(".weight") for k in changed) and any(k.endswith("running_mean") for k in changed)
    assert not same(h2, h3)


# --------------------------------------------------------------------------------------------- stopping


def test_early_stop_patience_ends_the_run(synth_cache_dir: str, tmp_path: Path) -> None:
    """lr 0 and a frozen backbone (eval-mode BatchNorm): the model never changes, so val_mae never
    improves after epoch 1 and patience 2 stops the run after epoch 3 of 8."""
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.epochs=8", "train.early_stop_patience=2",
                   "train.lr=0", "train.freeze_epochs=8", "train.scheduler=none"))
    got = rows(run)
    assert [int(r["epoch"]) for r in got] == [1, 2, 3]
    assert len({r["val_mae"] for r in got}) == 1  # the premise: nothing improved
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    assert load_checkpoint(run / "best.pt")["epoch"] == 1


def test_without_patience_the_same_run_goes_to_the_end(synth_cache_dir: str, tmp_path: Path) -> None:
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.epochs=4", "train.early_stop_patience=0",
                   "train.lr=0", "train.freeze_epochs=4", "train.scheduler=none"))
    assert [int(r["epoch"]) for r in rows(run)] == [1, 2, 3, 4]
    assert load_checkpoint(run / "best.pt")["epoch"] == 1  # ties are no improvement


# --------------------------------------------------------------------------------------------- monitor


def _best_epoch(got: list[dict[str, str]], column: str, direction: str) -> int:
    values = [float(r[column]) for r in got]
    best = max(values) if direction == "max" else min(values)
    return values.index(best) + 1  # the first epoch reaching it: later ties do not replace best.pt


# seeds chosen so that the monitored metric, val_mae and the wrong direction each pick another epoch
# (seed 5: val_accuracy peaks at epoch 3 and ties it at epoch 5, val_mae is best at epoch 2; for
# val_loss, seed 5 gives its minimum at epoch 1, val_mae's at epoch 2 and its maximum at epoch 5)
@pytest.mark.parametrize("monitor, direction, seed", [("val_accuracy", "max", 5), ("val_loss", "min", 5)])
def test_best_checkpoint_follows_the_monitored_metric(monitor: str, direction: str, seed: int, synth_cache_dir: str,
                                                      tmp_path: Path) -> None:
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.epochs=5", f"train.monitor={monitor}", "train.lr=0.01",
                   "train.warmup_epochs=0", "train.scheduler=none", "data.groups=0-15,16-30,31-45,46-60,61+",
                   f"train.seed={seed}"))
    got = rows(run)
    assert len(got) == 5
    expected = _best_epoch(got, monitor, direction)
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == expected, ([r[monitor] for r in got], best["epoch"])
    assert best["model"].keys() == load_checkpoint(run / "last.pt")["model"].keys()
    # the setup discriminates: following val_mae (or the wrong direction) would pick another epoch
    wrong = {_best_epoch(got, "val_mae", "min"),
             _best_epoch(got, monitor, "min" if direction == "max" else "max")}
    assert expected not in wrong, ("this data no longer tells the monitors apart; change the seed", got)


# --------------------------------------------------------------------------------------------- optimiser


def test_sgd_optimiser_with_nesterov_momentum(synth_cache_dir: str, tmp_path: Path) -> None:
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.epochs=1", "train.optimizer=sgd", "train.lr=0.05",
                   "train.momentum=0.8", "train.weight_decay=0.001"))
    ck = load_checkpoint(run / "last.pt")
    groups = ck["optimizer"]["param_groups"]
    assert {g["name"] for g in groups} == {"backbone_decay", "backbone_no_decay", "head_decay", "head_no_decay"}
    for g in groups:
        assert g["momentum"] == 0.8 and g["nesterov"] is True and "betas" not in g
        assert g["weight_decay"] == (0.0 if g["name"].endswith("no_decay") else 0.001)
    states = ck["optimizer"]["state"].values()
    assert states and all(set(s) == {"momentum_buffer"} for s in states)  # SGD's state, not Adam's moments
    assert math.isfinite(float(rows(run)[0]["train_loss"]))


# --------------------------------------------------------------------------------------------- schedules


def test_step_scheduler_decays_every_step_size_epochs(synth_cache_dir: str, tmp_path: Path) -> None:
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.epochs=5", "train.scheduler=step", "train.lr=0.01",
                   "train.step_size=2", "train.gamma=0.5", "train.warmup_epochs=1"))
    # metrics.csv records the rate after each epoch's last step: lr * gamma ** (epochs done // step_size)
    # (warm-up belongs to the cosine schedule only)
    assert [float(r["lr"]) for r in rows(run)] == pytest.approx([0.01, 0.005, 0.005, 0.0025, 0.0025])
    ck = load_checkpoint(run / "last.pt")
    assert ck["scheduler"]["last_epoch"] == ck["step"] > 0  # stepped once per optimiser step


def test_none_scheduler_keeps_the_rate(synth_cache_dir: str, tmp_path: Path) -> None:
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.epochs=3", "train.scheduler=none", "train.lr=0.004",
                   "train.warmup_epochs=1", "train.backbone_lr_mult=0.5"))
    assert [float(r["lr"]) for r in rows(run)] == pytest.approx([0.004] * 3)
    lrs = {g["name"]: g["lr"] for g in load_checkpoint(run / "last.pt")["optimizer"]["param_groups"]}
    assert lrs["head_decay"] == pytest.approx(0.004) and lrs["backbone_decay"] == pytest.approx(0.002)


# --------------------------------------------------------------------------------------------- precision


def test_fp16_with_grad_scaler_on_cpu(synth_cache_dir: str, tmp_path: Path) -> None:
    if not fp16_supported(torch.device("cpu")):
        pytest.skip(f"torch {torch.__version__} has no CPU fp16 autocast with a GradScaler")
    run = fit(tiny(synth_cache_dir, tmp_path / "fp16", "train.epochs=1", "train.precision=fp16"))
    scaler = load_checkpoint(run / "last.pt")["scaler"]
    assert scaler["scale"] > 0 and scaler["growth_factor"] == 2.0  # an enabled GradScaler's state
    row = rows(run)[0]
    assert float(row["train_loss"]) < 100 and float(row["val_mae"]) < 100
    fp32 = fit(tiny(synth_cache_dir, tmp_path / "fp32", "train.epochs=1", "train.precision=fp32"))
    assert load_checkpoint(fp32 / "last.pt")["scaler"] == {}  # disabled: no scaler state at all
    # fp16 trains the same model as fp32, up to rounding
    assert float(row["train_loss"]) == pytest.approx(float(rows(fp32)[0]["train_loss"]), rel=0.05)


# --------------------------------------------------------------------------------------------- compile


@pytest.mark.slow
def test_compile_on_cpu_saves_a_plain_model(synth_cache_dir: str, tmp_path: Path) -> None:
    """torch.compile (inductor, C++ on the CPU): trains, and the checkpoint loads into an
    uncompiled model (no `_orig_mod.` prefixes). Slow-ish: compiling takes tens of seconds."""
    run = fit(tiny(synth_cache_dir, tmp_path / "run", "train.epochs=1", "train.compile=true"))
    ck = load_checkpoint(run / "best.pt")
    assert ck["config"]["train"]["compile"] is True
    assert not any(k.startswith("_orig_mod") for k in ck["model"])
    loaded = load_model(run)
    x = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    dec = loaded.model.predict(x)
    assert dec.age.shape == (3,) and torch.isfinite(dec.age).all()
    assert float(rows(run)[0]["train_loss"]) < 100


# --------------------------------------------------------------------------------------------- EMA


def test_ema_weights_are_validated_kept_as_best_and_resumed(synth_cache_dir: str, tmp_path: Path) -> None:
    """train.ema_decay: swa_utils' EMA is updated every step, validated, saved beside the raw weights
    in last.pt and as the model of best.pt; a resumed run ends with the same averaged weights."""
    from ordinalage.evaluation.evaluate import evaluate_run

    sets = ("train.epochs=2", "train.ema_decay=0.5", "data.augment.enabled=false")
    run = fit(tiny(synth_cache_dir, tmp_path / "run", *sets))
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    ema = averaged_weights(last["ema"])
    assert int(last["ema"]["n_averaged"]) == last["step"]  # updated once per optimiser step
    assert ema.keys() == last["model"].keys()
    assert any(not torch.equal(ema[k], last["model"][k]) for k in ema if ema[k].is_floating_point())
    if best["epoch"] == 2:  # best.pt holds the averaged weights of its epoch
        assert all(torch.equal(best["model"][k], ema[k]) for k in ema)
    assert evaluate_run(run, split="val", show=False)["n"] > 0  # best.pt loads and evaluates as a plain model

    part = fit(tiny(synth_cache_dir, tmp_path / "part", *sets), stop_after_epochs=1)
    fit(None, resume=part)
    resumed = load_checkpoint(part / "last.pt")["ema"]
    for k, v in last["ema"].items():
        torch.testing.assert_close(resumed[k], v, msg=k)


def test_swa_averages_the_last_epochs_at_a_held_learning_rate_and_resumes(synth_cache_dir: str, tmp_path: Path) -> None:
    """train.swa_start: from round(0.5 x 4) = epoch 3 on, SWALR anneals the learning rate to
    swa_lr_scale x lr within that epoch and holds it; the weights of epochs 3 and 4 are averaged,
    the average is validated and kept as best.pt, and a run resumed inside SWA ends the same."""
    from ordinalage.evaluation.evaluate import evaluate_run

    sets = ("train.epochs=4", "train.lr=0.004", "train.swa_start=0.5", "train.swa_lr_scale=0.25",
            "data.augment.enabled=false")
    run = fit(tiny(synth_cache_dir, tmp_path / "run", *sets))
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    swa = last["swa"]
    assert int(swa["model"]["n_averaged"]) == 2  # epochs 3 and 4
    assert json.loads((run / "summary.json").read_text())["swa_epochs_averaged"] == 2
    assert swa["scheduler"]["anneal_epochs"] == last["step"] // 4  # one epoch of steps
    lrs = [float(r["lr"]) for r in rows(run)]
    assert lrs[2] == pytest.approx(lrs[3]) == pytest.approx(0.004 * 0.25)  # held after the anneal
    assert lrs[1] > 0.004 * 0.25  # the run's own cosine before SWA
    averaged = averaged_weights(swa["model"])
    assert averaged.keys() == last["model"].keys()
    assert any(not torch.equal(averaged[k], last["model"][k]) for k in averaged if averaged[k].is_floating_point())
    if best["epoch"] == 4:  # best.pt holds the averaged weights
        assert all(torch.equal(best["model"][k], averaged[k]) for k in averaged)
    assert evaluate_run(run, split="val", show=False)["n"] > 0

    part = fit(tiny(synth_cache_dir, tmp_path / "part", *sets), stop_after_epochs=3)  # stopped inside SWA
    assert int(load_checkpoint(part / "last.pt")["swa"]["model"]["n_averaged"]) == 1
    fit(None, resume=part)
    resumed = load_checkpoint(part / "last.pt")["swa"]
    assert int(resumed["model"]["n_averaged"]) == 2
    for k, v in swa["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, msg=k)


@pytest.mark.parametrize("sets, key", [(("train.swa_start=1.0",), "train.swa_start"),
                                       (("train.swa_lr_scale=0",), "train.swa_lr_scale"),
                                       (("train.swa_start=0.5", "train.ema_decay=0.9"), "train.swa_start")])
def test_swa_keys_are_checked_by_name(sets: tuple[str, ...], key: str) -> None:
    from ordinalage.config import load_config
    from ordinalage.errors import UsageError

    with pytest.raises(UsageError, match=key):
        load_config(sets=list(sets))


# --------------------------------------------------------------------------------------------- mixup


def test_mixup_partners_are_drawn_by_age_and_images_blended_by_lam() -> None:
    from ordinalage.training.mixup import mix_batch, partner_index

    torch.manual_seed(0)
    age = torch.tensor([3.0, 4.0, 40.0, 41.0, 80.0, 81.0] * 20)
    for _ in range(5):  # sigma 1 year: a partner is within a few years, never from another decade
        assert (age[partner_index(age, 1.0)] - age).abs().max() <= 5
    random_partners = torch.cat([partner_index(age, 0.0) for _ in range(5)])  # sigma 0: any face of the batch
    assert (age[random_partners] - age.repeat(5)).abs().max() > 30
    x = torch.randn(age.numel(), 3, 4, 4)
    mixed, partner, lam = mix_batch(x, age, alpha=0.4, sigma=2.0)
    assert 0.5 <= lam <= 1.0 and partner.shape == age.shape
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[partner])
    with pytest.raises(ValueError, match="alpha"):
        mix_batch(x, age, alpha=0.0, sigma=0.0)


def test_mixup_trains_every_head_deterministically_and_changes_the_weights(synth_cache_dir: str,
                                                                           tmp_path: Path) -> None:
    from ordinalage.errors import UsageError

    sets = ("train.epochs=1", "data.augment.enabled=false", "train.scheduler=none")
    for head in ("class", "coral"):
        mixed = [fit(tiny(synth_cache_dir, tmp_path / f"{head}{i}", *sets, f"model.head={head}",
                          "train.mixup_alpha=0.4", "train.mixup_sigma=5"), quiet=True) for i in range(2)]
        plain = fit(tiny(synth_cache_dir, tmp_path / f"{head}-plain", *sets, f"model.head={head}"), quiet=True)
        a, b, c = (load_checkpoint(r / "last.pt")["model"] for r in (*mixed, plain))
        assert same(a, b)  # the partners and lam follow the run's seed
        assert not same(a, c)
        assert math.isfinite(float(rows(mixed[0])[0]["train_loss"]))
    with pytest.raises(UsageError, match="train.mixup_sigma"):
        tiny(synth_cache_dir, tmp_path / "bad", "train.mixup_sigma=-1")


def test_eval_tta_evaluates_the_test_split_with_flip_tta(synth_cache_dir: str, tmp_path: Path) -> None:
    from ordinalage.evaluation.evaluate import evaluate_after_training

    run = fit(tiny(synth_cache_dir, tmp_path / "tta", "train.epochs=1", "train.eval_on_end=true", "train.eval_tta=true"),
              quiet=True)
    result = evaluate_after_training(run, show=False, device="cpu")
    assert result is not None and result["tta"] == "flip"
    assert (run / "eval-test-tta" / "metrics.json").is_file() and not (run / "eval-test").exists()
