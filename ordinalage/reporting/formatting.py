"""Numbers and intervals as text: the one place that decides how a value, a signed difference, an
interval or a p-value is written in tables, cards, Markdown and HTML."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["METHOD_TITLES", "METRIC_TITLES", "SHORT_TITLES", "fmt", "fmt_number", "interval", "p_value", "plus_minus", "row_interval",
           "short", "signed", "with_interval"]

METRIC_TITLES = {
    "n": "images",
    "accuracy": "accuracy (exact group)",
    "one_off": "one-off (1 exact, 0.5 adjacent)",
    "adjacent_accuracy": "adjacent accuracy (|group error| <= 1)",
    "mae": "MAE (years)",
    "rmse": "RMSE (years)",
    "ca3": "CA(3) (|age error| <= 3)",
    "ca5": "CA(5) (|age error| <= 5)",
    "mae_groups": "MAE (groups)",
    "macro_f1": "macro F1",
    "qwk": "quadratic weighted kappa",
    "rank_inconsistency": "rank inconsistency",
}

SHORT_TITLES = {
    "accuracy": "acc", "one_off": "1-off", "adjacent_accuracy": "adj", "mae": "MAE", "rmse": "RMSE",
    "ca3": "CA3", "ca5": "CA5", "mae_groups": "MAEg", "macro_f1": "mF1", "qwk": "QWK", "rank_inconsistency": "rinc",
}


def fmt(value: Any, digits: int = 3) -> str:
    """Table cell text: '-' for None and NaN, booleans and integers as is, floats rounded, anything
    else as str()."""
    if value is None:
        return "-"
    if isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def fmt_number(value: Any, digits: int = 2) -> str:
    """`fmt`, with numpy scalars and numeric strings (values read back from CSV files) read as numbers."""
    if value is not None and not isinstance(value, (bool, int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return str(value)
    return fmt(value, digits)


def with_interval(value: Any, lo: Any, hi: Any, digits: int = 3) -> str:
    """'value [lo, hi]', or the value alone when either bound is missing."""
    text = fmt_number(value, digits)
    return text if lo is None or hi is None else f"{text} [{fmt_number(lo, digits)}, {fmt_number(hi, digits)}]"


def row_interval(row: Mapping[str, Any], key: str, digits: int = 2) -> str:
    """`with_interval` of a row that holds `key`, `key_lo` and `key_hi`."""
    return with_interval(row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi"), digits)


def signed(value: float, digits: int = 2) -> str:
    """The value with its sign always shown; one that rounds to zero is written '+0.00'."""
    text = f"{value:+.{digits}f}"
    return text.replace("-", "+", 1) if float(text) == 0 else text


def interval(ci: Sequence[float] | None, digits: int = 2) -> str:
    """A difference's interval '[-0.12, +0.30]' (signs always shown), '-' when there is none."""
    return "-" if not ci else f"[{signed(ci[0], digits)}, {signed(ci[1], digits)}]"


def plus_minus(mean: Any, std: Any, digits: int = 3) -> str:
    """'mean ± std', the mean alone when std is not a number, '-' without a mean."""
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if isinstance(std, (int, float)) else "")


def p_value(value: float | None) -> str:
    """A p-value to 3 significant digits, '-' when there is none."""
    return "-" if value is None else f"{value:.3g}"


def short(value: Any) -> str:
    """Floats to 4 significant digits (hyper-parameters, objective values), anything else as str()."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


METHOD_TITLES = {"cdf": "predicted age distribution (CDF score)", "residual": "absolute residual"}
