"""Split conformal prediction intervals for ages: pure numpy, no torch.

Two conformity scores (docs/evaluation.md ("Evaluation for decisions") has the definitions and a worked example):

- ``"cdf"`` for heads with a distribution over single years (class over years, CORAL, CORN):
  distributional conformal prediction (Chernozhukov, Wuethrich & Zhu 2021, "Distributional
  conformal prediction", PNAS 118(48) e2107794118). Each year label ``a`` spreads its probability
  evenly over ``[a - 0.5, a + 0.5]`` (the head rounds ages to years), giving a continuous,
  piecewise-linear predicted CDF ``F``; the score is ``|F(y) - 1/2|`` and the interval is
  ``{y : |F(y) - 1/2| <= q}`` = ``[F^-1(1/2 - q), F^-1(1/2 + q)]``, a central interval of the
  predicted distribution whose probability content is calibrated on held-out data. It is as wide
  as the model is unsure about each face.
- ``"residual"`` otherwise: the absolute residual ``|y - pred|`` (Lei et al. 2018, "Distribution-free
  predictive inference for regression", JASA 113(523)); interval ``[pred - q, pred + q]``.

``q`` is the finite-sample conformal quantile: the ``ceil((n + 1)(1 - alpha))``-th smallest of the
``n`` calibration scores (Angelopoulos & Bates, "A gentle introduction to conformal prediction",
2021), so that for exchangeable data the coverage P(y in interval) is at least ``1 - alpha``, and at
most ``1 - alpha + 1/(n + 1)`` when the scores have no ties. Lower ends are clipped at age 0 (ages
are never negative, so this never loses coverage).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

METHODS = ("cdf", "residual")
CALIBRATION_FILE = "calibration.json"
FORMAT = "ordinalage-calibration"


# ---------------------------------------------------------------------------------------------
# inputs


def parse_level(text: str | float) -> float:
    """`--interval 0.9` -> 0.9; anything but a number strictly between 0 and 1 is a UsageError."""
    try:
        level = float(text)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"interval {text!r}: expected a coverage level such as 0.9", option="interval") from exc
    check_alpha(1.0 - level, level)
    return level


def check_alpha(alpha: float, level: float | None = None) -> float:
    """`alpha` (miscoverage = 1 - level) must lie strictly in (0, 1); the error names `interval`."""
    shown = 1.0 - alpha if level is None else level
    if not (math.isfinite(alpha) and 0.0 < alpha < 1.0):
        raise UsageError(f"interval {shown:g}: the coverage level must lie strictly between 0 and 1 "
                         f"(e.g. 0.9 for a 90% interval)", option="interval")
    return float(alpha)


def _vector(values: Any, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim != 1:
        raise UsageError(f"intervals: {name} must be one value per image (got shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise UsageError(f"intervals: {name} must be finite numbers")
    return a


def _distribution(label_proba: Any, label_ages: Any, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Validated (N, L) probabilities (rows renormalised) and increasing (L,) label ages."""
    p = np.asarray(label_proba, dtype=float)
    ages = np.asarray(label_ages, dtype=float)
    if p.ndim != 2 or ages.ndim != 1 or p.shape[1] != ages.size or ages.size == 0:
        raise UsageError(f"intervals: label_proba must be (images, {ages.size}) for {ages.size} label ages, "
                         f"got {p.shape}")
    if n is not None and p.shape[0] != n:
        raise UsageError(f"intervals: {n} ages but {p.shape[0]} rows of label_proba")
    if ages.size > 1 and np.any(np.diff(ages) <= 0):
        raise UsageError("intervals: label_ages must be increasing")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise UsageError("intervals: label_proba must be finite and non-negative")
    total = p.sum(axis=1, keepdims=True)
    if np.any(total <= 0):
        raise UsageError("intervals: a row of label_proba sums to 0")
    return p / total, ages


def _edges(ages: np.ndarray) -> np.ndarray:
    """Bin edges (L + 1,): label age a_i owns [e_i, e_i+1]; half-way between neighbours, +-0.5 at a
    single label and half a step beyond the ends otherwise (= a +- 0.5 for whole years)."""
    if ages.size == 1:
        return np.array([ages[0] - 0.5, ages[0] + 0.5])
    mids = (ages[1:] + ages[:-1]) / 2
    return np.concatenate([[ages[0] - (ages[1] - ages[0]) / 2], mids, [ages[-1] + (ages[-1] - ages[-2]) / 2]])


