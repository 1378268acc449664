"""Probability calibration: expected calibration error, reliability diagram, temperature scaling.

- ECE (top-label, Guo et al. 2017, "On calibration of modern neural networks", ICML): each image's
  confidence is its largest probability and it is correct when that class is its true class; the
  confidences fall into 15 equal-width bins (0, 1/15], (1/15, 2/15], ... (a confidence of exactly 0
  joins the first bin); ECE = sum over bins of (n_bin / N) * |accuracy_bin - mean confidence_bin|.
  0 is perfectly calibrated; an over-confident model has confidence above its accuracy.
- Temperature scaling (same paper): p_T = softmax(z / T) for logits or log-probabilities z, with one
  T > 0 fitted on validation by minimising the negative log-likelihood over log T
  (`scipy.optimize.minimize_scalar`, bounded). T > 1 softens over-confident probabilities. The
  functions are generic over (N, K) (age groups here; single-year labels in the prior correction).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from ordinalage.errors import UsageError

N_BINS = 15
LOG_T_BOUNDS = (math.log(1e-2), math.log(1e2))


def _proba_labels(proba: Any, labels: Any, name: str = "proba") -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(proba, dtype=float)
    y = np.asarray(labels)
    if p.ndim != 2 or y.ndim != 1 or p.shape[0] != y.size:
        raise UsageError(f"calibration: {name} must be (images, classes) and labels one per image, "
                         f"got {p.shape} and {y.shape}")
    if y.size == 0:
        raise UsageError("calibration: no images (n = 0)")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y.astype(float), 1), 0)):
            raise UsageError("calibration: labels must be whole class indices")
        y = y.astype(np.int64)
    bad = np.flatnonzero((y < 0) | (y >= p.shape[1]))
    if bad.size:
        raise UsageError(f"calibration: labels[{bad[0]}] = {y[bad[0]]} is outside 0..{p.shape[1] - 1}")
    return p, y.astype(np.int64)


def reliability_bins(proba: Any, labels: Any, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """One row per equal-width confidence bin: {lo, hi, n, confidence, accuracy} (None when empty)."""
    p, y = _proba_labels(proba, labels)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    rows = []
    for i in range(n_bins):
        m = b == i
        n = int(m.sum())
        rows.append({"lo": i / n_bins, "hi": (i + 1) / n_bins, "n": n,
                     "confidence": float(conf[m].mean()) if n else None,
                     "accuracy": float(correct[m].mean()) if n else None})
    return rows


def expected_calibration_error(proba: Any, labels: Any, n_bins: int = N_BINS) -> float:
    """Top-label ECE with `n_bins` equal-width bins (see the module docstring)."""
    rows = reliability_bins(proba, labels, n_bins)
    total = sum(r["n"] for r in rows)
    return float(sum(r["n"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]))


def to_logproba(proba: Any, eps: float = 1e-12) -> np.ndarray:
    """log of probabilities clipped at `eps` (so a 0 never makes the likelihood infinite)."""
    return np.log(np.clip(np.asarray(proba, dtype=float), eps, 1.0))


def _nll(log_t: float, z: np.ndarray, y: np.ndarray) -> float:
    lp = log_softmax(z / math.exp(log_t), axis=1)
    return float(-lp[np.arange(y.size), y].mean())


def fit_temperature(logits: Any, labels: Any) -> float:
    """The temperature T minimising the mean NLL of softmax(logits / T) on (validation) `labels`.

    `logits` may be logits or log-probabilities (N, K), finite (see `to_logproba`).
    """
    z, y = _proba_labels(logits, labels, "logits")
    if not np.all(np.isfinite(z)):
        raise UsageError("calibration: logits must be finite (clip probabilities with to_logproba)")
    res = minimize_scalar(_nll, bounds=LOG_T_BOUNDS, args=(z, y), method="bounded", options={"xatol": 1e-5})
    return float(math.exp(res.x))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """softmax(logits / T) along the last axis: renormalised probabilities (N, K)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise UsageError(f"calibration: temperature must be a positive number, got {temperature}")
    return softmax(np.asarray(logits, dtype=float) / float(temperature), axis=-1)


