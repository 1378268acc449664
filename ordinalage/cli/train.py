"""`ordinalage train` and `ordinalage distill`: a run folder from a config or a teacher run.

With `--json`, stdout holds one object, `{run, test, minutes, ...}`; every log and progress line goes
to stderr (library prints included). `train --print-config` prints the resolved config and exits."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ordinalage.cli.options import (
    add_batch_size,
    add_budget,
    add_config,
    add_data,
    add_device,
    add_epochs,
    add_groups,
    add_json,
    add_loader_workers,
    add_out,
    add_print_config,
    add_seed,
    add_set,
    add_strict,
    print_json,
)
from ordinalage.cli.parser import add_command, tag
from ordinalage.cli.types import RegistryChoices
from ordinalage.errors import UsageError

#: summary.json keys repeated in `train --json` / `distill --json` beside run, test and minutes
SUMMARY_KEYS = ("head", "backbone", "target", "data", "epochs", "epochs_done", "best_epoch", "monitor", "best_value",
                "stopped_early", "device", "precision", "budget", "members", "teacher")
TRAINING_EXITS = (0, 1, 2, 75, 130)


@contextlib.contextmanager
def logs_to_stderr(active: bool) -> Iterator[None]:
    """While training for `--json`: anything printed on stdout goes to stderr instead."""
    if not active:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as dotted config keys (config.SHORT_KEYS names the flags)."""
    from ordinalage.config import SHORT_KEYS

    over: dict[str, Any] = {key: getattr(args, flag) for flag, key in SHORT_KEYS.items()
                            if getattr(args, flag, None) is not None}
    if getattr(args, "compile", None):
        over["train.compile"] = True
    if getattr(args, "strict", None):
        over["data.strict"] = True
    return over


def run_result(run_dir: Path, test: dict[str, Any] | None, started: float) -> dict[str, Any]:
    """`train --json`'s object: the run folder, its test metrics, the minutes taken and summary.json's headline keys."""
    from ordinalage.runs.rundir import RunDir

    summary = RunDir(run_dir).read_summary(tolerant=True) if (Path(run_dir) / "summary.json").is_file() else {}
    test = test if test is not None else summary.get("test")
    out: dict[str, Any] = {"run": str(run_dir), "test": test, "minutes": round((time.monotonic() - started) / 60, 3)}
    out.update({k: summary[k] for k in SUMMARY_KEYS if k in summary})
    return out


def folds_result(run_dir: Path, started: float) -> dict[str, Any]:
    """`train --json` for a folds run: the mean of each metric over the folds as `test`, folds.json as `folds`."""
    from ordinalage.runs.rundir import read_json_object

    folds = read_json_object(Path(run_dir) / "folds.json")
    test = {k: v["mean"] for k, v in (folds.get("summary") or {}).items() if isinstance(v, dict) and "mean" in v}
    return {"run": str(run_dir), "test": test, "minutes": round((time.monotonic() - started) / 60, 3), "folds": folds}


def print_train_config(args: argparse.Namespace) -> int:
    """The config `train` would use, fully resolved (`base:` chains, flags, `--set`), as YAML on stdout."""
    import yaml

    from ordinalage.config import load_config, to_dict
    from ordinalage.training.choices import validate

    if args.resume and args.resume != "auto":
        from ordinalage.runs.rundir import RunDir

        config = load_config(RunDir(args.resume).config_yaml)
    else:
        config = validate(load_config(args.config, train_overrides(args), args.set))
    sys.stdout.write(yaml.safe_dump(to_dict(config), sort_keys=False))
    return 0


