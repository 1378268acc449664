"""Prior files: an age mix read from prior.json (written by `write_prior`, `ordinalage prior
estimate`) or a CSV `age,weight`, checked line by line, and written back. Errors name the file and
the line."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.atomic import atomic_write_text, jsonable
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

PRIOR_FLOOR = 1e-4  # probability added to every label of a user prior (then renormalised)




def _finish_prior(weights: np.ndarray, floor: float) -> np.ndarray:
    w = weights / weights.sum()
    w = w + floor
    return w / w.sum()


def _label_index(label_ages: np.ndarray, age: float) -> int:
    j = int(np.abs(label_ages - age).argmin())
    return j if abs(label_ages[j] - age) < 1e-6 else -1


def _range_text(label_ages: np.ndarray) -> str:
    return f"{label_ages.min():g}..{label_ages.max():g}"


def read_prior(path: str | Path, label_ages: np.ndarray | Sequence[float], floor: float = PRIOR_FLOOR,
               groups: AgeGroups | None = None) -> np.ndarray:
    """A target prior over `label_ages` from a file, normalised, every label at least ~`floor`.

    `.json`: a file written by `write_prior` ({"ages": [...], "weight": [...], "meta": {...}}), in
    the model's own label units. Anything else: a CSV with a header naming the columns `age` and
    `weight` (other columns ignored); weights need not sum to 1; ages missing from the file get weight
    0, then the floor. For a group-target model pass `groups` (and `label_ages` = the group indices):
    the CSV then lists whole years, which are summed into their groups. Bad input (no such file, a
    missing column, no rows, a non-number, a negative weight, an age that is not one of the model's
    labels, an age given twice, all weights 0) raises `UsageError` naming the file and line.
    """
    path = Path(path)
    ages = np.asarray(label_ages, dtype=np.float64)
    if not path.is_file():
        raise UsageError(f"prior file {path}: no such file")
    if path.suffix.lower() == ".json":
        entries = _read_prior_json(path)
    else:
        entries = _read_prior_csv(path)
        if groups is not None:
            return _finish_prior(_year_weights_to_groups(path, entries, groups), floor)
    weights = np.zeros(len(ages))
    seen: dict[int, str] = {}
    for where, age, weight in entries:
        _check_entry(path, where, age, weight)
        j = _label_index(ages, age)
        if j < 0:
            inside = ages.min() <= age <= ages.max()
            raise UsageError(f"{path}, {where}: age {age:g} is " + ("not one of the model's labels" if inside else
                             "outside the model's range") + f" (labels {_range_text(ages)})")
        if j in seen:
            raise UsageError(f"{path}, {where}: age {age:g} was already given ({seen[j]})")
        seen[j] = where
        weights[j] = weight
    return _finish_prior(_some_weight(path, weights), floor)


def read_age_weights(path: str | Path) -> list[tuple[str, float, float]]:
    """The (where, age, weight) rows of a prior file (prior.json or CSV age,weight), each checked to be
    finite with a non-negative weight; UsageError naming the file and line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    entries = _read_prior_json(path) if path.suffix.lower() == ".json" else _read_prior_csv(path)
    for where, age, weight in entries:
        _check_entry(path, where, age, weight)
    return entries


def _check_entry(path: Path, where: str, age: float, weight: float) -> None:
    """One (age, weight) row of a prior file: finite numbers and a non-negative weight."""
    if not (math.isfinite(age) and math.isfinite(weight)):
        raise UsageError(f"{path}, {where}: age and weight must be finite numbers, got {age}, {weight}")
    if weight < 0:
        raise UsageError(f"{path}, {where}: weight {weight:g} for age {age:g} is negative")


def _some_weight(path: Path, weights: np.ndarray) -> np.ndarray:
    if weights.sum() <= 0:
        raise UsageError(f"{path}: all weights are 0; a prior needs some positive weight")
    return weights


def _year_weights_to_groups(path: Path, entries: list[tuple[str, float, float]], groups: AgeGroups) -> np.ndarray:
    """CSV rows of whole years -> one weight per age group (a group-target model's labels)."""
    weights = np.zeros(len(groups))
    seen: dict[float, str] = {}
    for where, age, weight in entries:
        _check_entry(path, where, age, weight)
        g = int(groups.indices([age])[0])
        if g < 0 or not float(age).is_integer():
            raise UsageError(f"{path}, {where}: age {age:g} is not a whole year inside the model's age groups "
                             f"({groups.spec})")
        if age in seen:
            raise UsageError(f"{path}, {where}: age {age:g} was already given ({seen[age]})")
        seen[age] = where
        weights[g] += weight
    return _some_weight(path, weights)


def _number(text: str | None, path: Path, where: str, column: str) -> float:
    try:
        return float(str(text).strip())
    except ValueError:
        raise UsageError(f"{path}, {where}: {column} {text!r} is not a number") from None


def _read_prior_csv(path: Path) -> list[tuple[str, float, float]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header: list[str] | None = None
        out: list[tuple[str, float, float]] = []
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                missing = [c for c in ("age", "weight") if c not in header]
                if missing:
                    raise UsageError(f"{path}, line {line}: the header must name the columns 'age' and 'weight' "
                                     f"(missing: {', '.join(missing)}; got {', '.join(row)})")
                ia, iw = header.index("age"), header.index("weight")
                continue
            where = f"line {line}"
            if len(row) <= max(ia, iw):
                raise UsageError(f"{path}, {where}: expected the columns {', '.join(header)}, got {len(row)} values")
            out.append((where, _number(row[ia], path, where, "age"), _number(row[iw], path, where, "weight")))
    if header is None:
        raise UsageError(f"{path}, line 1: empty file; expected a header 'age,weight' and one row per age")
    if not out:
        raise UsageError(f"{path}, line {reader.line_num + 1}: no rows after the header; expected one 'age,weight' row per age")
    return out


def _read_prior_json(path: Path) -> list[tuple[str, float, float]]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ages"), list) or not isinstance(obj.get("weight"), list):
        raise UsageError(f"{path}: expected a prior.json object with lists 'ages' and 'weight' (as written by write_prior)")
    ages, weights = obj["ages"], obj["weight"]
    if len(ages) != len(weights):
        raise UsageError(f"{path}: 'ages' has {len(ages)} entries but 'weight' has {len(weights)}")
    if not ages:
        raise UsageError(f"{path}: 'ages' is empty; a prior needs one weight per age")
    return [(f"entry {i}", _number(a, path, f"ages[{i}]", "age"), _number(w, path, f"weight[{i}]", "weight"))
            for i, (a, w) in enumerate(zip(ages, weights, strict=True))]


def write_prior(path: str | Path, prior: np.ndarray, label_ages: np.ndarray | Sequence[float],
                meta: dict[str, Any] | None = None) -> Path:
    """Write {"ages", "weight", "meta"} JSON atomically (a temporary file in the same folder, then
    `os.replace`), so a reader never sees half a file."""
    path = Path(path)
    p = np.asarray(prior, dtype=np.float64)
    ages = np.asarray(label_ages, dtype=np.float64)
    if p.shape != ages.shape:
        raise ValueError(f"write_prior: {p.size} weights for {ages.size} ages")
    obj = {"ages": [int(a) if float(a).is_integer() else float(a) for a in ages],
           "weight": [float(w) for w in p], "meta": dict(meta or {})}
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=1) + "\n")
