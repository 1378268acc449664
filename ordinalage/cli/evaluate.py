"""`ordinalage evaluate`, `report` and `compare`: metrics of a model or a predictions file, one HTML
page, and one table (or a paired verdict) over several runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ordinalage.cli.options import (
    add_batch_size,
    add_data,
    add_device,
    add_ensemble,
    add_groups,
    add_interval,
    add_json,
    add_loader_workers,
    add_out,
    add_print_config,
    add_prior,
    add_split,
    add_strict,
    add_tta,
    add_verdict_options,
    print_json,
)
from ordinalage.cli.parser import add_command, tag
from ordinalage.errors import UsageError


def model_config(model: str | Path, data: list[str] | None = None) -> dict[str, Any]:
    """The resolved config of a run folder, an ensemble run (its first member's) or a checkpoint file,
    with `data` as its data.sources when given (the data the evaluation reads)."""
    from ordinalage.config import config_from_dict, load_config, set_dotted, to_dict
    from ordinalage.runs.rundir import RunDir, member_dirs

    path = Path(model)
    members = member_dirs(path) if path.is_dir() else []
    run = RunDir.of(members[0] if members else path)
    if run is not None:
        config = to_dict(load_config(run.config_yaml))
    else:
        from ordinalage.runs.checkpoint import load_checkpoint

        config = to_dict(config_from_dict(load_checkpoint(path)["config"]))
    return set_dotted(config, "data.sources", list(data)) if data else config


def evaluate(args: argparse.Namespace) -> int:
    from ordinalage.evaluation.evaluate import evaluate_predictions_file, evaluate_run

    if args.print_config:
        if not args.model:
            raise UsageError("evaluate --print-config: give MODEL (a predictions CSV has no config)")
        import yaml

        sys.stdout.write(yaml.safe_dump(model_config(args.model, args.data), sort_keys=False))
        return 0
    if args.predictions:
        if args.model:
            raise UsageError("evaluate: give either MODEL or --predictions, not both")
        if args.report:
            raise UsageError("evaluate --report: give a run folder or checkpoint (a predictions CSV has no run to report)")
        result = evaluate_predictions_file(args.predictions, groups=args.groups, out=args.out, show=not args.json)
    elif args.model:
        from ordinalage.evaluation.breakdown import parse_by
        from ordinalage.evaluation.thresholds import parse_thresholds

        thresholds = parse_thresholds(args.threshold, flag="thresholds") if args.threshold else []
        challenges = parse_thresholds(args.challenge, flag="challenges") if args.challenge else []
        result = evaluate_run(args.model, data=args.data, split=args.split, out=args.out,
                              batch_size=args.batch_size, device=args.device, show=not args.json,
                              strict=bool(args.strict), workers=args.workers, tta=args.tta, prior=args.prior,
                              interval=args.interval, thresholds=thresholds, challenges=challenges,
                              by=parse_by(args.by), calibrate=args.calibrate, per_source=args.per_source,
                              ensemble=args.ensemble or (), report=args.report)
    else:
        raise UsageError("evaluate: give MODEL or --predictions CSV")
    if args.json:
        print_json(result)
    return 0


def report(args: argparse.Namespace) -> int:
    from ordinalage.evaluation.reports import write_report

    result = write_report(args.targets, args.out, card=args.card, show=not args.json)
    if args.json:
        print_json(result)
    return 0


def compare(args: argparse.Namespace) -> int:
    from ordinalage.evaluation.compare import compare_paired, compare_runs

    if args.paired:
        if len(args.runs) != 2:
            raise UsageError(f"compare --paired takes two runs (or two quoted glob patterns), got {len(args.runs)}")
        from ordinalage.comparison.spec import parse_rope

        result = compare_paired(args.runs[0], args.runs[1], show=not args.json, rope=parse_rope(args.rope),
                                age_mix=args.age_mix)
    else:
        result = compare_runs(args.runs, plot=args.plot, show=not args.json)
    if args.json:
        print_json(result)
    return 0


def _decision_options(p: argparse.ArgumentParser) -> None:
    tag(p.add_argument("--threshold", metavar="AGES", help="age thresholds for accept/reject error rates, e.g. 18"),
        "threshold")
    tag(p.add_argument("--challenge", metavar="AGES",
                       help="challenge ages (accept if estimate >= it), e.g. 18,21,25"), "challenge")
    tag(p.add_argument("--by", metavar="COLUMNS",
                       help="error breakdown by attributes, e.g. gender,race (UTKFace names)"), "by")
    tag(p.add_argument("--per-source", action="store_true", dest="per_source",
                       help="one row per --data spec (and the combined row); compare shows a runs x datasets matrix"),
        "per-source")
    tag(p.add_argument("--calibrate", action="store_true",
                       help="fit a temperature on the val split: ECE before/after, and used before --prior em"),
        "calibrate")
    tag(p.add_argument("--report", action="store_true",
                       help="also write report.html (one self-contained page) beside metrics.json and MODEL_CARD.md"),
        "report")


def _evaluate_parser(sub: Any) -> None:
    p = add_command(sub, "evaluate", help="metrics, baseline, confusion matrices for a model or a predictions CSV",
                    example=["ordinalage evaluate runs/coral30 --json",
                             "ordinalage evaluate utkface-small --data folder:my_faces --split all",
                             "ordinalage evaluate --predictions preds.csv --json"])
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a run folder (an ensemble's too), a checkpoint file or a shipped model's name (with --data)")
    add_data(p, " (default: the run's own data)")
    add_split(p, "test", "default test")
    tag(p.add_argument("--predictions", metavar="CSV",
                       help="judge a predictions file (true_age,pred_age or true_group,pred_group) instead of MODEL"),
        "predictions")
    add_groups(p, " of --predictions")
    add_out(p, "folder", "where metrics.json, the plots and the card go (default: <run>/eval-<split>)")
    add_batch_size(p, "for the model", default=128)
    add_loader_workers(p, "the run's data.num_workers")
    add_device(p)
    add_strict(p)
    add_tta(p)
    add_ensemble(p, " (the first model's split)")
    add_prior(p, "em: estimated from the evaluated images")
    add_interval(p, "calibrated on the run's val split and stored in the run")
    _decision_options(p)
    add_json(p, "the metrics")
    add_print_config(p, "MODEL's resolved config (with --data as its data.sources when given)")
    p.set_defaults(func=evaluate)


def register(sub: Any) -> None:
    _evaluate_parser(sub)

    p = add_command(sub, "report", help="one self-contained HTML page of a run, several runs or a bake-off",
                    example="ordinalage report runs/coral30 --out report.html --card")
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="a run folder (or ensemble run folder), a bake-off folder, or several run folders to compare")
    add_out(p, "file", "the HTML page to write, e.g. report.html", required=True, metavar="HTML")
    tag(p.add_argument("--card", action="store_true", help="also write MODEL_CARD.md beside --out (one run folder)"),
        "card")
    add_json(p, "what was written")
    p.set_defaults(func=report)

    p = add_command(sub, "compare", help="one table of several runs, best value per column marked",
                    example=["ordinalage compare runs/a runs/b --json",
                             "ordinalage compare 'runs/a-seed*' 'runs/b-seed*' --paired --json"])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (with --paired: two, or two quoted globs)")
    tag(p.add_argument("--plot", metavar="PNG", help="file: a bar chart of MAE and accuracy (default: none)"),
        "plot-file")
    tag(p.add_argument("--paired", action="store_true",
                       help="RUN_A RUN_B (or two quoted glob patterns of runs paired in sorted order): the paired "
                       "difference in test MAE on the same images, its interval over seed and test-set noise and a "
                       "verdict (a lower, b lower, equivalent, undecided)"), "paired")
    add_verdict_options(p, rope_default="0.1", mix_default="test")
    add_json(p, "the table (or the paired verdict)")
    p.set_defaults(func=compare)