def predicted_cdf(y: Any, label_proba: Any, label_ages: Any) -> np.ndarray:
    """F_i(y_i): the piecewise-linear predicted CDF of each image at its age (0 below, 1 above the labels)."""
    yv = _vector(y, "true_age")
    p, ages = _distribution(label_proba, label_ages, yv.size)
    e = _edges(ages)
    cum = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(p, axis=1)], axis=1)
    cum[:, -1] = 1.0
    k = np.clip(np.searchsorted(e, yv, side="right") - 1, 0, ages.size - 1)
    rows = np.arange(yv.size)
    frac = np.clip((yv - e[k]) / (e[k + 1] - e[k]), 0.0, 1.0)
    return np.where(yv < e[0], 0.0, np.where(yv >= e[-1], 1.0, cum[rows, k] + frac * p[rows, k]))


def _inverse(cum: np.ndarray, e: np.ndarray, t: np.ndarray, lower: bool) -> np.ndarray:
    """lower: inf{y : F(y) >= t}; else sup{y : F(y) <= t}, for a row-wise CDF with knots (e, cum)."""
    n = cum.shape[0]
    # first knot where F reaches t (lower) or exceeds t (upper); F is linear and rising before it
    hit = cum >= t[:, None] if lower else cum > t[:, None]
    j = np.argmax(hit, axis=1)
    j = np.clip(j, 1, e.size - 1)
    rows = np.arange(n)
    c0, c1 = cum[rows, j - 1], cum[rows, j]
    frac = np.divide(t - c0, c1 - c0, out=np.zeros(n), where=c1 > c0)
    y = e[j - 1] + np.clip(frac, 0.0, 1.0) * (e[j] - e[j - 1])
    if lower:
        return np.where(t <= 0.0, -np.inf, y)
    return np.where(t >= 1.0, np.inf, y)


# ---------------------------------------------------------------------------------------------
# calibration


@dataclass(frozen=True)
class Calibration:
    """A fitted split-conformal calibration: enough to make intervals without any data.

    `scores` are the sorted calibration scores, so `at_level` can serve another level later.
    """

    method: str
    alpha: float
    q: float
    n_cal: int
    scores: list[float] = field(default_factory=list, repr=False)

    @property
    def level(self) -> float:
        return 1.0 - self.alpha

    def at_level(self, level: float) -> Calibration:
        """The same calibration at another coverage level (needs the stored scores)."""
        if not self.scores:
            raise UsageError("calibration: no stored scores to change the `interval` level; re-run evaluate",
                             option="interval")
        return _from_scores(self.method, np.asarray(self.scores), check_alpha(1.0 - float(level), float(level)))

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, **asdict(self), "level": self.level}

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "calibration") -> Calibration:
        try:
            if obj.get("format") != FORMAT:
                raise KeyError("format")
            method = str(obj["method"])
            if method not in METHODS:
                raise KeyError("method")
            return cls(method=method, alpha=float(obj["alpha"]), q=float(obj["q"]), n_cal=int(obj["n_cal"]),
                       scores=[float(s) for s in obj.get("scores", [])])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(f"{source}: not an ordinalage calibration (bad or missing key {exc})") from exc

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (temporary file in the same folder, then rename); a folder gets
        `calibration.json` inside it (the run folder, beside best.pt)."""
        path = Path(path)
        if path.is_dir():
            path = path / CALIBRATION_FILE
        from ordinalage.atomic import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration file (or `calibration.json` in a run folder); errors name the file."""
        path = Path(path)
        if path.is_dir():
            path = path / CALIBRATION_FILE
        if not path.is_file():
            raise UsageError(f"{path}: no calibration file (evaluating the run with an `interval` writes it)",
                             option="interval")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: cannot read calibration ({exc})") from exc
        return cls.from_json(obj, source=str(path))


def conformal_rank(n: int, alpha: float) -> int:
    """ceil((n + 1)(1 - alpha)): which sorted score (1-based) is the conformal quantile."""
    # a tiny slack so that e.g. (19 + 1) * 0.95 = 19.000000000000004 still gives 19
    return int(math.ceil((n + 1) * (1.0 - alpha) - 1e-9))


def _from_scores(method: str, scores: np.ndarray, alpha: float) -> Calibration:
    n = int(scores.size)
    if n == 0:
        raise UsageError("interval: no validation split to calibrate on (the run needs val images)", option="interval")
    k = conformal_rank(n, alpha)
    if k > n:
        need = math.ceil(1.0 / alpha - 1.0)
        raise UsageError(f"interval {1 - alpha:g}: {n} calibration image(s) are too few for this level "
                         f"(need at least {need})", option="interval")
    s = np.sort(scores)
    return Calibration(method=method, alpha=float(alpha), q=float(s[k - 1]), n_cal=n, scores=s.tolist())


