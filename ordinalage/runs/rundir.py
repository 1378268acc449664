"""The run folder: its layout, readers and atomic writers. Nothing else knows the file names.

    <run>/config.yaml        the resolved config (written once, at the start)
    <run>/split.csv          path, age, group, split: the exact split used
    <run>/metrics.csv        one row per epoch (rows past last.pt are dropped on resume)
    <run>/last.pt, best.pt   checkpoints (atomic; best by train.monitor)
    <run>/model.safetensors  weights only (a shipped model's folder: config.yaml beside it, no best.pt)
    <run>/val_best.json      validation metrics of the best epoch
    <run>/summary.json       what the run did; `test` holds test metrics once evaluated
    <run>/train_prior.json   the head's effective training distribution over its labels (prior correction)
    <run>/teacher_targets.npz  a distilled student's soft targets: its teacher's distribution per training image
    <run>/calibration.json   interval calibration on the validation split (`evaluate --interval`)
    <run>/tensorboard/       event files when train.loggers names tensorboard
    <run>/eval-<split>[-<data>][-tta]/   metrics.json, predictions.csv, PNGs of one evaluation
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ordinalage.atomic import atomic_write_text, write_json
from ordinalage.config import Config, save_config
from ordinalage.data.records import Record
from ordinalage.errors import UsageError

METRICS_COLUMNS = ["epoch", "train_loss", "val_loss", "val_mae", "val_accuracy", "val_one_off", "lr",
                   "seconds", "images_per_s", "train_images"]
CHECKPOINTS = ("best.pt", "last.pt")
FOLDS_CONFIG = "folds-config.yaml"  # the config a folds run keeps in its base folder (resume continues it)


class RunExists(UsageError):
    """The chosen run folder already holds a run (`path`)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: already holds a run (continue it, or choose another output folder)")
        self.path = path


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: not found") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def read_json_object(path: str | Path) -> dict[str, Any]:
    """`read_json` of a file that must hold a JSON object."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best.pt (last.pt when there is no best.pt; model.safetensors
    in a folder of weights only, such as a shipped model)."""
    path = Path(path)
    if path.is_dir():
        for name in (*CHECKPOINTS, "model.safetensors"):
            if (path / name).is_file():
                return path / name
        members = sorted(p.parent.name for p in path.glob("member-*/config.yaml"))
        if members:
            raise UsageError(f"{path}: an ensemble run ({', '.join(members)}); evaluate, predict, live, serve and "
                             f"export take it whole, other commands one member's folder, e.g. {path / members[0]}")
        raise UsageError(f"{path}: no best.pt or last.pt in this folder (is it a run folder?)")
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    return path


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.model.head}-{config.model.backbone.replace(':', '-')}-{stamp}"


def _slug(specs: Sequence[str]) -> str:
    parts = []
    for spec in specs:
        kind, _, rest = spec.partition(":")
        parts.append(f"{kind}-{Path(rest).name}" if rest else kind)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts)).strip("-")


def eval_dir(target: str | Path, split: str, data: Sequence[str] | None = None, tta: bool = False) -> Path:
    """`<run>/eval-<split>`; beside a checkpoint `eval-<split>` (best.pt) or `eval-<stem>-<split>`;
    with data the data's name is appended (`eval-test-utkface-UTKFace`), with TTA `-tta`, so
    evaluations of the same run never overwrite each other."""
    target = Path(target)
    suffix = (f"-{_slug(data)}" if data else "") + ("-tta" if tta else "")
    if target.is_dir():
        return target / f"eval-{split}{suffix}"
    stem = "" if target.stem == "best" else f"{target.stem}-"
    return target.parent / f"eval-{stem}{split}{suffix}"


