"""train.loggers: TensorBoard event files (scalars, learning rate, confusion image), tune trials, errors."""

from __future__ import annotations

import builtins
import importlib.util
from pathlib import Path

import pytest

from ordinalage.config import load_config
from ordinalage.errors import UsageError
from ordinalage.training.loggers import CsvLogger, TensorBoardLogger, build_loggers, log_trial, scalar_tag

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="tensorboard not installed (pip install 'ordinalage[tensorboard]')")
LABELS = ["0-10", "11-20", "21+"]
ROWS = [
    {"epoch": 1, "train_loss": 2.5, "images_per_s": 300.0, "val_loss": 2.1, "val_mae": 9.5, "val_accuracy": 0.4,
     "lr": 0.003, "note": "text is skipped", "flag": True},
    {"epoch": 2, "train_loss": 1.5, "images_per_s": 310.0, "val_loss": 1.9, "val_mae": 8.0, "val_accuracy": 0.5,
     "lr": 0.0015, "note": "", "flag": False},
]
CONFUSION = [[[5, 1, 0], [2, 3, 1], [0, 1, 4]], [[6, 0, 0], [1, 4, 1], [0, 0, 5]]]


def accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={IMAGES: 0})
    acc.Reload()
    return acc


@needs_tensorboard
def test_tensorboard_writes_scalars_lr_and_confusion_image(tmp_path) -> None:
    loggers = build_loggers(["csv", "tensorboard"], tmp_path)
    assert isinstance(loggers[0], CsvLogger) and isinstance(loggers[1], TensorBoardLogger)
    for row, cm in zip(ROWS, CONFUSION, strict=True):
        for logger in loggers:
            logger.log_epoch(row["epoch"], row, confusion=cm, labels=LABELS)
    for logger in loggers:
        logger.close()
    acc = accumulator(tmp_path / "tensorboard")
    scalars = set(acc.Tags()["scalars"])
    assert scalars == {"train/loss", "train/images_per_s", "val/loss", "val/mae", "val/accuracy", "train/lr"}
    assert [(e.step, e.value) for e in acc.Scalars("val/mae")] == [(1, 9.5), (2, 8.0)]
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([0.003, 0.0015])
    images = acc.Images("val/confusion")
    assert [i.step for i in images] == [1, 2]
    assert images[0].width > 100 and images[0].height > 100 and images[0].encoded_image_string[:4] == b"\x89PNG"


@needs_tensorboard
def test_lr_argument_and_no_confusion(tmp_path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_epoch(3, {"epoch": 3, "val_mae": 7.0}, lr=0.01)
    logger.close()
    acc = accumulator(tmp_path / "tensorboard")
    assert acc.Scalars("train/lr")[0].value == pytest.approx(0.01)
    assert acc.Tags()["images"] == []


def test_tags() -> None:
    assert [scalar_tag(k) for k in ("val_mae", "train_loss", "lr", "images_per_s", "test_mae")] == [
        "val/mae", "train/loss", "train/lr", "train/images_per_s", "test/mae"]


@needs_tensorboard
def test_log_trial_writes_one_hparams_row_per_trial(tmp_path) -> None:
    log_trial(tmp_path, 0, {"train.lr": 0.001, "data.sampling": "none", "model.width": 32}, 7.5)
    log_trial(tmp_path, 1, {"train.lr": 0.003, "data.sampling": "weighted", "model.width": None}, 6.9)
    log_trial(tmp_path, 2, {"train.lr": 0.01, "data.sampling": "none", "model.width": 16}, None)  # failed trial
    folder = tmp_path / "tensorboard"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["trial-0000", "trial-0001", "trial-0002"]
    acc = accumulator(folder)
    assert [(e.step, e.value) for e in acc.Scalars("tune/value")] == [(0, 7.5), (1, pytest.approx(6.9))]
    row = accumulator(folder / "trial-0001")
    assert "_hparams_/session_start_info" in row.summary_metadata
    assert row.Scalars("tune/value")[0].value == pytest.approx(6.9)


def test_unknown_or_repeated_logger_names_the_key(tmp_path) -> None:
    with pytest.raises(UsageError, match=r"train\.loggers.*'wandb'.*csv, tensorboard"):
        build_loggers(["csv", "wandb"], tmp_path)
    with pytest.raises(UsageError, match=r"train\.loggers.*twice"):
        build_loggers(["csv", "csv"], tmp_path)


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith(("tensorboard.", "torch.utils.tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(UsageError, match=r"train\.loggers.*pip install 'ordinalage\[tensorboard\]'"):
        build_loggers(["csv", "tensorboard"], tmp_path)
    with pytest.raises(UsageError, match="pip install"):
        log_trial(tmp_path, 0, {"train.lr": 0.1}, 1.0)
    assert not (tmp_path / "tensorboard").exists()
    assert isinstance(build_loggers(["csv"], tmp_path)[0], CsvLogger)  # csv alone needs nothing


def test_config_field_defaults_and_overrides() -> None:
    assert load_config().train.loggers == ("csv",)
    assert load_config(sets=["train.loggers=[csv, tensorboard]"]).train.loggers == ("csv", "tensorboard")
    with pytest.raises(UsageError, match="train.loggers"):
        load_config(sets=["train.loggers=3"])
