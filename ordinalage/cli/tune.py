"""`ordinalage tune`: an Optuna study over augmentation, sampling and training knobs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ordinalage.cli.options import add_config, add_jobs, add_json, add_out, add_set, add_storage, print_json
from ordinalage.cli.parser import add_command, tag


def tune(args: argparse.Namespace) -> int:
    from ordinalage.training.preemption import PREEMPTED_EXIT, TrainingPreempted
    from ordinalage.tuning.runner import WorkerPreempted
    from ordinalage.tuning.study import run_tune

    try:
        result = run_tune(args.config, study_name=args.study, storage=args.storage, trials=args.trials,
                          timeout=args.timeout, workers=args.jobs, out=args.out, sets=args.set,
                          show=not args.json)
    except (TrainingPreempted, WorkerPreempted) as exc:  # the trial is recorded as failed; a rerun replaces it
        print(f"ordinalage: preempted by {exc.signal_name}; the study goes on when the same command runs again",
              file=sys.stderr)
        return PREEMPTED_EXIT
    if args.json:
        print_json(result)
    return 0


def register(sub: Any) -> None:
    p = add_command(sub, "tune", help="Optuna study over augmentation, sampling and training knobs",
                    exits=(0, 1, 2, 75, 130),
                    example="ordinalage tune --config configs/tune/coral.yaml --trials 40 --jobs 2 --json")
    add_config(p, "tune", required=True)
    tag(p.add_argument("--study", metavar="NAME", help="study name (default: from the YAML)"), "study")
    add_storage(p, "SQLite in the study folder for one job, a journal file there for --jobs > 1")
    tag(p.add_argument("--trials", type=int, metavar="N",
                       help="total number of trials the study should reach; a rerun completes an interrupted study "
                       "and a larger N extends it (default: the tune file's `trials`)"), "trials")
    tag(p.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="no new trial starts after this many seconds (default: none)"), "timeout")
    add_jobs(p, "one trial at a time")
    add_out(p, "folder", "the study (default: studies/<study>)", metavar="DIR")
    add_set(p, "a key of the base config")
    add_json(p, "the study summary")
    p.set_defaults(func=tune)