class RunDir:
    """One run folder: paths and the only code that reads or writes its files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # -- paths -------------------------------------------------------------------------------
    config_yaml = property(lambda self: self.path / "config.yaml")
    split_csv = property(lambda self: self.path / "split.csv")
    metrics_csv = property(lambda self: self.path / "metrics.csv")
    last_pt = property(lambda self: self.path / "last.pt")
    best_pt = property(lambda self: self.path / "best.pt")
    val_best_json = property(lambda self: self.path / "val_best.json")
    summary_json = property(lambda self: self.path / "summary.json")
    calibration_json = property(lambda self: self.path / "calibration.json")
    train_prior_json = property(lambda self: self.path / "train_prior.json")
    teacher_targets_npz = property(lambda self: self.path / "teacher_targets.npz")

    @classmethod
    def of(cls, target: str | Path) -> RunDir | None:
        """The run folder of a run folder or of a checkpoint inside one (None for a loose .pt)."""
        target = Path(target)
        folder = target if target.is_dir() else target.parent
        return cls(folder) if (folder / "config.yaml").is_file() else None

    @classmethod
    def create(cls, config: Config) -> tuple[Config, RunDir]:
        """Name (train.out_dir or runs/<head>-<backbone>-<time>) and create a new, writable run folder."""
        path = Path(config.train.out_dir) if config.train.out_dir else default_run_dir(config)
        run = cls(path)
        if run.last_pt.exists():
            raise RunExists(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"{path}: cannot write the run folder ({exc.strerror or exc})") from None
        return replace(config, train=replace(config.train, out_dir=str(path))), run

    # -- config and split -----------------------------------------------------------------------
    def write_config(self, config: Config) -> None:
        save_config(config, self.config_yaml)

    def write_split(self, splits: dict[str, Sequence[Record]], groups: Any) -> None:
        """split.csv with columns path, age, group, split (train, val, test in that order)."""
        lines: list[list[Any]] = [["path", "age", "group", "split"]]
        for split in ("train", "val", "test"):
            records = list(splits.get(split, ()))
            idx = groups.indices([r.age for r in records]) if records else []
            lines += [[r.path, r.age, int(g), split] for r, g in zip(records, idx, strict=True)]
        atomic_write_text(self.split_csv, _csv_text(lines))

    def read_split(self, split: str) -> list[Record]:
        """Records of `split` ('all': every row), as written by `write_split`."""
        return read_split_csv(self.split_csv, split)

    # -- per-epoch metrics ------------------------------------------------------------------------
    def append_metrics(self, row: dict[str, Any]) -> None:
        new = not self.metrics_csv.exists()
        with self.metrics_csv.open("a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def read_metrics(self) -> list[dict[str, str]]:
        if not self.metrics_csv.exists():
            return []
        with self.metrics_csv.open(encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def truncate_metrics(self, epochs_done: int) -> None:
        """On resume, drop rows of epochs that ran after last.pt was written."""
        if not self.metrics_csv.exists():
            return
        keep = [r for r in self.read_metrics() if int(r["epoch"]) <= epochs_done]
        lines = [METRICS_COLUMNS] + [[r.get(c, "") for c in METRICS_COLUMNS] for r in keep]
        atomic_write_text(self.metrics_csv, _csv_text(lines))

    # -- summary ------------------------------------------------------------------------------------
    def read_summary(self, tolerant: bool = False) -> dict[str, Any]:
        """summary.json ({} when there is none). A broken file is a UsageError naming it, or, with
        `tolerant` (a fold runner, a server describing its model), read as {}."""
        if not self.summary_json.is_file():
            return {}
        try:
            return read_json_object(self.summary_json)
        except (UsageError, OSError):
            if tolerant:
                return {}
            raise

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary_json, summary)

    def update_summary(self, **items: Any) -> dict[str, Any]:
        """Merge `items` into summary.json (e.g. `test=` metrics once the caller evaluated)."""
        summary = self.read_summary()
        summary.update(items)
        self.write_summary(summary)
        return summary

    def test_metrics(self, summary: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, str | None]:
        """The run's test metrics and where they came from: summary.json `test` (`summary` when the
        caller has read it already), else eval-test/metrics.json."""
        test = (self.read_summary() if summary is None else summary).get("test")
        if isinstance(test, dict):
            return test, "summary.json:test"
        path = self.path / "eval-test" / "metrics.json"
        if path.is_file():
            return read_json(path), "eval-test/metrics.json"
        return None, None


MEMBER_PREFIX = "member-"


def member_dirs(run_dir: str | Path) -> list[Path]:
    """The member folders of an ensemble run (`member-<i>/`), in order; [] for any other folder or file.

    The order is the one summary.json lists, else the members' numbers. Plain files only (no torch),
    so model cards and reports read ensembles through here too."""
    run = RunDir(run_dir)
    if not run.path.is_dir() or not run.config_yaml.is_file():
        return []
    members = run.read_summary(tolerant=True).get("members")
    if isinstance(members, list) and members:
        return [run.path / str(m) for m in members]

    def number(p: Path) -> int:
        tail = p.name[len(MEMBER_PREFIX):]
        return int(tail) if tail.isdigit() else 0

    return sorted((p for p in run.path.glob(f"{MEMBER_PREFIX}*") if (p / "config.yaml").is_file()), key=number)


def _csv_text(rows: Sequence[Sequence[Any]]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def parse_number(value: str | None, path: Path, line: int, column: str) -> float:
    """A finite number from a CSV cell; anything else is a UsageError naming the file, line and column."""
    try:
        x = float(value) if value is not None else math.nan
    except ValueError:
        x = None
    if x is None or not math.isfinite(x):
        raise UsageError(f"{path}: line {line}, column {column}: {value!r} is not a finite number")
    return x


def read_split_csv(path: str | Path, split: str) -> list[Record]:
    """Rows of a split.csv (columns path, age, group, split) in `split` ('all': every row)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: not found (a run folder holds split.csv; or name the data to use)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("path", "age", "split") if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}: missing column(s) {', '.join(missing)}")
        records = []
        for row in reader:
            if split != "all" and row["split"] != split:
                continue
            age = parse_number(row["age"], path, reader.line_num, "age")
            records.append(Record(path=row["path"], age=age, split=row["split"], source="split.csv"))
    return records
