"""The options that recur across commands, built in one place so each has one spelling, one help
text and one default: --data, --set, --device, --json, --out, --detector, the inference options
(--tta, --ensemble, --prior, --interval), --jobs, --workers, --config, --print-config and friends.
Each builder tags its option with a meaning (`parser.tag`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ordinalage.cli.parser import add_deprecated, lazy_text, tag
from ordinalage.cli.types import (
    DetectorChoices,
    budget_minutes,
    data_kinds,
    detector_default,
    detector_names,
    level,
    loader_workers,
)

DATA_KINDS = lazy_text("{DATA_KINDS}", data_kinds)
DETECTOR_DEFAULT = lazy_text("{DETECTOR_DEFAULT}", detector_default)
DETECTORS = lazy_text("{DETECTORS}", lambda: " | ".join(detector_names()))

#: what --out is, per kind of output
OUT_KINDS = {"run": "RUN", "folder": "DIR", "file": "FILE"}


def print_json(obj: Any) -> None:
    """One JSON object on stdout (the only thing a command prints there)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def add_data(p: argparse.ArgumentParser, extra: str = "") -> None:
    tag(p.add_argument("--data", action="append", metavar="SPEC",
                       help=f"data spec, one of: {DATA_KINDS}; repeat to combine{extra}"), "data")


def add_groups(p: argparse.ArgumentParser, scope: str = "",
               default: str = "the seven decades 0-10,...,61-70") -> None:
    tag(p.add_argument("--groups", metavar="G",
                       help=f"age groups{scope} as lo-hi labels, e.g. 0-10,11-20,...,71+ (default: {default})"),
        "groups")


def add_set(p: argparse.ArgumentParser, what: str = "any config key") -> None:
    tag(p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override {what}, e.g. --set train.lr=0.001 (repeatable; the value is read as YAML)"),
        "set")


def add_config(p: argparse.ArgumentParser, kind: str, required: bool = False) -> None:
    """--config: a YAML file of this command's `kind` (train, tune or bakeoff)."""
    helps = {"train": "training YAML (configs/experiments/, configs/model/, ...); `base:` files are merged under it",
             "data": "training YAML whose data section (splits, caps, sampling) to apply",
             "tune": "tune YAML (configs/tune/): the search space, trials and base config",
             "bakeoff": "bake-off YAML (configs/bakeoff/): run_config, data, seeds, budget, grid, methods"}
    tag(p.add_argument("--config", required=required, metavar="YAML", help=helps[kind]),
        "config:train" if kind == "data" else f"config:{kind}")


