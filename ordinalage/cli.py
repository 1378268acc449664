"""The `ordinalage` command: parse arguments, build a config, call one function.

Exit status: 0 success, 2 bad usage or bad input (message names the file, line or key),
130 interrupted. `--json` output goes to stdout alone; logs and progress go to stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ordinalage.errors import UsageError
from ordinalage.version import __version__

# ---------------------------------------------------------------------------------------------
# library errors on the command line: an option's name (UsageError.option, the Python parameter or
# config key) printed as this command's flag

_PREDICTING = {"device": "--device", "tta": "--tta", "ensemble": "--ensemble", "detector": "--detector"}
_ADAPTING = {"prior": "--prior", "interval": "--interval"}
_VERDICTS = {"rope": "--rope", "age_mix": "--age-mix"}

#: command -> {library option name -> flag}. Per command, because a name can be a different flag (or
#: none) elsewhere: `workers` is the DataLoader's in train and evaluate but worker processes in tune
#: and bakeoff, and `data.num_workers` is `--workers` in train alone.
OPTION_FLAGS: dict[str, dict[str, str]] = {
    "data": {"out": "--out", "n": "--n", "seed": "--seed", "size": "--size", "data": "--data",
             "groups": "--groups", "config": "--config", "sets": "--set", "plot_dir": "--plot"},
    "train": {"head": "--head", "model.head": "--head", "backbone": "--backbone", "model.backbone": "--backbone",
              "weights": "--weights", "model.weights": "--weights", "init": "--init", "model.init": "--init",
              "target": "--target", "model.target": "--target", "data": "--data", "data.sources": "--data",
              "groups": "--groups", "data.groups": "--groups", "config": "--config",
              "epochs": "--epochs", "train.epochs": "--epochs", "budget": "--budget",
              "train.time_budget_min": "--budget", "members": "--members", "train.members": "--members",
              "batch_size": "--batch-size", "train.batch_size": "--batch-size", "lr": "--lr", "train.lr": "--lr",
              "image_size": "--image-size", "data.image_size": "--image-size",
              "workers": "--workers", "data.num_workers": "--workers", "device": "--device",
              "train.device": "--device", "precision": "--precision", "train.precision": "--precision",
              "compile": "--compile", "train.compile": "--compile", "seed": "--seed", "train.seed": "--seed",
              "strict": "--strict", "data.strict": "--strict", "out": "--out", "train.out_dir": "--out",
              "resume": "--resume", "sets": "--set"},
    "distill": {"budget": "--budget", "budget_min": "--budget", "epochs": "--epochs", "temperature": "--temperature",
                "alpha": "--alpha", "seed": "--seed", "device": "--device", "out": "--out", "sets": "--set"},
    "evaluate": {"data": "--data", "split": "--split", "predictions": "--predictions", "groups": "--groups",
                 "out": "--out", "batch_size": "--batch-size", "workers": "--workers", "strict": "--strict",
                 "device": "--device", "tta": "--tta", "ensemble": "--ensemble", **_ADAPTING,
                 "thresholds": "--threshold", "challenges": "--challenge",
                 "by": "--by", "per_source": "--per-source", "calibrate": "--calibrate", "report": "--report"},
    "report": {"out": "--out", "card": "--card"},
    "prior": {"data": "--data", "split": "--split", "out": "--out", "device": "--device", "detector": "--detector"},
    "compare": {"plot": "--plot", "paired": "--paired", **_VERDICTS},
    "bakeoff": {"grid": "--grid", "seeds": "--seeds", "data": "--data", "budget": "--budget", "epochs": "--epochs",
                "config": "--config", "sets": "--set", "workers": "--workers", "storage": "--storage",
                "out": "--out", "report_only": "--report-only", **_VERDICTS},
    "bakeoff-plan": {"halfwidth": "--halfwidth"},
    "tune": {"config": "--config", "study_name": "--study", "storage": "--storage", "trials": "--trials",
             "timeout": "--timeout", "workers": "--workers", "out": "--out", "sets": "--set"},
    "predict": {"detect": "--detect", "csv_path": "--csv", "annotate": "--annotate", "batch_size": "--batch-size",
                **_PREDICTING, **_ADAPTING},
    "live": {"source": "--source", "output": "--output", "every": "--every", "max_frames": "--max-frames",
             **_PREDICTING},
    "export": {"fmt": "--format", "out": "--out", "ensemble": "--ensemble"},
    "serve": {"host": "--host", "port": "--port", "max_mb": "--max-mb", "max_pixels": "--max-pixels",
              "device": "--device", "detector": "--detector", **_ADAPTING},
    "weights": {"url": "--url", "dest": "--dest", "sha256": "--sha256"},
}


def flag_message(exc: UsageError, flags: dict[str, str], option: str | None = None) -> str:
    """`exc`'s message with its options as `flags` names them: a message that starts with its
    option's name starts with the flag instead ("by 'x': ..." -> "--by 'x': ..."), and a backquoted
    option name (`` `workers` ``) is the flag; an option the message does not show that way is
    added as " (option --flag)". `option`: the one to assume when the error names none."""
    text = str(exc)
    option = getattr(exc, "option", None) or option
    flag = flags.get(option) if option else None
    if flag and option and re.match(rf"{re.escape(option)}(?=[\s:,]|$)", text):
        text = flag + text[len(option):]
    text = re.sub(r"`([A-Za-z_][\w.]*)`", lambda m: flags.get(m.group(1), m.group(0)), text)
    if flag and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
        text += f" (option {flag})"
    return text


class RegistryChoices:
    """argparse `choices` read from the registry of a config key when first needed (checking a
    given value, an error message, `--help`), so building the parser imports no torch."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _names(self) -> tuple[str, ...]:
        from ordinalage.training.choices import registries

        return tuple(registries()[self.key])

    def __contains__(self, value: object) -> bool:
        from ordinalage.plugins import GROUP_OF_KEY, require_plugin

        names = self._names()  # the registries, installed plugins loaded
        if self.key == "model.backbone":
            from ordinalage.models.backbones import is_known_backbone

            known = isinstance(value, str) and is_known_backbone(value)
        else:
            known = value in names
        if not known and self.key in GROUP_OF_KEY:  # a plugin that failed: its problem, not "invalid choice"
            require_plugin(GROUP_OF_KEY[self.key], value)
        return known

    def __iter__(self) -> Any:
        return iter(self._names() + (("timm:NAME",) if self.key == "model.backbone" else ()))


