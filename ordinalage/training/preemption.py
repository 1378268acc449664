"""Preemption and interruption: the signals a cluster scheduler sends before it stops a job, the
`with` block that notes them, and the exceptions that stop training.

SIGTERM and SIGUSR1 (a scheduler's warning before it preempts a job or at its time limit) do not
end the process at once while a `PreemptionSignals` block is active: the signal is noted and the
training loop stops after the step in progress (`TrainingPreempted`, exit status `PREEMPTED_EXIT`
in the CLI). Ctrl-C stops it with `TrainingInterrupted`. Both are KeyboardInterrupts, not
Exceptions, so no `except Exception` (a bake-off cell, a tuning objective, a user's loop) swallows
them. Training (`training.fit`) and the tuner's workers (`tuning.runner`) share the handlers.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Self

#: the exit status of `ordinalage train` for a preempted run (EX_TEMPFAIL from sysexits.h: try again
#: later): a script or scheduler tells it from a crash (1), bad usage (2) and Ctrl-C (130)
PREEMPTED_EXIT = 75
#: the signals that preempt a run (a scheduler's warning before it kills the job)
PREEMPT_SIGNALS: tuple[signal.Signals, ...] = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1")
                                                    if hasattr(signal, name))


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: `run_dir`'s last.pt holds `epochs_done` finished epochs."""

    def __init__(self, run_dir: Path, epochs_done: int) -> None:
        super().__init__(f"{run_dir}: interrupted; last.pt holds {epochs_done} finished epoch(s)")
        self.run_dir, self.epochs_done = run_dir, epochs_done

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.run_dir, self.epochs_done)


class TrainingPreempted(KeyboardInterrupt):
    """SIGTERM or SIGUSR1 during training: the step in progress finished, then `run_dir`'s last.pt
    was written with `epoch` finished epochs and `step` batches of the next one, and training
    stopped; `ordinalage train --resume run_dir` goes on from there (`PREEMPTED_EXIT` in the CLI).

    Like Ctrl-C's `TrainingInterrupted` it is a KeyboardInterrupt, not an Exception: a caller's
    `except Exception` (a bake-off cell, a tuning objective, a user's loop) does not swallow it, and
    Optuna records the trial it stops as failed instead of leaving it running. `where` names the
    ensemble member or fold it stopped in, `run_dir` is then the ensemble's or the folds' folder."""

    def __init__(self, run_dir: str | Path, epoch: int, step: int, signal_name: str = "SIGTERM",
                 where: str = "") -> None:
        self.run_dir, self.epoch, self.step = Path(run_dir), int(epoch), int(step)
        self.signal_name, self.where = signal_name, where
        inside = f" in {where}" if where else ""
        at = f"{self.step} batch(es) into epoch {self.epoch + 1}" if self.step else f"after epoch {self.epoch}"
        super().__init__(f"{self.run_dir}: stopped by {signal_name}{inside} {at}; last.pt holds that position")

    @property
    def epochs_done(self) -> int:
        return self.epoch

    def __reduce__(self) -> tuple[Any, ...]:  # pickled whole (a tuning worker process sends it to its parent)
        return type(self), (str(self.run_dir), self.epoch, self.step, self.signal_name, self.where)


class PreemptionSignals:
    """While active (a `with` block in the main thread), SIGTERM and SIGUSR1 are only noted
    (`signum`, `signal_name`) and `on_signal` is called; the previous handlers come back on exit.
    Training's loop checks `signum` after every step. In a forked child (a DataLoader worker),
    which inherits the handler, a signal is ignored: the main process finishes its step and then
    stops its workers. Nested blocks stack: the inner one puts the outer one's handlers back."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    @property
    def signal_name(self) -> str:
        """The signal's name ("SIGTERM"), or "" before one came."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def on_signal(self, name: str) -> None:
        """Called in the handler, after the signal is noted; a subclass may raise from here."""

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() == self._pid:
            self.signum = signum
            self.on_signal(self.signal_name)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in PREEMPT_SIGNALS:
                try:
                    self._previous[sig] = signal.signal(sig, self._note)
                except (ValueError, OSError):  # pragma: no cover - a platform without it
                    pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


__all__ = ["PREEMPTED_EXIT", "PREEMPT_SIGNALS", "PreemptionSignals", "TrainingInterrupted", "TrainingPreempted"]
