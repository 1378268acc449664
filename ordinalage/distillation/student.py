"""`distill(TEACHER_RUN, budget_min=10, out=RUN)`: one student model (class head over years) trained
on its teacher's soft targets, with the teacher's data, split, input size and training settings.

The student is an ordinary run folder (evaluate, predict, serve, export and the Python API read it)
that also holds teacher_targets.npz, so `ordinalage train --resume RUN` continues it without the
teacher. With a budget, the wall time counts from the start of `distill`: the teacher's pass over
the training images is part of it."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ordinalage.config import Config, config_from_dict, parse_set, set_dotted, to_dict
from ordinalage.errors import UsageError
from ordinalage.runs.checkpoint import load_checkpoint
from ordinalage.runs.members import expand_members
from ordinalage.runs.rundir import RunDir
from ordinalage.training.choices import validate
from ordinalage.training.fit import fit
from ordinalage.training.soft_targets import write_soft_targets

DEFAULT_STUDENT_HEAD = "class"  # a softmax over the years; any head whose `distill_student` trait is true works


def student_config(teacher: str | Path, *, budget_min: float | None = None, epochs: int | None = None,
                   out: str | Path | None = None, seed: int | None = None, temperature: float = 1.0,
                   alpha: float = 0.0, sets: Sequence[str] = (), overrides: Mapping[str, Any] | None = None) -> Config:
    """The student's config: the teacher's (its first member's) data, input and training settings,
    with a class head (`DEFAULT_STUDENT_HEAD`; `model.head` in `overrides` or `sets` may name any head
    with the `distill_student` trait, which `validate` checks), one model, the budget or epochs given (default: the teacher member's epochs),
    its test evaluation at one forward pass per face (`train.eval_tta` false: the teacher's targets
    hold the flips already) and `train.distill_from` naming the teacher; then `overrides` (dotted
    keys) and the `--set KEY=VALUE` items."""
    teacher = Path(teacher)
    if not teacher.exists():
        raise UsageError(f"{teacher}: no such run folder (the teacher)")
    raw = to_dict(config_from_dict(load_checkpoint(expand_members(teacher)[0])["config"]))
    over = {"model.head": DEFAULT_STUDENT_HEAD, "train.members": 1, "train.distill_from": str(teacher), "train.eval_tta": False,
            "train.distill_temperature": float(temperature), "train.distill_alpha": float(alpha),
            "train.out_dir": str(out) if out else None, "train.time_budget_min": budget_min}
    if epochs is not None:
        over["train.epochs"] = int(epochs)
    if seed is not None:
        over["train.seed"] = int(seed)
    for key, value in {**over, **(overrides or {})}.items():
        raw = set_dotted(raw, key, value)
    for item in sets:
        key, value = parse_set(item)
        raw = set_dotted(raw, key, value)
    if not raw["train"]["out_dir"]:
        raw = set_dotted(raw, "train.out_dir", str(teacher.parent / f"{teacher.name}-student"))
    return validate(config_from_dict(raw))


def distill(teacher: str | Path, *, budget_min: float | None = None, epochs: int | None = None,
            out: str | Path | None = None, seed: int | None = None, temperature: float = 1.0, alpha: float = 0.0,
            sets: Sequence[str] = (), overrides: Mapping[str, Any] | None = None, device: str = "auto",
            quiet: bool = False) -> Path:
    """Train the student of `teacher` into `out` (default TEACHER-student beside it) and return its folder."""
    started = time.monotonic()
    config = student_config(teacher, budget_min=budget_min, epochs=epochs, out=out, seed=seed,
                            temperature=temperature, alpha=alpha, sets=sets, overrides=overrides)
    config, run = RunDir.create(config)
    from ordinalage.distillation.teacher import teacher_targets

    targets = teacher_targets(teacher, temperature=temperature, device=device, show=not quiet)
    write_soft_targets(run.teacher_targets_npz, targets.paths, targets.proba, skipped=targets.skipped,
                       meta={**targets.meta, "seconds": round(time.monotonic() - started, 1)})
    if not quiet:
        from ordinalage.console import stderr_console

        stderr_console().print(f"teacher {teacher}: {len(targets.paths)} training images' distributions "
                               f"(flip TTA, temperature {temperature:g}) in {time.monotonic() - started:.0f} s "
                               f"-> {run.teacher_targets_npz}")
    return fit(config, quiet=quiet, started=started)


__all__ = ["DEFAULT_STUDENT_HEAD", "distill", "student_config"]
