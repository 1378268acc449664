"""`ordinalage bakeoff` (a grid x seeds x folds x datasets with paired statistics) and
`ordinalage bakeoff plan` (`bakeoff-plan`: the seeds a bake-off needs, from a pilot)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ordinalage.cli.options import (
    add_budget,
    add_config,
    add_data,
    add_epochs,
    add_jobs,
    add_json,
    add_out,
    add_print_config,
    add_set,
    add_storage,
    add_verdict_options,
    print_json,
)
from ordinalage.cli.parser import add_command, tag
from ordinalage.errors import UsageError

MISSING_CELLS_EXIT = 3  # EXIT_CODES[3]


def spec_document(spec: Any) -> dict[str, Any]:
    """The resolved bake-off: the spec's fields, how its verdicts are read, and the base run config
    every cell starts from (run_config with --set applied, before each method's keys)."""
    from ordinalage.config import load_config, to_dict

    doc = {**spec.to_dict(), "rope": spec.rope, "age_mix": spec.age_mix}
    if spec.extra:
        doc["extra"] = spec.extra
    doc["config"] = to_dict(load_config(spec.run_config, {}, list(spec.sets)))
    return doc


def bakeoff(args: argparse.Namespace) -> int:
    from ordinalage.comparison.bakeoff import command_line, run_bakeoff
    from ordinalage.comparison.spec import build_spec

    spec = build_spec(config=args.config, grid=args.grid, seeds=args.seeds, data=args.data or (),
                      budget=args.budget, epochs=args.epochs, sets=args.set, rope=args.rope, age_mix=args.age_mix)
    if args.print_config:
        import yaml

        sys.stdout.write(yaml.safe_dump(spec_document(spec), sort_keys=False))
        return 0
    if not args.out:
        raise UsageError("bakeoff: give --out DIR (the bake-off folder; rerun the same command to finish it)")
    if args.storage and args.jobs > 1 and args.storage.startswith("sqlite"):
        raise UsageError("--storage sqlite is for one process; use journal:FILE or a PostgreSQL URL with --jobs")
    from ordinalage.training.preemption import PREEMPTED_EXIT, TrainingPreempted

    try:
        result = run_bakeoff(spec, args.out, workers=args.jobs, storage=args.storage, show=not args.json,
                             command=command_line(), report_only=args.report_only)
    except TrainingPreempted as exc:  # the cell's position is in its last.pt; the same command resumes it
        print(f"ordinalage: preempted by {exc.signal_name} in {exc.run_dir}; continue with: {command_line()}",
              file=sys.stderr)
        return PREEMPTED_EXIT
    if args.json:
        print_json(result)
    else:
        print(f"wrote {args.out}/bakeoff.json, bakeoff.md, cd_diagram.png, mae_by_group.png", file=sys.stderr)
    return MISSING_CELLS_EXIT if result["missing"] else 0


def bakeoff_plan(args: argparse.Namespace) -> int:
    from ordinalage.comparison.planner import plan, print_plan

    result = plan(args.pilot, args.halfwidth)
    if args.json:
        print_json(result)
    else:
        print_plan(result)
        print(f"wrote {args.pilot}/plan.json", file=sys.stderr)
    return 0


def _bakeoff_parser(sub: Any) -> None:
    p = add_command(sub, "bakeoff", help="compare methods on the same faces: a grid x seeds x folds x datasets, "
                    "with paired statistics", exits=(0, 1, 2, MISSING_CELLS_EXIT, 75, 130),
                    example=["ordinalage bakeoff --grid model.head=coral,corn --seeds 3 --data synth --budget 10m "
                             "--jobs 2 --out bakeoffs/heads",
                             "ordinalage bakeoff --config configs/bakeoff/heads_utkface.yaml --print-config"])
    tag(p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                       help="compare these values of a config key (repeat for a product of keys)"), "grid")
    tag(p.add_argument("--seeds", type=int, metavar="N",
                       help="seeds per method (train.seed 0..N-1; default: the --config file's, or 1)"), "seeds")
    add_data(p, " (each spec is its own dataset of the comparison)")
    add_budget(p, "equal wall time per cell (or --epochs)")
    add_epochs(p, "per cell (or --budget)")
    add_config(p, "bakeoff")
    add_set(p, "a config key for every cell")
    add_jobs(p, "one cell at a time")
    add_storage(p, "a journal file in DIR for --jobs > 1, else SQLite")
    add_out(p, "folder", "the bake-off (one run folder per cell, bakeoff.json, bakeoff.md, plots); rerun to "
            "finish it (required unless --print-config)", metavar="DIR")
    add_verdict_options(p, rope_default=None, mix_default=None)
    tag(p.add_argument("--report-only", action="store_true",
                       help="train nothing: recompute bakeoff.json/md and the plots from the finished cells"),
        "report-only")
    add_json(p, "bakeoff.json's object")
    add_print_config(p, "the resolved bake-off (methods, data, seeds, budget, verdict settings, base run config)")
    p.set_defaults(func=bakeoff)


def register(sub: Any) -> None:
    _bakeoff_parser(sub)
    p = add_command(sub, "bakeoff-plan", help="(also `bakeoff plan BAKEOFF_DIR`) the seeds or folds a bake-off "
                    "needs for verdict intervals of +-HALFWIDTH years, and their CPU minutes, from a finished pilot",
                    example="ordinalage bakeoff plan bakeoffs/pilot --halfwidth 0.1 --json")
    p.add_argument("pilot", metavar="BAKEOFF_DIR", help="a finished bake-off folder with >= 2 seeds or folds")
    tag(p.add_argument("--halfwidth", type=float, default=0.1, metavar="YEARS",
                       help="the widest acceptable half-width of a pair's 95%% interval"), "halfwidth")
    add_json(p, "plan.json's object")
    p.set_defaults(func=bakeoff_plan)