def conformity_scores(true_age: Any, pred_age: Any = None, label_proba: Any = None,
                      label_ages: Any = None) -> tuple[str, np.ndarray]:
    """(method, scores): the CDF score when label_proba is given, the absolute residual otherwise."""
    y = _vector(true_age, "true_age")
    if label_proba is not None:
        if label_ages is None:
            raise UsageError("intervals: label_proba needs its label_ages")
        return "cdf", np.abs(predicted_cdf(y, label_proba, label_ages) - 0.5)
    if pred_age is None:
        raise UsageError("intervals: need pred_age or label_proba")
    pred = _vector(pred_age, "pred_age")
    if pred.size != y.size:
        raise UsageError(f"intervals: {y.size} true ages but {pred.size} predicted ages")
    return "residual", np.abs(y - pred)


def fit_conformal(cal_true_age: Any, alpha: float, cal_pred_age: Any = None, cal_label_proba: Any = None,
                  label_ages: Any = None) -> Calibration:
    """Split conformal calibration on held-out (validation) images at miscoverage `alpha`.

    Uses the CDF score when `cal_label_proba` (N, L) over `label_ages` (L,) is given, else the
    absolute residual of `cal_pred_age`. An empty calibration set or alpha outside (0, 1) is a
    UsageError (naming `interval`).
    """
    alpha = check_alpha(float(alpha))
    if np.asarray(cal_true_age).size == 0:
        raise UsageError("interval: no validation split to calibrate on (the run needs val images)", option="interval")
    method, scores = conformity_scores(cal_true_age, cal_pred_age, cal_label_proba, label_ages)
    return _from_scores(method, scores, alpha)


def predict_interval(cal: Calibration, pred_age: Any = None, label_proba: Any = None,
                     label_ages: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per image for a fitted calibration. `cdf` needs label_proba and label_ages,
    `residual` needs pred_age. lo is clipped at 0; hi is +inf only when q reaches 0.5 (`cdf`)."""
    if cal.method == "cdf":
        if label_proba is None or label_ages is None:
            raise UsageError("intervals: this calibration uses the predicted CDF; pass label_proba and label_ages")
        p, ages = _distribution(label_proba, label_ages, None)
        e = _edges(ages)
        cum = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(p, axis=1)], axis=1)
        cum[:, -1] = 1.0
        n = p.shape[0]
        lo = _inverse(cum, e, np.full(n, 0.5 - cal.q), lower=True)
        hi = _inverse(cum, e, np.full(n, 0.5 + cal.q), lower=False)
    elif cal.method == "residual":
        if pred_age is None:
            raise UsageError("intervals: this calibration uses residuals; pass pred_age")
        pred = _vector(pred_age, "pred_age")
        lo, hi = pred - cal.q, pred + cal.q
    else:
        raise UsageError(f"calibration: unknown method {cal.method!r} (expected one of {', '.join(METHODS)})")
    return np.maximum(lo, 0.0), hi


# ---------------------------------------------------------------------------------------------
# report


def _cover(lo: np.ndarray, hi: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if y.size == 0:
        return {"n": 0, "coverage": None, "mean_width": None}
    return {"n": int(y.size), "coverage": float(np.mean((lo <= y) & (y <= hi))),
            "mean_width": float(np.mean(hi - lo))}


def interval_report(lo: Any, hi: Any, true_age: Any, groups: AgeGroups | str | Sequence[str] | None = None
                    ) -> dict[str, Any]:
    """Empirical coverage (share with lo <= y <= hi) and mean width (hi - lo, years), overall and per
    true age group (`AgeGroups.clip_indices`: ages outside every group count in the nearest one).

    Returns {n, coverage, mean_width, per_group: [{label, n, coverage, mean_width}]}; a group
    with no images has None for coverage and width.
    """
    y = _vector(true_age, "true_age")
    lo_a, hi_a = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    if lo_a.shape != y.shape or hi_a.shape != y.shape:
        raise UsageError(f"intervals: {y.size} true ages but lo {lo_a.shape} and hi {hi_a.shape}")
    if y.size == 0:
        raise UsageError("intervals: no images to evaluate (n = 0)")
    g = groups if isinstance(groups, AgeGroups) else AgeGroups.parse(groups)
    idx = g.clip_indices(y)
    out = _cover(lo_a, hi_a, y)
    out["per_group"] = [{"label": label, **_cover(lo_a[idx == i], hi_a[idx == i], y[idx == i])}
                        for i, label in enumerate(g.labels)]
    return out