def _level(text: str) -> float:
    from ordinalage.posterior.intervals import parse_level

    try:
        return parse_level(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(flag_message(exc, {"interval": "--interval"}, option="interval")) from None


def _add_prior_args(p: argparse.ArgumentParser, em_help: str) -> None:
    p.add_argument("--prior", metavar="train|uniform|em|FILE",
                   help=f"adapt to an age mix: as trained, uniform, {em_help}, or a CSV (age,weight) / prior.json")


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# handlers: each imports its module lazily (torch is slow to import) and calls one function


def _data_synth(args: argparse.Namespace) -> int:
    from ordinalage.data.synth import write_synth

    paths = write_synth(args.out, n=args.n, seed=args.seed, size=args.size, progress=True)
    print(f"wrote {len(paths)} images to {args.out}", file=sys.stderr)
    return 0


def _data_stats(args: argparse.Namespace) -> int:
    from ordinalage.config import data_config
    from ordinalage.data.stats import data_stats

    result = data_stats(data_config(args.config, args.data, args.groups, args.set), plot_dir=args.plot, show=not args.json)
    if args.json:
        _print_json(result)
    return 0


def _data_audit(args: argparse.Namespace) -> int:
    from ordinalage.data.audit import data_audit

    result = data_audit(args.data or ["synth"], show=not args.json)
    if args.json:
        _print_json(result)
    return 0


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from ordinalage.config import SHORT_KEYS

    over: dict[str, Any] = {key: getattr(args, flag) for flag, key in SHORT_KEYS.items()
                            if getattr(args, flag, None) is not None}
    if getattr(args, "compile", None):
        over["train.compile"] = True
    if getattr(args, "strict", None):
        over["data.strict"] = True
    return over


def _budget_minutes(text: str) -> float:
    from ordinalage.training.budget import parse_budget

    try:
        return parse_budget(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(flag_message(exc, {"budget": "--budget"}, option="budget")) from None


def _train(args: argparse.Namespace) -> int:
    import os

    from ordinalage.config import load_config
    from ordinalage.evaluation.evaluate import evaluate_after_training
    from ordinalage.training.choices import validate
    from ordinalage.training.folds import is_folds_run
    from ordinalage.training.train import resumable, train

    main_rank = os.environ.get("RANK", "0") == "0"
    resume = args.resume

    def evaluate_fold(run_dir: Any) -> dict[str, Any]:
        # every fold's test part is evaluated: that is what cross-validation reports
        return evaluate_after_training(run_dir, show=False, device=args.device or "auto", force=True) or {}

    try:
        if resume == "auto":  # continue --out when it holds a run, else start it from the other flags
            if not args.out:
                raise UsageError("--resume auto needs --out RUN_DIR (the run to continue, or to start when it holds none)")
            resume = args.out if resumable(args.out) else None
            if main_rank:
                print(f"ordinalage: {'resuming' if resume else 'starting'} {args.out}", file=sys.stderr)
        # a folds run (folds:K, loso, a source's own folds, or --resume of its folder): every fold, then mean +- std
        config = None if resume else validate(load_config(args.config, _train_overrides(args), args.set))
        run_dir = train(config, resume=resume, all_folds=True, evaluate_fold=evaluate_fold)
    except _training_stops() as exc:
        return _training_stopped(exc, main_rank)
    if is_folds_run(run_dir):  # each fold was evaluated on its own test part (folds.json)
        return 0
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone evaluates and reports
        evaluate_after_training(run_dir, device=args.device or "auto")
        print(f"run folder: {run_dir}", file=sys.stderr)
    return 0


def _training_stopped(exc: Exception, main_rank: bool = True) -> int:
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


def _training_stops() -> tuple[type[Exception], ...]:
    from ordinalage.runs.rundir import RunExists
    from ordinalage.training.preemption import TrainingInterrupted, TrainingPreempted

    return (RunExists, TrainingPreempted, TrainingInterrupted)


def _distill(args: argparse.Namespace) -> int:
    from ordinalage.distillation import distill
    from ordinalage.evaluation.evaluate import evaluate_after_training

    if args.budget is not None and args.epochs is not None:
        raise UsageError("distill: give --budget or --epochs, not both")
    try:
        run_dir = distill(args.teacher, budget_min=args.budget, epochs=args.epochs, out=args.out, seed=args.seed,
                          temperature=args.temperature, alpha=args.alpha, sets=args.set, device=args.device or "auto")
    except _training_stops() as exc:
        return _training_stopped(exc)
    evaluate_after_training(run_dir, device=args.device or "auto")
    print(f"run folder: {run_dir}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ordinalage.evaluation.evaluate import evaluate_predictions_file, evaluate_run

    if args.predictions:
        if args.target:
            raise UsageError("evaluate: give either RUN_DIR_OR_CHECKPOINT or --predictions, not both")
        if args.report:
            raise UsageError("evaluate --report: give a run folder or checkpoint (a predictions CSV has no run to report)")
        result = evaluate_predictions_file(args.predictions, groups=args.groups, out=args.out, show=not args.json)
    elif args.target:
        from ordinalage.evaluation.breakdown import parse_by
        from ordinalage.evaluation.thresholds import parse_thresholds

        thresholds = parse_thresholds(args.threshold, flag="thresholds") if args.threshold else []
        challenges = parse_thresholds(args.challenge, flag="challenges") if args.challenge else []
        result = evaluate_run(args.target, data=args.data, split=args.split, out=args.out,
                              batch_size=args.batch_size, device=args.device, show=not args.json,
                              strict=args.strict, workers=args.workers, tta=args.tta, prior=args.prior,
                              interval=args.interval, thresholds=thresholds, challenges=challenges,
                              by=parse_by(args.by), calibrate=args.calibrate, per_source=args.per_source,
                              ensemble=args.ensemble or (), report=args.report)
    else:
        raise UsageError("evaluate: give RUN_DIR_OR_CHECKPOINT or --predictions CSV")
    if args.json:
        _print_json(result)
    return 0


def _report(args: argparse.Namespace) -> int:
    from ordinalage.evaluation.reports import write_report

    result = write_report(args.targets, args.out, card=args.card, show=not args.json)
    if args.json:
        _print_json(result)
    return 0


def _compare(args: argparse.Namespace) -> int:
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
        _print_json(result)
    return 0


def _bakeoff(args: argparse.Namespace) -> int:
    from ordinalage.comparison.bakeoff import command_line, run_bakeoff
    from ordinalage.comparison.spec import build_spec

    if args.storage and args.workers > 1 and args.storage.startswith("sqlite"):
        raise UsageError("--storage sqlite is for one worker; use journal:FILE or a PostgreSQL URL with --workers")
    from ordinalage.training.preemption import PREEMPTED_EXIT, TrainingPreempted

    spec = build_spec(config=args.config, grid=args.grid, seeds=args.seeds, data=args.data or (),
                      budget=args.budget, epochs=args.epochs, sets=args.set, rope=args.rope, age_mix=args.age_mix)
    try:
        result = run_bakeoff(spec, args.out, workers=args.workers, storage=args.storage, show=not args.json,
                             command=command_line(), report_only=args.report_only)
    except TrainingPreempted as exc:  # the cell's position is in its last.pt; the same command resumes it
        print(f"ordinalage: preempted by {exc.signal_name} in {exc.run_dir}; continue with: {command_line()}",
              file=sys.stderr)
        return PREEMPTED_EXIT
    if args.json:
        _print_json(result)
    else:
        print(f"wrote {args.out}/bakeoff.json, bakeoff.md, cd_diagram.png, mae_by_group.png", file=sys.stderr)
    missing = len(result["missing"])
    return 0 if not missing else 3


def _bakeoff_plan(args: argparse.Namespace) -> int:
    from ordinalage.comparison.planner import plan, print_plan

    result = plan(args.pilot, args.halfwidth)
    if args.json:
        _print_json(result)
    else:
        print_plan(result)
        print(f"wrote {args.pilot}/plan.json", file=sys.stderr)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from ordinalage.training.preemption import PREEMPTED_EXIT, TrainingPreempted
    from ordinalage.tuning.runner import WorkerPreempted
    from ordinalage.tuning.study import run_tune

    try:
        result = run_tune(args.config, study_name=args.study, storage=args.storage, trials=args.trials,
                          timeout=args.timeout, workers=args.workers, out=args.out, sets=args.set,
                          show=not args.json)
    except (TrainingPreempted, WorkerPreempted) as exc:  # the trial is recorded as failed; a rerun replaces it
        print(f"ordinalage: preempted by {exc.signal_name}; the study goes on when the same command runs again",
              file=sys.stderr)
        return PREEMPTED_EXIT
    if args.json:
        _print_json(result)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ordinalage.inference.predict import run_predict

    result = run_predict(args.checkpoint, args.inputs, detect=args.detect, csv_path=args.csv,
                         annotate=args.annotate, device=args.device, batch_size=args.batch_size,
                         show=not args.json, tta=args.tta, prior=args.prior, interval=args.interval,
                         ensemble=args.ensemble or (), detector=args.detector)
    if args.json:
        _print_json(result)
    return 0


def _prior_estimate(args: argparse.Namespace) -> int:
    from ordinalage.evaluation.estimate import estimate_prior

    result = estimate_prior(args.run, data=args.data, out=args.out, split=args.split, device=args.device,
                            show=not args.json, detector=args.detector)
    if args.json:
        _print_json(result)
    return 0


def _live(args: argparse.Namespace) -> int:
    from ordinalage.inference.live import run_live

    run_live(args.checkpoint, source=args.source, output=args.output, every=args.every,
             device=args.device, max_frames=args.max_frames, tta=args.tta, ensemble=args.ensemble or (),
             detector=args.detector)
    return 0


def _export(args: argparse.Namespace) -> int:
    from ordinalage.inference.export import run_export

    result = run_export(args.checkpoint, fmt=args.format, out=args.out, ensemble=args.ensemble or ())
    if args.json:
        _print_json(result)
    return 0


# --------------------------------------------------------------------------------------------- weights
# `ordinalage weights fetch NAME [--url URL] [--dest DIR] [--sha256 HEX]` and `ordinalage weights list`


def _weights(args: argparse.Namespace) -> int:
    from ordinalage.models.weights import fetch, list_cached

    if args.weights_command == "fetch":
        path = fetch(args.name, url=args.url, dest=args.dest, sha256=args.sha256)
        print(str(path))
        return 0
    rows = list_cached()
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['cache']:<10} {r['bytes'] / 2**20:>9.1f} MiB  {r['name']}  {r['path']}")
        if not rows:
            print("no cached weights", file=sys.stderr)
    return 0


def _add_weights_parser(sub: Any) -> None:
    from ordinalage.models.weights import KNOWN

    w = sub.add_parser("weights", help="fetch pretrained weights into the cache; list what is cached")
    wsub = w.add_subparsers(dest="weights_command", metavar="WEIGHTS_COMMAND")
    wsub.required = True
    p = wsub.add_parser("fetch", help="download a known weights file (resumable, checked), print its path")
    p.add_argument("name", choices=tuple(KNOWN), help="vggface (vgg_face_dag.pth) | vggface-keras (keras .h5)")
    p.add_argument("--url", help="download from this URL instead (a mirror)")
    p.add_argument("--dest", metavar="DIR", help="folder (default $ORDINALAGE_CACHE/weights or ~/.cache/ordinalage/weights)")
    p.add_argument("--sha256", metavar="HEX", help="expected checksum of the file")
    p.set_defaults(func=_weights)
    p = wsub.add_parser("list", help="weights in the ordinalage, torch hub and Hugging Face (timm) caches")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_weights)


# ---------------------------------------------------------------------------------------------
# list: what is registered (heads, backbones, readers), built in or from an installed plugin


def _registered(what: str) -> list[dict[str, Any]]:
    """One row per registered name, then one per plugin that cannot be used: {name, kind, source,
    status (ok | broken), reason (broken only), title (heads) or description (others, when known)}."""
    from ordinalage.plugins import GROUPS, KINDS, load_plugins, plugin_of

    group = GROUPS[what]
    if what == "heads":
        from ordinalage.models.heads import HEADS, add_head

        problems = load_plugins(group, add_head, builtin=HEADS)
        entries: dict[str, tuple[str, Any]] = {n: ("title", getattr(c, "title", None)) for n, c in HEADS.items()}
    elif what == "backbones":
        from ordinalage.models.backbones import BACKBONES, add_backbone, backbone_info

        problems = load_plugins(group, add_backbone, builtin=BACKBONES)
        entries = {n: ("description", getattr(backbone_info(n), "description", None)) for n in BACKBONES}
        entries["timm:NAME"] = ("description", "any timm model as a feature extractor")
    else:
        from ordinalage.data.sources import READERS, add_reader

        problems = load_plugins(group, add_reader, builtin=READERS)
        entries = {n: ("description", getattr(r, "description", None)) for n, r in READERS.items()}
    rows: list[dict[str, Any]] = []
    for name, (field, text) in entries.items():
        plugin = plugin_of(group, name)
        row = {"name": name, "kind": KINDS[group], "source": plugin.source() if plugin else "built-in", "status": "ok"}
        if text:
            row[field] = str(text)
        rows.append(row)
    rows += [{"name": p.name, "kind": KINDS[group], "source": p.plugin.source(), "status": "broken",
              "reason": p.reason} for p in problems]
    return rows


def _list(args: argparse.Namespace) -> int:
    rows = _registered(args.what)
    if args.json:
        _print_json({"results": rows})
        return 0
    name_w = max(len(r["name"]) for r in rows)
    source_w = max(len(r["source"]) for r in rows if r["status"] == "ok")
    for r in rows:
        if r["status"] == "ok":
            text = r.get("title") or r.get("description") or ""
            print(f"{r['name']:<{name_w}}  {r['source']:<{source_w}}  {text}".rstrip())
        else:
            print(f"{r['name']:<{name_w}}  BROKEN {r['source']}: {r['reason']}")
    return 0


def _add_list_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="what is registered: heads, backbones or data readers, built in or from "
                       "an installed plugin (docs/extending.md)")
    p.add_argument("what", choices=("heads", "backbones", "readers"))
    p.add_argument("--json", action="store_true", help='print {"results": [{name, kind, source, status, ...}]}')
    p.set_defaults(func=_list)
    p = sub.add_parser("heads", help="the registered heads (same as `list heads`)")
    p.add_argument("--json", action="store_true", help='print {"results": [{name, kind, source, status, ...}]}')
    p.set_defaults(func=_list, what="heads")