def add_device(p: argparse.ArgumentParser, from_config: bool = False) -> None:
    if from_config:
        tag(p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the config's train.device, auto)"),
            "device")
    else:
        tag(p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N"), "device")


def add_json(p: argparse.ArgumentParser, what: str = "the result") -> None:
    tag(p.add_argument("--json", action="store_true",
                       help=f"print {what} as one JSON object on stdout (logs and progress go to stderr)"), "json")


def add_out(p: argparse.ArgumentParser, kind: str, what: str, required: bool = False,
            metavar: str | None = None) -> argparse.Action:
    """--out, always stating whether it is a run folder, a folder or a file."""
    noun = {"run": "run folder", "folder": "folder", "file": "file"}[kind]
    action = p.add_argument("--out", required=required, metavar=metavar or OUT_KINDS[kind], help=f"{noun}: {what}")
    return tag(action, f"out:{kind}")


def add_print_config(p: argparse.ArgumentParser, what: str) -> None:
    tag(p.add_argument("--print-config", action="store_true", dest="print_config",
                       help=f"print {what} as YAML on stdout and exit without running anything"), "print-config")


def add_seed(p: argparse.ArgumentParser, what: str, default: int | None = None) -> None:
    tag(p.add_argument("--seed", type=int, default=default, help=f"random seed {what}"), "seed")


def add_epochs(p: argparse.ArgumentParser, what: str) -> None:
    tag(p.add_argument("--epochs", type=int, metavar="N", help=f"train this many epochs {what}"), "epochs")


def add_budget(p: argparse.ArgumentParser, what: str) -> None:
    tag(p.add_argument("--budget", type=budget_minutes, metavar="TIME",
                       help=f"wall time, e.g. 30m, 90s, 1.5h: {what}"), "budget")


def add_split(p: argparse.ArgumentParser, default: str, what: str) -> None:
    tag(p.add_argument("--split", default=default, choices=("train", "val", "test", "all"),
                       help=f"which images: the run's train, val or test split, or all of --data ({what})"), "split")


def add_batch_size(p: argparse.ArgumentParser, what: str, default: int | None = None) -> None:
    tag(p.add_argument("--batch-size", type=int, default=default, dest="batch_size", metavar="N",
                       help=f"images per batch {what}"), "batch-size")


def add_loader_workers(p: argparse.ArgumentParser, default_text: str) -> None:
    """--workers: DataLoader worker processes only (parallel jobs are --jobs)."""
    tag(p.add_argument("--workers", type=loader_workers, metavar="N|auto",
                       help=f"DataLoader worker processes for reading images: auto or N (default: {default_text})"),
        "loader-workers")


def add_jobs(p: argparse.ArgumentParser, what: str) -> None:
    """--jobs N parallel processes on this host; --workers N is its deprecated spelling here."""
    tag(p.add_argument("--jobs", type=int, default=1, metavar="N",
                       help=f"parallel processes on this host, each training {what} (a journal-file study)"), "jobs")
    add_deprecated(p, "--workers", "--jobs", dest="jobs", type=int, metavar="N")


def add_storage(p: argparse.ArgumentParser, default_text: str) -> None:
    tag(p.add_argument("--storage", metavar="URL",
                       help=f"Optuna storage: journal:FILE | postgresql://... | sqlite:///FILE (one process only); "
                       f"default: {default_text}"), "storage")


def add_strict(p: argparse.ArgumentParser) -> None:
    tag(p.add_argument("--strict", action="store_true", default=None,
                       help="an unreadable image is an error (default: skipped and counted)"), "strict")


def add_detector(p: argparse.ArgumentParser, allow_none: bool = False, what: str = "") -> None:
    none = "; none: each image is one face, no detection" if allow_none else ""
    tag(p.add_argument("--detector", choices=DetectorChoices(allow_none), metavar="DETECTOR",
                       help=f"face detector{what}: {DETECTORS}{none}; dlib needs pip install 'ordinalage[dlib]' "
                       f"(default: {DETECTOR_DEFAULT})"), "detector")


def add_model(p: argparse.ArgumentParser, default_shipped: bool, positional: str | None = None) -> None:
    """--model NAME|RUN|CHECKPOINT: a shipped model (`ordinalage models`), a run folder or a checkpoint;
    with `positional` (its help), also an optional MODEL positional that means the same (`model_of`)."""
    if positional is not None:
        p.add_argument("model_pos", nargs="?", metavar="MODEL", help=f"{positional} (as --model)")
    default = "the shipped utkface-small, said on stderr" if default_shipped else "none: name one"
    tag(p.add_argument("--model", metavar="NAME|RUN|CHECKPOINT",
                       help="a shipped model's name (`ordinalage models`), a run folder (an ensemble's too) or a "
                            f"checkpoint file (default: {default})"), "model")


def model_of(args: argparse.Namespace) -> str | None:
    """The model named by `--model` or the MODEL positional (None: neither)."""
    return args.model or getattr(args, "model_pos", None)


def add_tta(p: argparse.ArgumentParser) -> None:
    tag(p.add_argument("--tta", action="store_true",
                       help="test-time augmentation: average each face's logits with its mirror's (2x model time)"),
        "tta")


def add_ensemble(p: argparse.ArgumentParser, what: str = "") -> None:
    tag(p.add_argument("--ensemble", nargs="+", metavar="MODEL",
                       help="more models (run folders or checkpoints) averaged with MODEL; same labels" + what
                       + " (an ensemble run folder needs no flag)"), "ensemble")


def add_prior(p: argparse.ArgumentParser, em: str) -> None:
    tag(p.add_argument("--prior", metavar="train|uniform|em|FILE",
                       help=f"adapt to an age mix: train (as trained), uniform, {em}, or a CSV (age,weight) / prior.json "
                       "(default: as trained, no adaptation)"), "prior")


def add_interval(p: argparse.ArgumentParser, what: str) -> None:
    tag(p.add_argument("--interval", type=level, metavar="LEVEL",
                       help=f"conformal age intervals at this coverage, e.g. 0.9: {what}"), "interval")


def add_verdict_options(p: argparse.ArgumentParser, rope_default: str | None, mix_default: str | None) -> None:
    """--rope and --age-mix, as bake-offs and paired comparisons read their verdicts."""
    tag(p.add_argument("--rope", default=rope_default, metavar="YEARS",
                       help="region of practical equivalence: a difference inside +-YEARS is 'equivalent' "
                       "(default 0.1, or the bake-off YAML's rope:; 0 turns equivalence off)"), "rope")
    tag(p.add_argument("--age-mix", default=mix_default, metavar="MIX",
                       help="the age mix the pooled verdicts are for: test (as the test set is sampled; default), "
                       "uniform (every age group weighs the same) or a file of shares (prior.json from "
                       "'prior estimate', or a CSV age,weight)"), "age-mix")


__all__ = ["add_batch_size", "add_budget", "add_config", "add_data", "add_detector", "add_device", "add_ensemble",
           "add_epochs", "add_groups", "add_interval", "add_jobs", "add_json", "add_loader_workers", "add_out",
           "add_print_config", "add_prior", "add_seed", "add_set", "add_split", "add_storage", "add_strict",
           "add_tta", "add_verdict_options", "print_json"]
