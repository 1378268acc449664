"""predictions.csv, the per-image record of an evaluation: its one writer and its readers.

Columns written by `evaluate`: file, true_age, true_group, pred_age, pred_group, p_<label>... (groups
as labels). `read_predictions` reads that file whole (the model card, the HTML report),
`read_test_errors` only the errors (bake-off and paired comparisons), `read_predictions_csv` any
user CSV of ages and/or groups (`ordinalage evaluate --predictions`). Errors name the file, the line
and the column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.runs.rundir import parse_number


@dataclass
class Predictions:
    """Small per-image arrays (never the images), in the order of the records that were read."""

    paths: list[str]
    true_age: np.ndarray  # float (N,)
    true_group: np.ndarray  # int64 (N,)
    pred_age: np.ndarray  # float (N,)
    pred_group: np.ndarray  # int64 (N,)
    group_proba: np.ndarray  # float32 (N, G)
    rank_proba: np.ndarray | None  # float32 (N, K), None for heads without ordinal probabilities
    label_proba: np.ndarray | None = None  # float32 (N, L): the head's distribution over its labels
    skipped: list[str] = field(default_factory=list)  # records whose image could not be read

    def __len__(self) -> int:
        return len(self.paths)


def write_predictions_csv(path: str | Path, preds: Predictions, groups: AgeGroups) -> Path:
    """file, true_age, true_group, pred_age, pred_group, p_<label>... (groups written as labels)."""
    path = Path(path)
    labels = groups.labels
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "true_age", "true_group", "pred_age", "pred_group"] + [f"p_{lab}" for lab in labels])
        for i, p in enumerate(preds.paths):
            w.writerow([p, f"{preds.true_age[i]:g}", labels[preds.true_group[i]], f"{preds.pred_age[i]:.4f}",
                        labels[preds.pred_group[i]]] + [f"{v:.6f}" for v in preds.group_proba[i]])
    return path


def _group_index(value: str | None, groups: AgeGroups, path: Path, line: int, column: str) -> int:
    v = (value or "").strip()
    if v in groups.labels:
        return groups.labels.index(v)
    try:
        i = int(v)
    except ValueError:
        raise UsageError(f"{path}: line {line}, column {column}: {value!r} is neither a group label "
                         f"({groups.spec}) nor a group index") from None
    if not 0 <= i < len(groups):
        raise UsageError(f"{path}: line {line}, column {column}: group index {i} is outside 0..{len(groups) - 1}")
    return i


def read_predictions_csv(path: str | Path, groups: AgeGroups) -> dict[str, Any]:
    """Parse a predictions CSV into arrays: true_age/pred_age (or None), true_group, pred_group, dropped.

    With ages, groups come from the true_group/pred_group columns when present, else from binning
    (true ages outside every group: row dropped and counted; predicted ages clipped into range).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: predictions file not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = cols
        has_age = "true_age" in cols and "pred_age" in cols
        has_group = "true_group" in cols and "pred_group" in cols
        if not (has_age or has_group):
            want = [c for c in ("true_age", "pred_age") if c not in cols] if ("true_age" in cols or "pred_age" in cols) \
                else [c for c in ("true_group", "pred_group") if c not in cols] if ("true_group" in cols or "pred_group" in cols) \
                else ["true_age", "pred_age"]
            raise UsageError(f"{path}: missing column(s) {', '.join(want)} (need true_age and pred_age, "
                             f"or true_group and pred_group; found: {', '.join(cols) or 'no header'})")
        ta, pa, tg, pg = [], [], [], []
        for row in reader:
            line = reader.line_num
            if has_age:
                ta.append(parse_number(row.get("true_age"), path, line, "true_age"))
                pa.append(parse_number(row.get("pred_age"), path, line, "pred_age"))
            if has_group:
                tg.append(_group_index(row.get("true_group"), groups, path, line, "true_group"))
                pg.append(_group_index(row.get("pred_group"), groups, path, line, "pred_group"))
    if not (ta or tg):
        raise UsageError(f"{path}: no rows (only a header)")
    dropped = 0
    true_age = np.asarray(ta, dtype=float) if has_age else None
    pred_age = np.asarray(pa, dtype=float) if has_age else None
    if has_group:
        true_group, pred_group = np.asarray(tg, dtype=np.int64), np.asarray(pg, dtype=np.int64)
    else:
        true_group = groups.indices(true_age)
        keep = true_group >= 0
        dropped = int((~keep).sum())
        if not keep.any():
            raise UsageError(f"{path}: no true age lies in the groups {groups.spec}")
        true_age, pred_age, true_group = true_age[keep], pred_age[keep], true_group[keep]
        pred_group = groups.clip_indices(pred_age)
    return {"true_age": true_age, "pred_age": pred_age, "true_group": true_group, "pred_group": pred_group,
            "dropped_out_of_range": dropped}