# ---------------------------------------------------------------------------------------------
# serve: the browser page and HTTP API over checkpoints


def _serve(args: argparse.Namespace) -> int:
    from ordinalage.inference.serve import run_server

    run_server(args.checkpoints, host=args.host, port=args.port, max_mb=args.max_mb, device=args.device,
               max_pixels=args.max_pixels, prior=args.prior, interval=args.interval, detector=args.detector)
    return 0


def _add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="browser page and HTTP API (POST /predict) over one or more checkpoints")
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="run folder or .pt; several: ?model=INDEX")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-mb", type=float, default=10, dest="max_mb", help="largest upload in MB (413 above)")
    p.add_argument("--max-pixels", type=int, default=50_000_000, dest="max_pixels",
                   help="largest image in pixels (413 above)")
    p.add_argument("--device", default="auto")
    _add_prior_args(p, "(em is refused: estimate a file with `prior estimate`)")
    p.add_argument("--interval", type=_level, metavar="LEVEL", help="add age_lo/age_hi at this coverage")
    p.add_argument("--detector", default="haar", metavar="NAME",
                   help="face detector: haar (default) | dlib (pip install 'ordinalage[dlib]')")
    p.set_defaults(func=_serve)


# ---------------------------------------------------------------------------------------------
# parser


def _add_data_arg(p: argparse.ArgumentParser, help_extra: str = "") -> None:
    p.add_argument("--data", action="append", metavar="SPEC",
                   help="data spec: synth | utkface:PATH | megaage:PATH | folder:PATH | csv:PATH; repeat to combine"
                   + help_extra)


