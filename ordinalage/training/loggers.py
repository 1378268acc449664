"""Per-epoch loggers named by `train.loggers`: `csv` (metrics.csv, written by the trainer itself)
and `tensorboard` (event files under `<run folder>/tensorboard`).

TensorBoard is an optional extra (`pip install ordinalage[tensorboard]`); asking for it without
the package is a UsageError naming `train.loggers` and the pip command. `log_trial` gives
`ordinalage tune` one HParams row (and one point of a `tune/value` curve) per finished trial under
`<study folder>/tensorboard`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ordinalage.errors import UsageError

LOGGERS = ("csv", "tensorboard")
SUBDIR = "tensorboard"
INSTALL = "pip install 'ordinalage[tensorboard]'"


class EpochLogger(Protocol):
    """Receives each epoch's metrics row (and optionally the validation confusion matrix)."""

    def log_epoch(self, epoch: int, row: Mapping[str, Any], confusion: Sequence[Sequence[int]] | None = None,
                  labels: Sequence[str] | None = None) -> None: ...

    def close(self) -> None: ...


class CsvLogger:
    """A no-op: the trainer writes metrics.csv itself; listed so `train.loggers: [csv]` means what it says."""

    def log_epoch(self, epoch: int, row: Mapping[str, Any], confusion: Sequence[Sequence[int]] | None = None,
                  labels: Sequence[str] | None = None) -> None:
        return None

    def close(self) -> None:
        return None


def _summary_writer() -> Any:
    """torch's SummaryWriter class, or a UsageError saying how to install TensorBoard."""
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it; import it first for a clear error
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UsageError(f"config key 'train.loggers': 'tensorboard' needs the tensorboard package "
                         f"({exc}); install it with: {INSTALL}") from None
    return SummaryWriter


def scalar_tag(key: str) -> str:
    """TensorBoard tag of a metrics-row key: val_mae -> val/mae, train_loss -> train/loss, lr -> train/lr."""
    prefix, _, rest = key.partition("_")
    if rest and prefix in ("train", "val", "test"):
        return f"{prefix}/{rest}"
    return f"train/{key}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (Real, np.number)):
        return None
    return float(value)


def figure_image(fig: Any) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of a matplotlib Figure, drawn on an Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class TensorBoardLogger:
    """Scalars (every numeric key of each row, the learning rate among them) and the validation
    confusion matrix as an image, one step per epoch, under `run_dir/tensorboard`."""

    def __init__(self, run_dir: str | Path) -> None:
        self.log_dir = Path(run_dir) / SUBDIR
        self.writer = _summary_writer()(log_dir=str(self.log_dir))

    def log_epoch(self, epoch: int, row: Mapping[str, Any], confusion: Sequence[Sequence[int]] | None = None,
                  labels: Sequence[str] | None = None, lr: float | None = None) -> None:
        """Write `row`'s numeric values at step `epoch` (its `epoch` key is the step, not a scalar)."""
        values = dict(row)
        if lr is not None:
            values.setdefault("lr", lr)
        for key, value in values.items():
            number = _number(value)
            if key != "epoch" and number is not None:
                self.writer.add_scalar(scalar_tag(key), number, epoch)
        if confusion is not None and len(confusion):
            from ordinalage.reporting.figures import confusion_figure

            names = list(labels) if labels is not None else [str(i) for i in range(len(confusion))]
            fig = confusion_figure(confusion, names, normalize=True,
                                   title=f"validation confusion, epoch {epoch} (shares of each true group)")
            self.writer.add_image("val/confusion", figure_image(fig), epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def check_loggers(names: Sequence[str]) -> list[str]:
    """The names, checked: known and not repeated; a UsageError names `train.loggers`."""
    names = [str(n) for n in names]
    for name in names:
        if name not in LOGGERS:
            raise UsageError(f"config key 'train.loggers': unknown logger {name!r} (choose from {', '.join(LOGGERS)})")
    if len(set(names)) != len(names):
        raise UsageError(f"config key 'train.loggers': a logger is listed twice ({', '.join(names)})")
    return names


def build_loggers(names: Sequence[str], run_dir: str | Path) -> list[EpochLogger]:
    """One logger per name in `train.loggers` (checked before any is created)."""
    names = check_loggers(names)
    if "tensorboard" in names:
        _summary_writer()  # fail before creating anything
    return [TensorBoardLogger(run_dir) if name == "tensorboard" else CsvLogger() for name in names]


def log_trial(study_dir: str | Path, trial_number: int, params: Mapping[str, Any], value: float | None) -> Path:
    """One tuning trial in TensorBoard: an HParams row (run `trial-NNNN`) with its parameters and
    objective `value` (NaN when it has none), and the point (trial, value) of the `tune/value`
    curve. Returns the log folder, `<study_dir>/tensorboard`."""
    log_dir = Path(study_dir) / SUBDIR
    hparams = {str(k): v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
    number = _number(value)
    metric = number if number is not None and math.isfinite(number) else float("nan")
    writer = _summary_writer()(log_dir=str(log_dir))
    try:
        writer.add_hparams(hparams, {"tune/value": metric}, run_name=f"trial-{int(trial_number):04d}",
                           global_step=int(trial_number))
        if not math.isnan(metric):
            writer.add_scalar("tune/value", metric, int(trial_number))
    finally:
        writer.close()
    return log_dir
