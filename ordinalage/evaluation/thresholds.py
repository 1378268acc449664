"""Age-threshold decisions with a challenge-age policy: false-accept and false-reject rates.

A check "is this person at least `threshold` years old?" that accepts a face only when the
estimate is at least `challenge` years (NIST FATE age-verification style; challenge >= threshold
trades more rejected adults for fewer accepted minors):

- false accept: true age < threshold and estimate >= challenge; rate over the n_under images
  with true age < threshold;
- false reject: true age >= threshold and estimate < challenge; rate over the n_over images with
  true age >= threshold.

A rate is None when its denominator is 0. Pure numpy; docs/evaluation.md ("Evaluation for decisions") has a worked example.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.posterior.metrics import paired_ages

THRESHOLD_KEYS = ("threshold", "challenge", "n_under", "n_over", "false_accept", "false_reject")


def parse_thresholds(text: str | Sequence[int] | int, flag: str = "--threshold") -> list[int]:
    """"18,21" -> [18, 21] (whole, non-negative ages; duplicates dropped, order kept).

    Anything else is a UsageError naming `flag` (`--threshold` or `--challenge`).
    """
    if isinstance(text, str):
        raw = text.split(",")
    elif isinstance(text, int):
        raw = [str(text)]
    else:
        raw = [str(v) for v in text]
    parts = [p.strip() for p in raw if p.strip()]
    if not parts:
        raise UsageError(f"{flag}: expected one or more whole ages such as 18 or 18,21,25")
    out: list[int] = []
    for p in parts:
        try:
            v = int(p)
        except ValueError as exc:
            raise UsageError(f"{flag} {p!r}: not a whole age (expected e.g. 18 or 18,21,25)") from exc
        if v < 0:
            raise UsageError(f"{flag} {p!r}: an age cannot be negative")
        if v not in out:
            out.append(v)
    return out


def _pair(true_age: Any, pred_age: Any) -> tuple[np.ndarray, np.ndarray]:
    return paired_ages(true_age, pred_age, "thresholds")


def threshold_rates(true_age: np.ndarray, pred_age: np.ndarray, threshold: float,
                    challenges: Sequence[float] | np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(n_under, n_over, false-accept rates, false-reject rates) for each challenge age (NaN when
    the denominator is 0); vectorised over challenges."""
    t, p = _pair(true_age, pred_age)
    c = np.asarray(challenges, dtype=float)
    under = t < threshold
    n_under, n_over = int(under.sum()), int((~under).sum())
    accepted = p[:, None] >= c[None, :]  # (N, C)
    fa = accepted[under].sum(axis=0) / n_under if n_under else np.full(c.size, np.nan)
    fr = (~accepted[~under]).sum(axis=0) / n_over if n_over else np.full(c.size, np.nan)
    return n_under, n_over, np.asarray(fa, dtype=float), np.asarray(fr, dtype=float)


def threshold_table(true_age: Any, pred_age: Any, thresholds: Sequence[int], challenges: Sequence[int]
                    ) -> list[dict[str, Any]]:
    """One row per (threshold, challenge), keys THRESHOLD_KEYS; rates None when undefined.

    Challenge ages below a threshold are kept (they show the accept-everyone end of the curve).
    """
    if not thresholds:
        raise UsageError("--threshold: give at least one age")
    if not challenges:
        raise UsageError("--challenge: give at least one age")
    t, p = _pair(true_age, pred_age)
    rows = []
    for th in thresholds:
        n_under, n_over, fa, fr = threshold_rates(t, p, th, challenges)
        for ch, a, r in zip(challenges, fa, fr, strict=True):
            rows.append({"threshold": int(th), "challenge": int(ch), "n_under": n_under, "n_over": n_over,
                         "false_accept": None if np.isnan(a) else float(a),
                         "false_reject": None if np.isnan(r) else float(r)})
    return rows


def plot_threshold_curve(png: str | Path, true_age: Any, pred_age: Any, threshold: int,
                         challenges: Sequence[int]) -> Path:
    """PNG: false-accept and false-reject rate vs challenge age (every whole age over the span of
    `challenges` and `threshold`, the requested challenge ages marked)."""
    from ordinalage.figures import new_figure

    t, p = _pair(true_age, pred_age)
    lo = min(int(threshold), *map(int, challenges)) - 3
    hi = max(int(threshold), *map(int, challenges)) + 5
    dense = np.arange(max(lo, 0), hi + 1)
    n_under, n_over, fa, fr = threshold_rates(t, p, threshold, dense)
    marks = np.asarray(challenges, dtype=float)
    _, _, fa_m, fr_m = threshold_rates(t, p, threshold, marks)
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot()
    ax.plot(dense, fa, color="tab:red", label=f"false accept (true < {threshold}, n={n_under})")
    ax.plot(dense, fr, color="tab:blue", label=f"false reject (true >= {threshold}, n={n_over})")
    ax.scatter(marks, fa_m, color="tab:red", zorder=3)
    ax.scatter(marks, fr_m, color="tab:blue", zorder=3)
    ax.axvline(threshold, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel("challenge age (accept when estimate >= challenge)")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"age threshold {threshold}")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    path = Path(png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