def train(args: argparse.Namespace) -> int:
    from ordinalage.config import load_config
    from ordinalage.evaluation.evaluate import evaluate_after_training
    from ordinalage.training.choices import validate
    from ordinalage.training.folds import is_folds_run
    from ordinalage.training.train import resumable
    from ordinalage.training.train import train as train_run

    if args.print_config:
        return print_train_config(args)
    main_rank = os.environ.get("RANK", "0") == "0"
    resume, started = args.resume, time.monotonic()

    def evaluate_fold(run_dir: Any) -> dict[str, Any]:
        # every fold's test part is evaluated: that is what cross-validation reports
        return evaluate_after_training(run_dir, show=False, device=args.device or "auto", force=True) or {}

    with logs_to_stderr(args.json):
        try:
            if resume == "auto":  # continue --out when it holds a run, else start it from the other flags
                if not args.out:
                    raise UsageError("--resume auto needs --out RUN (the run to continue, or to start when it holds none)")
                resume = args.out if resumable(args.out) else None
                if main_rank:
                    print(f"ordinalage: {'resuming' if resume else 'starting'} {args.out}", file=sys.stderr)
            # a folds run (folds:K, loso, a source's own folds, or --resume of its folder): every fold, then mean +- std
            config = None if resume else validate(load_config(args.config, train_overrides(args), args.set))
            run_dir = train_run(config, resume=resume, all_folds=True, evaluate_fold=evaluate_fold)
        except training_stops() as exc:
            return training_stopped(exc, main_rank)
        if not main_rank:  # under torchrun, rank 0 alone evaluates and reports
            return 0
        if is_folds_run(run_dir):  # each fold was evaluated on its own test part (folds.json)
            result = folds_result(run_dir, started)
        else:
            test = evaluate_after_training(run_dir, device=args.device or "auto", show=not args.json)
            result = run_result(run_dir, test, started)
    print(f"run folder: {run_dir}", file=sys.stderr)
    if args.json:
        print_json(result)
    return 0


def training_stopped(exc: Exception, main_rank: bool = True) -> int:
    """The message and exit status of a training run that did not finish: its folder exists
    already (a usage error), a preemption signal (75) or Ctrl-C (130)."""
    from ordinalage.runs.rundir import RunExists
    from ordinalage.training.preemption import PREEMPTED_EXIT, TrainingPreempted

    if isinstance(exc, RunExists):
        raise UsageError(f"{exc.path}: already holds a run; continue it with: ordinalage train --resume {exc.path}, "
                         "or choose another --out") from None
    if isinstance(exc, TrainingPreempted):  # SIGTERM / SIGUSR1: the position is saved; a scheduler requeues on 75
        if main_rank:
            where = f" in {exc.where}" if exc.where else ""
            at = f"{exc.step} batch(es) into epoch {exc.epoch + 1}" if exc.step else f"after {exc.epoch} epoch(s)"
            print(f"ordinalage: preempted by {exc.signal_name}{where}, {at}; last.pt holds that position; "
                  f"continue with: ordinalage train --resume {exc.run_dir}", file=sys.stderr)
        return PREEMPTED_EXIT
    print(f"ordinalage: interrupted; {exc.run_dir / 'last.pt'} holds {exc.epochs_done} finished epoch(s); "  # type: ignore[attr-defined]
          f"continue with: ordinalage train --resume {exc.run_dir}", file=sys.stderr)  # type: ignore[attr-defined]
    return 130


def training_stops() -> tuple[type[Exception], ...]:
    from ordinalage.runs.rundir import RunExists
    from ordinalage.training.preemption import TrainingInterrupted, TrainingPreempted

    return (RunExists, TrainingPreempted, TrainingInterrupted)


def distill(args: argparse.Namespace) -> int:
    from ordinalage.distillation import distill as distill_run
    from ordinalage.evaluation.evaluate import evaluate_after_training

    if args.budget is not None and args.epochs is not None:
        raise UsageError("distill: give --budget or --epochs, not both")
    started = time.monotonic()
    with logs_to_stderr(args.json):
        try:
            run_dir = distill_run(args.teacher, budget_min=args.budget, epochs=args.epochs, out=args.out,
                                  seed=args.seed, temperature=args.temperature, alpha=args.alpha, sets=args.set,
                                  device=args.device or "auto")
        except training_stops() as exc:
            return training_stopped(exc)
        test = evaluate_after_training(run_dir, device=args.device or "auto", show=not args.json)
    print(f"run folder: {run_dir}", file=sys.stderr)
    if args.json:
        print_json(run_result(run_dir, test, started))
    return 0


