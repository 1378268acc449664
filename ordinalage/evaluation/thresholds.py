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
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.posterior.metrics import paired_ages, threshold_rates

THRESHOLD_KEYS = ("threshold", "challenge", "n_under", "n_over", "false_accept", "false_reject")


def parse_thresholds(text: str | Sequence[int] | int, flag: str = "thresholds") -> list[int]:
    """"18,21" -> [18, 21] (whole, non-negative ages; duplicates dropped, order kept).

    Anything else is a UsageError naming `flag`, the setting's name (`thresholds` or `challenges`;
    also the error's `option`, which the command line maps to its flag).
    """
    if isinstance(text, str):
        raw = text.split(",")
    elif isinstance(text, int):
        raw = [str(text)]
    else:
        raw = [str(v) for v in text]
    parts = [p.strip() for p in raw if p.strip()]
    if not parts:
        raise UsageError(f"{flag}: expected one or more whole ages such as 18 or 18,21,25", option=flag)
    out: list[int] = []
    for p in parts:
        try:
            v = int(p)
        except ValueError as exc:
            raise UsageError(f"{flag} {p!r}: not a whole age (expected e.g. 18 or 18,21,25)", option=flag) from exc
        if v < 0:
            raise UsageError(f"{flag} {p!r}: an age cannot be negative", option=flag)
        if v not in out:
            out.append(v)
    return out


def _pair(true_age: Any, pred_age: Any) -> tuple[np.ndarray, np.ndarray]:
    return paired_ages(true_age, pred_age, "thresholds")


def threshold_table(true_age: Any, pred_age: Any, thresholds: Sequence[int], challenges: Sequence[int]
                    ) -> list[dict[str, Any]]:
    """One row per (threshold, challenge), keys THRESHOLD_KEYS; rates None when undefined.

    Challenge ages below a threshold are kept (they show the accept-everyone end of the curve).
    """
    if not thresholds:
        raise UsageError("thresholds: give at least one age", option="thresholds")
    if not challenges:
        raise UsageError("challenges: give at least one age", option="challenges")
    t, p = _pair(true_age, pred_age)
    rows = []
    for th in thresholds:
        n_under, n_over, fa, fr = threshold_rates(t, p, th, challenges)
        for ch, a, r in zip(challenges, fa, fr, strict=True):
            rows.append({"threshold": int(th), "challenge": int(ch), "n_under": n_under, "n_over": n_over,
                         "false_accept": None if np.isnan(a) else float(a),
                         "false_reject": None if np.isnan(r) else float(r)})
    return rows


