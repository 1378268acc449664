"""Prior correction under label shift: reweighting, EM estimation of a target's label mix, decoders,
prior files. Pure numpy (+ matplotlib for the plot); it works on stored label probabilities, not models.

Every model yields, per image, a distribution over its labels: `proba` (N, L), rows summing to 1,
with `label_ages` (L,) the age of each label (single years, or group indices for group targets).

- `reweight`: p_t(y|x) ∝ p_s(y|x) t(y) / s(y) (Saerens et al. 2002, eq. 2.4).
- `em_prior`: the target's label mix t from unlabelled images alone (Saerens, Latinne and
  Decaestecker 2002), with Gaussian smoothing across neighbouring labels at every iteration (EMS,
  Silverman et al. 1990), a tolerance and an iteration cap.
- `effective_train_prior`: the label mix the model saw in training (sampler weights, class weights).
- `residual_distribution`: a distribution over ages for regression heads, from validation residuals.
- `decode_age`, `group_proba_from_labels`: mean / median / mode; years summed into age groups.
- prior files (`read_prior`, `write_prior`): `prior_files`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

DECODERS = ("mean", "median", "mode")
# EM smoothing: std of the Gaussian kernel in years (label units); 0 = off. 4 years was chosen on the
# UTKFace validation split resampled to shifted age mixes (benchmarks/prior_shift.py, docs/results.md).
DEFAULT_SMOOTH = 4.0


# --------------------------------------------------------------------------------------------- basics


def _as_proba(proba: np.ndarray | Sequence[Sequence[float]], name: str = "proba") -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"{name}: expected an (N, L) array, got shape {p.shape}")
    return p


def _as_prior(prior: np.ndarray | Sequence[float], n_labels: int, name: str) -> np.ndarray:
    q = np.asarray(prior, dtype=np.float64)
    if q.shape != (n_labels,):
        raise ValueError(f"{name}: expected {n_labels} values (one per label), got shape {q.shape}")
    if not np.all(np.isfinite(q)) or np.any(q < 0) or q.sum() <= 0:
        raise ValueError(f"{name}: must be finite, non-negative and not all zero")
    return q / q.sum()


def prior_ratio(source_prior: np.ndarray, target_prior: np.ndarray) -> np.ndarray:
    """t(y) / s(y) per label; 1 where s(y) = 0 (see `reweight`)."""
    s, t = np.asarray(source_prior, dtype=np.float64), np.asarray(target_prior, dtype=np.float64)
    return np.divide(t, s, out=np.ones_like(t), where=s > 0)


def reweight(proba: np.ndarray, source_prior: np.ndarray, target_prior: np.ndarray) -> np.ndarray:
    """Posteriors under a new label prior: p_t(y|x) ∝ p_s(y|x) t(y) / s(y), rows renormalised.

    Priors need not sum to 1 (they are normalised). Zero source mass: a label with s(y) = 0 had no
    training prior shaping the model's output, so its probability is left unscaled (ratio 1, never a
    division by zero); `effective_train_prior` never returns zeros anyway. A row whose whole mass lies
    on labels the target rules out (t = 0) cannot be reweighted (0/0) and is returned unchanged.
    So no NaN comes out, and reweighting with target == source is the identity for any source prior.
    """
    p = _as_proba(proba)
    n_labels = p.shape[1]
    ratio = prior_ratio(_as_prior(source_prior, n_labels, "source prior"), _as_prior(target_prior, n_labels, "target prior"))
    w = p * ratio
    total = w.sum(axis=1, keepdims=True)
    ok = total > 0
    return np.where(ok, w / np.where(ok, total, 1.0), p)


# --------------------------------------------------------------------------------------------- EM


@dataclass(frozen=True)
class PriorEstimate:
    """EM result: the estimated target prior (L,), iterations used, whether the tolerance was met, and
    the mean log-likelihood ratio log sum_y p_s(y|x) t(y)/s(y) after each iteration (0 at t = s)."""

    prior: np.ndarray
    n_iter: int
    converged: bool
    log_likelihood: list[float] = field(default_factory=list)


def smoothing_matrix(n_labels: int, smooth: float, label_ages: np.ndarray | None = None) -> np.ndarray | None:
    """(L, L) column-stochastic Gaussian kernel: column j spreads label j's mass over the labels
    with std `smooth` (in the units of `label_ages`, or label index), so mass is conserved even at the
    ends of the range. None when `smooth` is 0."""
    if smooth < 0 or not math.isfinite(smooth):
        raise ValueError(f"smooth must be >= 0 (years), got {smooth}")
    if smooth == 0:
        return None
    x = np.arange(n_labels, dtype=np.float64) if label_ages is None else np.asarray(label_ages, dtype=np.float64)
    k = np.exp(-0.5 * ((x[:, None] - x[None, :]) / smooth) ** 2)
    return k / k.sum(axis=0, keepdims=True)


def em_prior(proba: np.ndarray, source_prior: np.ndarray, *, smooth: float = DEFAULT_SMOOTH,
             label_ages: np.ndarray | None = None, tol: float = 1e-6, max_iter: int = 1000) -> PriorEstimate:
    """Estimate the target's label prior from unlabelled posteriors (Saerens, Latinne, Decaestecker 2002).

    Each iteration: E step, posteriors reweighted to the current prior t (`reweight`); M step, t =
    their mean over the images; then, when `smooth` > 0, t is convolved with a Gaussian of std `smooth`
    (years; label index when `label_ages` is None) across neighbouring labels and renormalised. Ages
    are ordinal, so the 31st year borrows strength from the 30th and 32nd (EMS: smoothed EM; with
    smoothing the likelihood need not increase monotonically, and the fixed point is a smoothed
    maximum-likelihood mix). Stops when the L1 change of t is below `tol`, or after `max_iter`.

    Vectorised: two (N, L) matrix-vector products per iteration, no (N, L) temporaries; see
    `em_seconds_per_10k` for the measured cost.
    """
    p = _as_proba(proba)
    n, n_labels = p.shape
    if n == 0:
        raise ValueError("em_prior: no images (proba has 0 rows)")
    s = _as_prior(source_prior, n_labels, "source prior")
    if max_iter < 1 or tol <= 0:
        raise ValueError(f"em_prior: need max_iter >= 1 and tol > 0, got {max_iter}, {tol}")
    kernel = smoothing_matrix(n_labels, smooth, label_ages)
    t = s.copy()
    history: list[float] = []
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (it is the iteration count after the loop)
        ratio = prior_ratio(s, t)
        r = p @ ratio  # (N,) normaliser of each reweighted row
        ok = r > 0
        inv = np.where(ok, 1.0 / np.where(ok, r, 1.0), 0.0)
        t_new = ratio * (p.T @ inv) / max(int(ok.sum()), 1)  # mean of the reweighted posteriors
        history.append(float(np.log(r[ok]).mean()) if ok.any() else float("-inf"))
        if kernel is not None:
            t_new = kernel @ t_new
        t_new = t_new / t_new.sum()
        delta = float(np.abs(t_new - t).sum())
        t = t_new
        if delta < tol:
            converged = True
            break
    return PriorEstimate(prior=t, n_iter=it, converged=converged, log_likelihood=history)


def em_seconds_per_10k(n: int = 10_000, n_labels: int = 81, smooth: float = DEFAULT_SMOOTH, seed: int = 0) -> dict:
    """Time `em_prior` on `n` synthetic posteriors over `n_labels` labels with a real shift to find.

    Returns {"seconds_per_10k", "seconds", "n", "n_labels", "n_iter", "converged"}.
    `benchmarks/prior_shift.py` records it in prior_shift.json ("em_cost"; docs/evaluation.md quotes
    it). Cost is linear in n and in the iterations; without smoothing EM needs far more iterations.
    EM works on stored probabilities, so it is negligible next to the forward passes.
    """
    proba, source, _ = synthetic_shift(n, n_labels, seed=seed)
    start = time.perf_counter()
    est = em_prior(proba, source, smooth=smooth)
    seconds = time.perf_counter() - start
    return {"seconds_per_10k": seconds * 10_000 / n, "seconds": seconds, "n": n, "n_labels": n_labels,
            "n_iter": est.n_iter, "converged": est.converged}


def synthetic_shift(n: int, n_labels: int = 81, *, noise: float = 6.0, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posteriors with a known label shift, for tests and timing: (proba (n, L), source prior, labels).

    Source prior: broad (young adults most). Target prior: peaked at older labels. Labels are drawn
    from the target, each observation x = label + Gaussian noise (std `noise` labels), and the
    posteriors are the exact Bayes posteriors under the source prior: p_s(y|x) ∝ N(x; y, noise) s(y).
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n_labels, dtype=np.float64)
    source = np.exp(-0.5 * ((y - 0.35 * n_labels) / (0.3 * n_labels)) ** 2) + 0.05
    source /= source.sum()
    target = np.exp(-0.5 * ((y - 0.7 * n_labels) / (0.12 * n_labels)) ** 2) + 0.01
    target /= target.sum()
    labels = rng.choice(n_labels, size=n, p=target)
    x = labels + rng.normal(0.0, noise, size=n)
    loglik = -0.5 * ((x[:, None] - y[None, :]) / noise) ** 2 + np.log(source)
    loglik -= loglik.max(axis=1, keepdims=True)
    proba = np.exp(loglik)
    proba /= proba.sum(axis=1, keepdims=True)
    return proba, source, labels


# --------------------------------------------------------------------------------------------- train prior


def effective_train_prior(labels: np.ndarray | Sequence[int], n_labels: int, *,
                          sample_weights: np.ndarray | None = None, class_weights: np.ndarray | None = None,
                          group_idx: np.ndarray | None = None, label_sigma: float = 0.0,
                          floor: float = 0.5) -> np.ndarray:
    """The label distribution the model saw in training, (n_labels,) summing to 1.

    Takes what the training loop uses (`prepare_data` -> `PreparedData`, `fit`): `labels` = the head's
    label of each training record (`head.labels_of(ages)`; `data.train` already holds caps and
    under/oversampling, repeats included); `sample_weights` = `data.sampler_weights` (the
    WeightedRandomSampler draws record i with probability w_i / sum w; None: each record once per
    epoch); `class_weights` = `data.class_weights` (one loss weight per age group, applied through
    each record's group index `group_idx`, as `Head.loss` does). Each record adds w_i * cw[g_i] to its
    label; with `label_sigma` > 0 (`model.label_sigma`: the class head trained on Gaussian label
    distributions, DLDL) it adds that Gaussian over the labels instead (centred on its label, std
    `label_sigma` labels, normalised over 0..n_labels-1 as `gaussian_label_distribution` does): those
    soft targets are what the model learnt to reproduce, so they are its prior (with one-hot counts
    the unseen year 0 next to many 1-year-olds gets almost no prior mass but real predicted mass, and
    EM runs away there). The counts are scaled so that they sum to the number of records (effective
    records), then `floor` pseudo-records are added to every label (as `Head.fit_prior` adds 0.5), so
    no label has zero mass, and the whole is normalised.
    """
    lab = np.asarray(labels, dtype=np.int64)
    if lab.ndim != 1:
        raise ValueError(f"labels: expected one label per record, got shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() >= n_labels):
        raise ValueError(f"labels must lie in 0..{n_labels - 1}, got {lab.min()}..{lab.max()}")
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    w = np.ones(lab.size)
    if sample_weights is not None:
        sw = np.asarray(sample_weights, dtype=np.float64)
        if sw.shape != lab.shape:
            raise ValueError(f"sample_weights: expected {lab.size} values, got shape {sw.shape}")
        w = w * sw
    if class_weights is not None:
        if group_idx is None:
            raise ValueError("class_weights need group_idx (the age-group index of each training record)")
        g = np.asarray(group_idx, dtype=np.int64)
        if g.shape != lab.shape:
            raise ValueError(f"group_idx: expected {lab.size} values, got shape {g.shape}")
        w = w * np.asarray(class_weights, dtype=np.float64)[g]
    counts = np.bincount(lab, weights=w, minlength=n_labels)[:n_labels].astype(np.float64)
    if label_sigma < 0:
        raise ValueError(f"label_sigma must be >= 0, got {label_sigma}")
    if label_sigma > 0:  # row k: the soft target of label k
        y = np.arange(n_labels, dtype=np.float64)
        soft = np.exp(-0.5 * ((y[None, :] - y[:, None]) / label_sigma) ** 2)
        counts = counts @ (soft / soft.sum(axis=1, keepdims=True))
    if counts.sum() > 0:
        counts *= lab.size / counts.sum()
    counts += floor
    if counts.sum() <= 0:
        raise ValueError("effective_train_prior: no training records and floor 0: no prior")
    return counts / counts.sum()


# --------------------------------------------------------------------------------------------- regression


@dataclass(frozen=True)
class ResidualDistribution:
    """p(true age | predicted age) from validation residuals, for regression heads.

    `__call__(pred_age) -> (N, L)` label probabilities; `source_prior` is the validation set's label
    mix (floored), the prior these distributions carry, so it, not the training prior, is the
    `source_prior` to pass to `reweight` / `em_prior` for a regression model.
    """

    label_ages: np.ndarray
    grid: np.ndarray  # predicted ages at which the table is evaluated (1-year steps)
    table: np.ndarray  # (len(grid), L) distributions over the labels
    source_prior: np.ndarray
    bandwidth: float
    pred_bandwidth: float | None

    def __call__(self, pred_age: np.ndarray | Sequence[float]) -> np.ndarray:
        a = np.clip(np.asarray(pred_age, dtype=np.float64).ravel(), self.grid[0], self.grid[-1])
        pos = np.interp(a, self.grid, np.arange(len(self.grid), dtype=np.float64))
        lo = np.minimum(np.floor(pos).astype(np.int64), len(self.grid) - 1)
        hi = np.minimum(lo + 1, len(self.grid) - 1)
        frac = (pos - lo)[:, None]
        out = (1 - frac) * self.table[lo] + frac * self.table[hi]
        return out / out.sum(axis=1, keepdims=True)


def _silverman(x: np.ndarray) -> float:
    """Silverman's rule-of-thumb bandwidth 0.9 min(std, IQR / 1.34) n^(-1/5)."""
    q75, q25 = np.percentile(x, [75, 25])
    spread = min(float(np.std(x)), float(q75 - q25) / 1.34) or float(np.std(x))
    return 0.9 * spread * len(x) ** -0.2


def residual_distribution(val_pred_age: np.ndarray, val_true_age: np.ndarray, label_ages: np.ndarray, *,
                          conditional: bool = True, bandwidth: float | None = None,
                          min_bandwidth: float = 1.0, floor: float = 1e-6) -> ResidualDistribution:
    """A distribution over the label ages for each regression prediction, from validation residuals.

    Choice: the residuals r_k = true_k - pred_k of the validation images form a Gaussian kernel
    density (a smoothed histogram; bandwidth by Silverman's rule, at least `min_bandwidth` years); for a
    prediction a, P(age = label_j) ∝ sum_k w_k(a) N(label_j; a + r_k, h). With `conditional` (default)
    the residuals are weighted by how close their own prediction was to a (w_k(a) ∝ N(pred_k; a, h_pred),
    h_pred by Silverman on the predictions, at least 2 years): regression pulls predictions toward the
    middle, so residuals differ along the range (young faces predicted too old, old ones too young),
    and a single residual histogram would miss exactly the prior effect the correction removes. Without
    it every residual counts equally (homoscedastic). Tabulated on a 1-year grid of predictions and
    linearly interpolated, so evaluating N predictions costs O(N L). A `floor` keeps every label > 0.
    """
    pred = np.asarray(val_pred_age, dtype=np.float64).ravel()
    true = np.asarray(val_true_age, dtype=np.float64).ravel()
    ages = np.asarray(label_ages, dtype=np.float64)
    if pred.shape != true.shape or pred.size < 2:
        raise ValueError(f"residual_distribution: need >= 2 paired validation ages, got {pred.size} and {true.size}")
    resid = true - pred
    h = float(bandwidth) if bandwidth is not None else max(min_bandwidth, _silverman(resid))
    h_pred = max(2.0, _silverman(pred)) if conditional else None
    grid = np.arange(math.floor(min(ages.min(), pred.min())), math.ceil(max(ages.max(), pred.max())) + 1.0)
    table = np.empty((len(grid), len(ages)))
    for m, a in enumerate(grid):
        if h_pred is None:
            w = np.full(pred.size, 1.0 / pred.size)
        else:
            logw = -0.5 * ((pred - a) / h_pred) ** 2
            w = np.exp(logw - logw.max())
            w /= w.sum()
        logk = -0.5 * ((ages[None, :] - a - resid[:, None]) / h) ** 2  # (K, L)
        row = w @ np.exp(logk)
        row = row / row.sum() if row.sum() > 0 else np.full(len(ages), 1.0 / len(ages))
        table[m] = row + floor
        table[m] /= table[m].sum()
    # the validation label mix these distributions carry (nearest label per true age)
    nearest = np.abs(true[:, None] - ages[None, :]).argmin(axis=1)
    source = effective_train_prior(nearest, len(ages))
    return ResidualDistribution(ages, grid, table, source, h, h_pred)


# --------------------------------------------------------------------------------------------- decoders


def decode_age(proba: np.ndarray, label_ages: np.ndarray | Sequence[float], how: str = "mean") -> np.ndarray:
    """Age per row of a label distribution: `mean` (expected age), `median` (the first label where the
    CDF reaches 0.5; minimises the expected absolute error) or `mode` (the most probable label)."""
    p = _as_proba(proba)
    ages = np.asarray(label_ages, dtype=np.float64)
    if ages.shape != (p.shape[1],):
        raise ValueError(f"label_ages: expected {p.shape[1]} values, got shape {ages.shape}")
    if how == "mean":
        return (p @ ages) / p.sum(axis=1)
    if how == "median":
        cdf = np.cumsum(p, axis=1) / p.sum(axis=1, keepdims=True)
        return ages[np.argmax(cdf >= 0.5 - 1e-9, axis=1)]
    if how == "mode":
        return ages[np.argmax(p, axis=1)]
    raise UsageError(f"age decoder {how!r} is not one of {', '.join(DECODERS)}")


def group_proba_from_labels(proba: np.ndarray, label_ages: np.ndarray | Sequence[float],
                            groups: AgeGroups) -> np.ndarray:
    """(N, L) year probabilities -> (N, G) group probabilities, renormalised. Years below the first
    group count for it, years above the last for the last (`AgeGroups.clip_indices`, as the heads do)."""
    p = _as_proba(proba)
    idx = groups.clip_indices(np.asarray(label_ages, dtype=np.float64))
    out = np.zeros((p.shape[0], len(groups)))
    np.add.at(out.T, idx, p.T)
    total = out.sum(axis=1, keepdims=True)
    return out / np.where(total > 0, total, 1.0)


# --------------------------------------------------------------------------------------------- prior files


