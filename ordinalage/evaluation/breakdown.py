"""Error breakdowns for bias checks: signed error and MAE per single year of age and per demographic
attribute value, each with a seeded bootstrap 95% confidence interval, and the largest gap between
the groups of each attribute. Pure numpy + scipy; docs/evaluation.md ("Evaluation for decisions") has the definitions.

- signed error ("bias") = mean(estimate - truth): positive means the model over-estimates;
- MAE = mean |estimate - truth|;
- confidence intervals: `scipy.stats.bootstrap`, percentile method, resampling the images of the
  cell; every cell draws from its own generator `default_rng([seed, crc32(cell name)])`, so a
  cell's interval depends only on its own images and the seed (None for a cell of one image);
- largest gap of an attribute: the highest minus the lowest MAE (and bias) among its values with
  at least `min_n` images, with a bootstrap interval of that difference (the two groups resampled
  independently).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from ordinalage.errors import UsageError
from ordinalage.posterior.metrics import paired_ages

RESERVED = ("by_age", "gaps")
GENDERS = {"0": "male", "1": "female"}
RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}
#: the names of coded attribute values: UTKFace's gender and race codes (the IMDB-WIKI and Adience
#: readers code gender the same way, 0 male, 1 female)
VALUE_NAMES: dict[str, dict[str, str]] = {"gender": GENDERS, "race": RACES}
_UTK = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)")


# ---------------------------------------------------------------------------------------------
# attributes


def utkface_attributes(path: str | Path, codes: bool = False) -> dict[str, str]:
    """{"gender": "male"|"female", "race": "White"|"Black"|"Asian"|"Indian"|"Others"} from a UTKFace
    name `{age}_{gender}_{race}_{date}...jpg` (`codes`: the name's own codes, "0"/"1" and "0"-"4");
    {} when the name does not follow that pattern (a few UTKFace files lack the race field)."""
    m = _UTK.match(Path(path).name)
    if not m:
        return {}
    if codes:
        return {"gender": m.group(2), "race": m.group(3)}
    return {"gender": GENDERS[m.group(2)], "race": RACES[m.group(3)]}


def _text(value: Any) -> str:
    """A value as table text: None -> "", whole floats without ".0" (a gender read as 1.0 is "1")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def value_name(attribute: str, value: Any) -> str:
    """The name of a coded value where the attribute has names (`VALUE_NAMES`: gender 0/1 -> male/
    female, race 0-4 -> White, Black, Asian, Indian, Others), else the value as text ("" = unknown)."""
    text = _text(value)
    return VALUE_NAMES.get(attribute, {}).get(text, text)


def value_code(attribute: str, value: Any) -> str | None:
    """The code of a value (given as its code or its name) of a coded attribute; None otherwise."""
    names = VALUE_NAMES.get(attribute)
    if not names:
        return None
    text = _text(value)
    if text in names:
        return text
    return next((code for code, name in names.items() if name == text), None)


def parse_by(text: str | Sequence[str] | None) -> list[str]:
    """`--by gender,race` -> ["gender", "race"] (empty for None or "")."""
    if text is None:
        return []
    parts = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for p in (str(s).strip() for s in parts):
        if not p:
            continue
        if p in RESERVED:
            raise UsageError(f"by {p!r}: that name is reserved in the breakdown (choose another column name)",
                             option="by")
        if p not in out:
            out.append(p)
    return out


def select_attributes(attributes: Mapping[str, Sequence[Any]] | None, by: Sequence[str], n: int
                      ) -> dict[str, list[Any]]:
    """The `--by` columns of `attributes` (attr -> one value per image, None = unknown).

    A column missing from the data is a UsageError naming it and the columns that exist.
    """
    attributes = attributes or {}
    out: dict[str, list[Any]] = {}
    for name in by:
        if name not in attributes:
            have = ", ".join(sorted(attributes)) or "none"
            raise UsageError(f"by: column {name!r} is not in the data (available: {have})", option="by")
        values = list(attributes[name])
        if len(values) != n:
            raise UsageError(f"by {name!r}: {len(values)} values for {n} images", option="by")
        out[name] = values
    return out


# ---------------------------------------------------------------------------------------------
# statistics


def _errors(true_age: Any, pred_age: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = paired_ages(true_age, pred_age, "breakdown")
    if t.size == 0:
        raise UsageError("breakdown: no images (n = 0)")
    return t, p - t


def cell_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one breakdown cell: depends on the seed and the cell's name only."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _bias_mae(e: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.stack([np.mean(e, axis=axis), np.mean(np.abs(e), axis=axis)])


def error_stats(err: np.ndarray, rng: np.random.Generator, n_resamples: int = 2000,
                confidence: float = 0.95) -> dict[str, Any]:
    """{n, bias, bias_lo, bias_hi, mae, mae_lo, mae_hi} of signed errors `err` (estimate - truth)."""
    err = np.asarray(err, dtype=float)
    n = int(err.size)
    if n == 0:
        return {"n": 0, "bias": None, "bias_lo": None, "bias_hi": None, "mae": None, "mae_lo": None, "mae_hi": None}
    bias, mae = (float(v) for v in _bias_mae(err))
    lo = hi = [None, None]
    if n >= 2:
        res = stats.bootstrap((err,), _bias_mae, n_resamples=n_resamples, confidence_level=confidence,
                              method="percentile", rng=rng)
        lo = [float(v) for v in res.confidence_interval.low]
        hi = [float(v) for v in res.confidence_interval.high]
    return {"n": n, "bias": bias, "bias_lo": lo[0], "bias_hi": hi[0], "mae": mae, "mae_lo": lo[1], "mae_hi": hi[1]}


def by_age(true_age: Any, pred_age: Any, seed: int = 0, n_resamples: int = 2000) -> list[dict[str, Any]]:
    """One row per whole year of true age present (floor of the age): {age, n, bias(+CI), mae(+CI)}."""
    t, err = _errors(true_age, pred_age)
    years = np.floor(t).astype(np.int64)
    return [{"age": int(a), **error_stats(err[years == a], cell_rng(seed, f"age={a}"), n_resamples)}
            for a in np.unique(years)]


def _sort_key(v: Any) -> tuple[int, float, str]:
    try:
        return (0, float(v), str(v))
    except (TypeError, ValueError):
        return (1, math.nan, str(v))


def _keys(values: Sequence[Any], name: str) -> np.ndarray:
    """Each image's value of attribute `name` by name (codes named, see `value_name`; "" = unknown)."""
    return np.array([value_name(name, v) for v in values], dtype=object)


def by_attribute(true_age: Any, pred_age: Any, values: Sequence[Any], name: str, seed: int = 0,
                 n_resamples: int = 2000) -> list[dict[str, Any]]:
    """One row per value of attribute `name` (None / "" = unknown, left out): {value, n, bias(+CI),
    mae(+CI)}. Coded values are named (`value_name`, e.g. gender 0 -> male) and such rows keep the
    code as `code` (given as codes or names, the rows are the same)."""
    t, err = _errors(true_age, pred_age)
    if len(values) != t.size:
        raise UsageError(f"by {name!r}: {len(values)} values for {t.size} images", option="by")
    keys = _keys(values, name)
    rows = []
    for v in sorted({k for k in keys if k != ""}, key=_sort_key):
        code = {"code": value_code(name, v)} if name in VALUE_NAMES else {}
        rows.append({"value": v, **code, **error_stats(err[keys == v], cell_rng(seed, f"{name}={v}"), n_resamples)})
    return rows


def largest_gap(true_age: Any, pred_age: Any, values: Sequence[Any], rows: Sequence[Mapping[str, Any]], name: str,
                seed: int = 0, min_n: int = 10, n_resamples: int = 2000) -> dict[str, Any] | None:
    """The largest MAE gap and bias gap between values of one attribute with >= `min_n` images.

    {mae_gap, mae_gap_lo, mae_gap_hi, mae_high, mae_low, bias_gap, bias_gap_lo, bias_gap_hi, bias_high,
    bias_low, min_n}; `*_high`/`*_low` name the two values. None with fewer than two such values.
    """
    _, err = _errors(true_age, pred_age)
    keys = _keys(values, name)
    ok = [r for r in rows if r["n"] >= max(int(min_n), 2)]
    if len(ok) < 2:
        return None
    out: dict[str, Any] = {"min_n": int(min_n)}
    for metric, fn in (("mae", lambda e, axis=-1: np.mean(np.abs(e), axis=axis)),
                       ("bias", lambda e, axis=-1: np.mean(e, axis=axis))):
        high = max(ok, key=lambda r, m=metric: r[m])
        low = min(ok, key=lambda r, m=metric: r[m])
        a, b = err[keys == high["value"]], err[keys == low["value"]]
        res = stats.bootstrap((a, b), lambda x, y, axis=-1, f=fn: f(x, axis=axis) - f(y, axis=axis),
                              n_resamples=n_resamples, method="percentile",
                              rng=cell_rng(seed, f"{name}:{metric}-gap"))
        out.update({f"{metric}_gap": float(high[metric] - low[metric]),
                    f"{metric}_gap_lo": float(res.confidence_interval.low),
                    f"{metric}_gap_hi": float(res.confidence_interval.high),
                    f"{metric}_high": high["value"], f"{metric}_low": low["value"]})
    return out


def breakdown(true_age: Any, pred_age: Any, attributes: Mapping[str, Sequence[Any]] | None = None,
              by: Sequence[str] = (), seed: int = 0, min_n: int = 10, n_resamples: int = 2000) -> dict[str, Any]:
    """{"by_age": [...], <attr>: [...] for each `by` column, "gaps": {attr: largest_gap or None}}."""
    t, err = _errors(true_age, pred_age)
    chosen = select_attributes(attributes, parse_by(list(by)), t.size)
    p = t + err
    out: dict[str, Any] = {"by_age": by_age(t, p, seed, n_resamples)}
    gaps: dict[str, Any] = {}
    for name, values in chosen.items():
        rows = by_attribute(t, p, values, name, seed, n_resamples)
        out[name] = rows
        gaps[name] = largest_gap(t, p, values, rows, name, seed, min_n, n_resamples)
    out["gaps"] = gaps
    return out


# ---------------------------------------------------------------------------------------------
# plot


