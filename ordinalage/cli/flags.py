"""Library errors on the command line: an option's name (`UsageError.option`, the Python parameter
or config key) printed as this command's flag."""

from __future__ import annotations

import re

from ordinalage.errors import UsageError

_PREDICTING = {"device": "--device", "tta": "--tta", "ensemble": "--ensemble", "detector": "--detector",
               "detect": "--detector", "model": "--model"}
_ADAPTING = {"prior": "--prior", "interval": "--interval"}
_VERDICTS = {"rope": "--rope", "age_mix": "--age-mix"}
_JOBS = {"workers": "--jobs", "jobs": "--jobs"}

#: command -> {library option name -> flag}. Per command, because a name can be a different flag (or
#: none) elsewhere: `workers` is the DataLoader's (`--workers`) in train and evaluate but parallel
#: processes (`--jobs`) in tune and bakeoff, and `data.num_workers` is `--workers` in train alone.
OPTION_FLAGS: dict[str, dict[str, str]] = {
    "data": {"out": "--out", "n": "--n", "seed": "--seed", "size": "--size", "data": "--data",
             "groups": "--groups", "config": "--config", "sets": "--set", "plot_dir": "--plots"},
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
                "config": "--config", "sets": "--set", **_JOBS, "storage": "--storage",
                "out": "--out", "report_only": "--report-only", **_VERDICTS},
    "bakeoff-plan": {"halfwidth": "--halfwidth"},
    "tune": {"config": "--config", "study_name": "--study", "storage": "--storage", "trials": "--trials",
             "timeout": "--timeout", **_JOBS, "out": "--out", "sets": "--set"},
    "predict": {"csv_path": "--csv", "annotate": "--annotate", "batch_size": "--batch-size",
                **_PREDICTING, **_ADAPTING},
    "live": {"source": "--source", "output": "--out", "out": "--out", "every": "--every",
             "max_frames": "--max-frames", **_PREDICTING, "prior": "--prior"},
    "export": {"fmt": "--format", "out": "--out", "ensemble": "--ensemble", "model": "--model"},
    "serve": {"host": "--host", "port": "--port", "max_mb": "--max-mb", "max_pixels": "--max-pixels",
              "device": "--device", "detector": "--detector", "tta": "--tta", "model": "--model", **_ADAPTING},
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


__all__ = ["OPTION_FLAGS", "flag_message"]