def read_predictions(path: str | Path) -> dict[str, Any]:
    """predictions.csv of an evaluation -> paths, true_age, pred_age, true_group, pred_group (indices
    into `labels`), group_proba (N, G) and labels (from the p_<label> columns)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: not found (an evaluation folder holds predictions.csv)")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = list(reader.fieldnames or [])
        missing = [c for c in ("file", "true_age", "pred_age", "true_group", "pred_group") if c not in cols]
        if missing:
            raise UsageError(f"{path}: missing column(s) {', '.join(missing)}")
        labels = [c[2:] for c in cols if c.startswith("p_")]
        rows = list(reader)
    if not rows:
        raise UsageError(f"{path}: no rows")
    index = {lab: i for i, lab in enumerate(labels)}

    def group(text: str, line: int, column: str) -> int:
        if text in index:
            return index[text]
        raise UsageError(f"{path}: line {line}, column {column}: {text!r} is not one of the groups {', '.join(labels)}")

    try:
        return {
            "paths": [r["file"] for r in rows],
            "true_age": np.array([float(r["true_age"]) for r in rows]),
            "pred_age": np.array([float(r["pred_age"]) for r in rows]),
            "true_group": np.array([group(r["true_group"], k + 2, "true_group") for k, r in enumerate(rows)]),
            "pred_group": np.array([group(r["pred_group"], k + 2, "pred_group") for k, r in enumerate(rows)]),
            "group_proba": np.array([[float(r[f"p_{lab}"]) for lab in labels] for r in rows], dtype=float),
            "labels": labels,
        }
    except ValueError as exc:
        raise UsageError(f"{path}: not a number ({exc})") from None


@dataclass(frozen=True)
class TestErrors:
    """One run's test images (sorted keys), absolute errors and true ages."""

    keys: tuple[str, ...]
    abs_err: np.ndarray
    true_age: np.ndarray


def read_test_errors(predictions_csv: str | Path, prefix: str = "") -> TestErrors:
    """The per-image errors of an evaluation's predictions.csv (columns file, true_age, pred_age), sorted
    by ``prefix + file``; a UsageError naming the file when it is missing or malformed."""
    path = Path(predictions_csv)
    if not path.is_file():
        raise UsageError(f"{path}: no predictions file (was the run evaluated on its test split?)")
    rows: list[tuple[str, float, float]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                true, pred = float(row["true_age"]), float(row["pred_age"])
                rows.append((prefix + row["file"], abs(pred - true), true))
            except (KeyError, TypeError, ValueError):
                raise UsageError(f"{path}, line {line}: expected columns file, true_age, pred_age with numbers") from None
    rows.sort(key=lambda r: r[0])
    return TestErrors(tuple(r[0] for r in rows), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))


def read_abs_errors(predictions_csv: str | Path, prefix: str = "") -> dict[str, float]:
    """`{prefix + file: |pred_age - true_age|}` from an evaluation's predictions.csv."""
    test = read_test_errors(predictions_csv, prefix)
    return dict(zip(test.keys, test.abs_err.tolist(), strict=True))