def _verdict_options(p: argparse.ArgumentParser, rope_default: str | None, mix_default: str | None) -> None:
    """--rope and --age-mix, as bake-offs and paired comparisons read their verdicts."""
    p.add_argument("--rope", default=rope_default, metavar="YEARS",
                   help="region of practical equivalence: a difference inside +-YEARS is 'equivalent' "
                   "(default 0.1, or the bake-off YAML's rope:; 0 turns equivalence off)")
    p.add_argument("--age-mix", default=mix_default, metavar="MIX",
                   help="the age mix the pooled verdicts are for: test (as the test set is sampled; default), "
                   "uniform (every age group weighs the same) or a file of shares (prior.json from "
                   "'prior estimate', or a CSV age,weight)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ordinalage",
        description="Facial age estimation: age-group classification, ordinal regression (CORAL, CORN) "
        "and exact-age regression, trained, tuned and judged on one dataset layer.",
    )
    parser.add_argument("--version", action="version", version=f"ordinalage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # data
    data = sub.add_parser("data", help="generate, count and audit face data")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    dsub.required = True
    p = dsub.add_parser("synth", help="write the embedded synthetic face set (UTKFace-style names)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=3000, help="number of images (default 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    p.set_defaults(func=_data_synth)

    p = dsub.add_parser("stats", help="counts per age group and split, before and after sampling")
    _add_data_arg(p)
    p.add_argument("--groups", help="age groups, e.g. 0-10,11-20,...,71+ (default: seven decades 0-70)")
    p.add_argument("--config", help="training YAML whose data section (splits, caps, sampling) to apply")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--plot", metavar="DIR", help="write bar charts of the group balance into DIR")
    p.set_defaults(func=_data_stats)

    p = dsub.add_parser("audit", help="unreadable images, byte-identical duplicates and their age conflicts")
    _add_data_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_data_audit)

    # train
    p = sub.add_parser("train", help="train a model; writes a run folder")
    p.add_argument("--head", choices=RegistryChoices("model.head"), metavar="HEAD",
                   help="a registered head: %(choices)s (default coral; docs/heads.md)")
    p.add_argument("--backbone", choices=RegistryChoices("model.backbone"), metavar="BACKBONE",
                   help="a registered backbone (scratch, vgg16, resnet18/34/50) or timm:NAME (default scratch)")
    p.add_argument("--weights", help="imagenet | vggface | a file (.pth, .safetensors, VGGFace .h5)")
    p.add_argument("--init", metavar="RUN_OR_CHECKPOINT",
                   help="start from a trained run's backbone (and head when it fits), e.g. to fine-tune")
    p.add_argument("--target", choices=RegistryChoices("model.target"), metavar="TARGET",
                   help="age (single years) | group (age groups)")
    _add_data_arg(p, " (default synth)")
    p.add_argument("--groups", help="age groups (default 0-10,...,61-70)")
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--budget", type=_budget_minutes, metavar="TIME",
                   help="wall time for the whole run (e.g. 30m, 90s, 1.5h): sets the epochs from a measured "
                        "step time (train.time_budget_min)")
    p.add_argument("--members", type=int, metavar="N",
                   help="train an ensemble of N models, each with its own seed and 1/N of the budget, into one "
                        "run folder that evaluate, predict, live, serve and export average (train.members)")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--lr", type=float)
    p.add_argument("--image-size", type=int, dest="image_size")
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=RegistryChoices("train.precision"), metavar="PRECISION",
                   help="auto | fp32 | bf16 | fp16")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--seed", type=int)
    p.add_argument("--strict", action="store_true", default=None, help="an unreadable image is an error")
    p.add_argument("--out", help="run folder (default runs/<head>-<backbone>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR|auto",
                   help="continue a stopped run from its last.pt (mid-epoch after a preemption signal, exit status "
                        "75); 'auto' with --out RUN_DIR: continue RUN_DIR if it holds a run, else start it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.lr=0.001 (repeatable)")
    p.set_defaults(func=_train)

    # distill
    p = sub.add_parser("distill", help="one model trained on a teacher run's (an ensemble's) age distributions")
    p.add_argument("teacher", metavar="TEACHER_RUN", help="the teacher's run folder (an ensemble's folder: its members averaged)")
    p.add_argument("--budget", type=_budget_minutes, metavar="TIME",
                   help="wall time for the whole distillation, the teacher's pass included (e.g. 10m)")
    p.add_argument("--epochs", type=int, help="train this many epochs instead (default: the teacher member's)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="soften the teacher's distributions (p ** (1/T)) and the student's logits (default 1)")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="weight of the loss on the true ages beside the teacher's, in [0, 1] (default 0)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", help="the student's run folder (default TEACHER_RUN-student)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the student's config (the teacher's), e.g. --set data.image_size=80")
    p.set_defaults(func=_distill)

    # evaluate
    p = sub.add_parser("evaluate", help="metrics, baseline, confusion matrices for a run or a predictions CSV")
    p.add_argument("target", nargs="?", metavar="RUN_DIR_OR_CHECKPOINT")
    _add_data_arg(p, " (default: the run's own data)")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--predictions", metavar="CSV", help="judge a predictions file (true_age,pred_age or true_group,pred_group)")
    p.add_argument("--groups", help="age groups for --predictions (default seven decades)")
    p.add_argument("--out", help="output folder (default: <run>/eval-<split>)")
    p.add_argument("--batch-size", type=int, default=128, dest="batch_size")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--strict", action="store_true", help="an unreadable image is an error")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average each image's logits with its mirror's (2x compute)")
    _add_prior_args(p, "em: estimated from the evaluated images")
    p.add_argument("--interval", type=_level, metavar="LEVEL",
                   help="conformal age intervals at this coverage (e.g. 0.9), calibrated on the run's val split")
    p.add_argument("--threshold", metavar="AGES", help="age thresholds for accept/reject error rates, e.g. 18")
    p.add_argument("--challenge", metavar="AGES", help="challenge ages (accept if estimate >= it), e.g. 18,21,25")
    p.add_argument("--by", metavar="COLUMNS", help="error breakdown by attributes, e.g. gender,race (UTKFace names)")
    p.add_argument("--ensemble", nargs="+", metavar="RUN_OR_CHECKPOINT",
                   help="average this model's predictions with these models' (same labels; the first's split)")
    p.add_argument("--per-source", action="store_true", dest="per_source",
                   help="one row per --data spec (and the combined row); compare shows a runs x datasets matrix")
    p.add_argument("--calibrate", action="store_true",
                   help="fit a temperature on the val split: ECE before/after, and used before --prior em")
    p.add_argument("--report", action="store_true",
                   help="also write report.html (one self-contained page) beside metrics.json and MODEL_CARD.md")
    p.add_argument("--json", action="store_true", help="print the metrics object on stdout")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("report", help="one self-contained HTML page of a run, several runs or a bake-off")
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="a run folder (or ensemble run folder), a bake-off folder, or several run folders to compare")
    p.add_argument("--out", required=True, metavar="HTML", help="the page to write, e.g. report.html")
    p.add_argument("--card", action="store_true", help="also write MODEL_CARD.md beside --out (one run folder)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON on stdout")
    p.set_defaults(func=_report)

    p = sub.add_parser("prior", help="the age mix of a set of images, for prior correction")
    prior_sub = p.add_subparsers(dest="prior_command", required=True)
    p = prior_sub.add_parser("estimate", help="estimate the age mix of unlabeled images (EM) and store it")
    p.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT")
    _add_data_arg(p, " (the images whose age mix to estimate; ages in the names are not used)")
    p.add_argument("--split", default="all", choices=("train", "val", "test", "all"))
    p.add_argument("--out", required=True, help="prior.json to write (a PNG is written beside it)")
    p.add_argument("--device", default="auto")
    p.add_argument("--detector", default="haar", metavar="NAME",
                   help="face detector for photos:PATH specs: haar (default) | dlib (pip install 'ordinalage[dlib]')")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_prior_estimate)

    p = sub.add_parser("compare", help="one table of several runs, best value per column marked")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--plot", metavar="PNG", help="bar chart of MAE and accuracy (default: none)")
    p.add_argument("--paired", action="store_true",
                   help="RUN_A RUN_B (or two quoted glob patterns of runs paired in sorted order): the paired "
                   "difference in test MAE on the same images, its interval over seed and test-set noise and a "
                   "verdict (a lower, b lower, equivalent, undecided)")
    _verdict_options(p, rope_default="0.1", mix_default="test")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_compare)

    p = sub.add_parser("bakeoff", help="compare methods on the same faces: a grid x seeds x folds x datasets, "
                       "with paired statistics")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="compare these values of a config key (repeat for a product of keys)")
    p.add_argument("--seeds", type=int, help="seeds per method (train.seed 0..N-1; default: the --config file's, or 1)")
    p.add_argument("--data", action="append", metavar="SPEC", help="dataset (repeat to compare on several)")
    p.add_argument("--budget", help="equal wall time per cell, e.g. 10m (or --epochs)")
    p.add_argument("--epochs", type=int, help="equal epochs per cell")
    p.add_argument("--config", help="bake-off YAML (configs/bakeoff/): run_config, data, seeds, budget, grid, methods")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fix a config key for every cell")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this host (a journal file study)")
    p.add_argument("--storage", help="journal:FILE | postgresql://... shared by workers on many machines")
    p.add_argument("--out", required=True, help="the bake-off folder (rerun to finish it)")
    _verdict_options(p, rope_default=None, mix_default=None)
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: recompute bakeoff.json/md and the plots from the finished cells")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bakeoff)

    p = sub.add_parser("bakeoff-plan", help="(also `bakeoff plan PILOT_DIR`) the seeds or folds a bake-off needs "
                       "for verdict intervals of +-HALFWIDTH years, and their CPU minutes, from a finished pilot")
    p.add_argument("pilot", metavar="PILOT_DIR", help="a finished bake-off folder with >= 2 seeds or folds")
    p.add_argument("--halfwidth", type=float, default=0.1, metavar="YEARS",
                   help="the widest acceptable half-width of a pair's 95%% interval (default 0.1)")
    p.add_argument("--json", action="store_true", help="print plan.json's object on stdout")
    p.set_defaults(func=_bakeoff_plan)

    p = sub.add_parser("tune", help="Optuna study over augmentation, sampling and training knobs")
    p.add_argument("--config", required=True, help="tune YAML (see configs/tune/)")
    p.add_argument("--study", help="study name (default: from the YAML)")
    p.add_argument("--storage", help="sqlite:///file.db | journal:FILE | postgresql://... (default: SQLite in the study folder)")
    p.add_argument("--trials", type=int, help="total number of trials the study should reach; a rerun completes an "
                   "interrupted study and a larger N extends it (default: the tune file's `trials`)")
    p.add_argument("--timeout", type=float, help="no new trial starts after this many seconds")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this host")
    p.add_argument("--out", help="study folder (default studies/<study>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_tune)

    p = sub.add_parser("predict", help="age of every face in photos")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--detect", choices=("haar", "none"), default="haar")
    p.add_argument("--detector", metavar="NAME",
                   help="face detector: haar (default) | dlib (pip install 'ordinalage[dlib]')")
    p.add_argument("--csv", metavar="FILE")
    p.add_argument("--annotate", metavar="DIR")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64, dest="batch_size")
    p.add_argument("--tta", action="store_true", help="average each face's logits with its mirror's (2x model time)")
    _add_prior_args(p, "em: estimated from each batch of faces (better: a file from `prior estimate`)")
    p.add_argument("--interval", type=_level, metavar="LEVEL",
                   help="add age_lo/age_hi at this coverage (needs `evaluate --interval` run once on the run)")
    p.add_argument("--ensemble", nargs="+", metavar="RUN_OR_CHECKPOINT",
                   help="more models averaged with CHECKPOINT (an ensemble run folder needs no flag)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_predict)

    p = sub.add_parser("live", help="webcam or video file with an age label on each face")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--source", default="0", help="camera index or video file")
    p.add_argument("--output", metavar="OUT.mp4", help="write the annotated video (headless)")
    p.add_argument("--every", type=int, default=1, help="run the model every N frames")
    p.add_argument("--max-frames", type=int, default=None, dest="max_frames")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action="store_true", help="average each face's logits with its mirror's (2x model time)")
    p.add_argument("--ensemble", nargs="+", metavar="RUN_OR_CHECKPOINT",
                   help="more models averaged with CHECKPOINT (an ensemble run folder needs no flag)")
    p.add_argument("--detector", default="haar", metavar="NAME",
                   help="face detector: haar (default) | dlib (pip install 'ordinalage[dlib]')")
    p.set_defaults(func=_live)

    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript, checked on the spot")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--ensemble", nargs="+", metavar="RUN_OR_CHECKPOINT",
                   help="more models averaged with CHECKPOINT in one graph (an ensemble run folder needs no flag)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_export)

    _add_serve_parser(sub)
    _add_weights_parser(sub)
    _add_list_parser(sub)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line parsed; `bakeoff plan DIR ...` is the planner's parser (`bakeoff-plan`)."""
    argv = list(argv)
    if argv[:2] == ["bakeoff", "plan"]:
        argv = ["bakeoff-plan", *argv[2:]]
    return build_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
    except UsageError as exc:  # `--head NAME` of an installed plugin that cannot be used (plugins.PluginError)
        command = next(iter(argv), "")
        print(f"ordinalage: error: {flag_message(exc, OPTION_FLAGS.get(command, {}))}", file=sys.stderr)
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:  # in the library's words; its option named by this command's flag
        print(f"ordinalage: error: {flag_message(exc, OPTION_FLAGS.get(args.command, {}))}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ordinalage: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ordinalage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
