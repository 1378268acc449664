"""The learning-rate schedule under an fp16 GradScaler: the scaler skips an optimiser step whose
gradients overflow (on a CPU, the first step at the initial scale of 2**16), torch then warns
"Detected call of `lr_scheduler.step()` before `optimizer.step()`" when the schedule steps, and the
training loop keeps the schedule on the batches without that warning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_training import tiny

from ordinalage.runs.checkpoint import load_checkpoint
from ordinalage.runs.runtime import fp16_supported
from ordinalage.training.fit import fit
from ordinalage.training.steps import backward_and_step

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not fp16_supported(torch.device("cpu")),
                                 reason=f"torch {torch.__version__} has no CPU fp16 autocast with a GradScaler")]

SCHEDULE_WARNING = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"


def _layer_and_optimizer() -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    return layer, torch.optim.SGD(layer.parameters(), lr=0.1)


def test_a_step_the_scaler_skips_is_reported_and_is_what_torch_warns_about() -> None:
    layer, opt = _layer_and_optimizer()
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    before = layer.weight.detach().clone()
    overflowing = layer(torch.full((2, 4), 1e35)).sum()  # x 2**16 (the initial scale): inf gradients
    assert backward_and_step(overflowing, layer, opt, scaler, grad_clip=0.0) is False
    assert torch.equal(layer.weight, before) and scaler.get_scale() == 2.0**15  # skipped, and the scale backed off
    with pytest.warns(UserWarning, match=SCHEDULE_WARNING):
        schedule.step()
    assert backward_and_step(layer(torch.ones(2, 4)).sum(), layer, opt, scaler, grad_clip=1.0) is True
    assert not torch.equal(layer.weight, before)


def test_without_a_scaler_every_step_is_taken() -> None:
    layer, opt = _layer_and_optimizer()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert backward_and_step(layer(torch.ones(2, 4)).sum(), layer, opt, scaler, grad_clip=0.0) is True


@pytest.mark.filterwarnings(f"error:{SCHEDULE_WARNING}:UserWarning")
def test_fp16_training_keeps_the_schedule_on_the_batches_without_the_warning(synth_cache_dir: str,
                                                                              tmp_path: Path) -> None:
    run = fit(tiny(synth_cache_dir, tmp_path / "fp16", "train.epochs=1", "train.precision=fp16"), quiet=True)
    ck = load_checkpoint(run / "last.pt")
    assert ck["scaler"]["scale"] < 2.0**16  # the scaler skipped at least one step (the case torch warns about)
    assert ck["scheduler"]["last_epoch"] == ck["step"] > 0  # the schedule stepped once per batch all the same