def _model_options(p: argparse.ArgumentParser) -> None:
    tag(p.add_argument("--head", choices=RegistryChoices("model.head"), metavar="HEAD",
                       help="a registered head: %(choices)s (default: the config's model.head, coral; docs/heads.md)"),
        "head")
    tag(p.add_argument("--backbone", choices=RegistryChoices("model.backbone"), metavar="BACKBONE",
                       help="a registered backbone (scratch, vgg16, resnet18/34/50) or timm:NAME "
                       "(default: the config's model.backbone, scratch)"), "backbone")
    tag(p.add_argument("--weights", help="backbone start: imagenet | vggface | a file (.pth, .safetensors, VGGFace "
                       ".h5) (default: the config's model.weights, none)"), "weights")
    tag(p.add_argument("--init", metavar="MODEL",
                       help="start from a trained run folder or checkpoint: its backbone, and its head when it fits "
                       "(to fine-tune)"), "init")
    tag(p.add_argument("--target", choices=RegistryChoices("model.target"), metavar="TARGET",
                       help="age (single years) | group (age groups) (default: the config's model.target, age)"),
        "target")


def _train_parser(sub: Any) -> None:
    p = add_command(sub, "train", help="train a model; writes a run folder", exits=TRAINING_EXITS,
                    example=["ordinalage train --head coral --data utkface:../shared/data/UTKFace --budget 30m "
                             "--out runs/coral30",
                             "ordinalage train --config configs/experiments/utkface_30min.yaml --print-config"])
    _model_options(p)
    add_data(p, " (default: the config's data.sources, synth)")
    add_groups(p, default="the config's data.groups, the seven decades 0-10,...,61-70")
    add_config(p, "train")
    add_epochs(p, "(default: the config's train.epochs, 8)")
    add_budget(p, "the whole run; sets the epochs from a measured step time (train.time_budget_min)")
    tag(p.add_argument("--members", type=int, metavar="N",
                       help="train an ensemble of N models, each with its own seed and 1/N of the budget, into one "
                       "run folder that evaluate, predict, live, serve and export average (default 1)"), "members")
    add_batch_size(p, "for training (default: the config's train.batch_size, 64)")
    tag(p.add_argument("--lr", type=float, help="peak learning rate (default: the config's train.lr, 0.003)"), "lr")
    tag(p.add_argument("--image-size", type=int, dest="image_size", metavar="PX",
                       help="input side in pixels (default: the config's data.image_size; 0: the backbone's own)"),
        "image-size")
    add_loader_workers(p, "the config's data.num_workers, auto")
    add_device(p, from_config=True)
    tag(p.add_argument("--precision", choices=RegistryChoices("train.precision"), metavar="PRECISION",
                       help="auto | fp32 | bf16 | fp16 (default: the config's train.precision, auto)"), "precision")
    tag(p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model"), "compile")
    add_seed(p, "of the run (default: the config's train.seed, 0)")
    add_strict(p)
    add_out(p, "run", "where the run goes (default: runs/<head>-<backbone>-<time>)")
    tag(p.add_argument("--resume", metavar="RUN|auto",
                       help="continue a stopped run from its last.pt (mid-epoch after a preemption signal, exit status "
                       "75); 'auto' with --out RUN: continue RUN if it holds a run, else start it"), "resume")
    add_set(p)
    add_json(p, "{run, test, minutes, ...}")
    add_print_config(p, "the resolved config (after base: files, flags and --set)")
    p.set_defaults(func=train)


def _distill_parser(sub: Any) -> None:
    p = add_command(sub, "distill", help="one model trained on a teacher run's (an ensemble's) age distributions",
                    exits=TRAINING_EXITS, example="ordinalage distill runs/ensemble --budget 30m --out runs/student")
    p.add_argument("teacher", metavar="TEACHER_RUN",
                   help="the teacher's run folder (an ensemble's folder: its members averaged)")
    add_budget(p, "the whole distillation, the teacher's pass included")
    add_epochs(p, "instead of a budget (default: the teacher member's)")
    tag(p.add_argument("--temperature", type=float, default=1.0,
                       help="soften the teacher's distributions (p ** (1/T)) and the student's logits"), "temperature")
    tag(p.add_argument("--alpha", type=float, default=0.0,
                       help="weight of the loss on the true ages beside the teacher's, in [0, 1]"), "alpha")
    add_seed(p, "of the student (default: the teacher's)")
    add_device(p)
    add_out(p, "run", "the student's run (default: TEACHER_RUN-student)")
    add_set(p, "a key of the student's config (the teacher's)")
    add_json(p, "{run, test, minutes, ...}")
    p.set_defaults(func=distill)


def register(sub: Any) -> None:
    _train_parser(sub)
    _distill_parser(sub)
