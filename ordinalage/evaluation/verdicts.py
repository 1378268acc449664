"""Verdicts on paired runs of two methods that cover training noise as well as test-set noise.

A *paired run* is one run of method A and its twin of method B (same dataset, fold and seed), with the
per-image differences ``|err_a| - |err_b|`` on the same test images. Runs that share a *test set*
(the seeds of one fold) tested the same images; runs of different folds tested different images.

The difference in MAE has two sources of noise: which models the seeds happened to train (training
noise) and which faces happened to be in the test set (test-set noise). Three intervals are given:

- ``ci_images``: percentile bootstrap over test images, runs held fixed (test-set noise only; the
  interval of earlier versions, which under-covers when seeds differ).
- ``ci_runs``: a t interval over the per-run differences (training noise, plus the test-set noise of
  each run when the runs tested different images).
- ``ci``: the verdict's interval, chosen by the design (``method``):

  * ``hybrid t`` (every test set tested by >= 2 seeds, e.g. the default random split): per test set,
    the between-seed variance of the per-run differences over the number of seeds (training noise)
    plus the variance of the mean of the seed-averaged image differences (test-set noise, shared by
    the seeds: the image bootstrap's variance in closed form); a Student t whose degrees of freedom
    add the two half-widths in quadrature (t on seeds - 1 for the seeds' part, normal for the images'). Simulated bake-offs (tests/test_verdicts.py, benchmarks/verdict_calibration.py)
    chose it over the two-level bootstrap, which runs narrow with 3 to 5 runs.
  * ``t over test sets`` (folds, or several datasets, with one seed each): a t interval over the test
    sets' mean differences, each of which carries its own training and test-set noise.
  * ``images only`` (one run per method): training noise is not measured, and the verdict says so.

With folds, the probabilities come from baycomp's correlated Bayesian t-test (the Nadeau-Bengio
correction ``var * (1/runs + 1/(folds - 1))`` for the overlap of the folds' training sets), which is
wider than the verdict's interval where that overlap matters.

With a region of practical equivalence (``rope``, years), a pair's verdict is ``a lower``, ``b lower``,
``equivalent`` (the whole interval inside +-rope) or ``undecided``. "Lower" needs the Holm-adjusted
p-value (over the pairs compared together) below ``alpha``: with k methods all equal, the chance that
any pair is called "lower" stays at or below ``alpha``. ``p_a_lower``, ``p_equivalent``,
``p_b_lower`` are the posterior probabilities (flat prior, Student t) that the difference is below
``-rope``, inside it, or above ``+rope``.

Every function can weight images (``weights``), to standardise the MAE to a stated age mix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from ordinalage.reporting.formatting import signed
from ordinalage.reporting.verdict_text import named_verdict

VERDICTS = ("a lower", "b lower", "equivalent", "undecided")
ONE_RUN = " on these test images"  # appended to a one-run verdict: seed noise was not measured


@dataclass(frozen=True)
class PairedRun:
    """One paired run: the per-image differences ``|err_a| - |err_b|`` on its test set's images.

    ``keys`` are the image keys in the order of ``diffs`` (runs of one test set must hold the same
    keys); ``weights`` (optional, same order) standardise the mean to an age mix.
    """

    test_set: str
    keys: tuple[str, ...]
    diffs: np.ndarray
    weights: np.ndarray | None = None


@dataclass(frozen=True)
class TestSet:
    """The paired runs of one test set: their differences (runs x images) and the images' weights."""

    __test__ = False  # not a pytest class

    x: np.ndarray  # (runs, images) differences
    w: np.ndarray  # (images,) weights, summing to the set's total weight

    @property
    def total(self) -> float:
        return float(self.w.sum())

    def run_means(self) -> np.ndarray:
        return self.x @ self.w / self.total

    def image_means(self) -> np.ndarray:
        """Per image, the difference averaged over the set's runs (seeds)."""
        return self.x.mean(axis=0)

    def image_variance(self) -> float:
        """Variance of the set's weighted mean over resampled images (closed form of the bootstrap's,
        with the n / (n - 1) correction)."""
        n = self.w.size
        if n < 2:
            return 0.0
        d = self.image_means()
        mean = float(d @ self.w / self.total)
        return float(np.sum(self.w**2 * (d - mean) ** 2) / self.total**2 * n / (n - 1))


    def interaction_variance(self) -> float:
        """The run-by-image noise (two-way ANOVA residual) in the variance of the mean over runs of the
        per-run differences: subtracted from it to leave the training noise alone, since
        :meth:`image_variance` already holds it."""
        n_runs, n = self.x.shape
        if n_runs < 2 or n < 2:
            return 0.0
        resid = (self.x - self.x.mean(axis=0, keepdims=True) - self.x.mean(axis=1, keepdims=True) + self.x.mean())
        per_image = (resid**2).sum(axis=0) / (n_runs - 1) * n / (n - 1)
        return float(np.sum(self.w**2 * per_image) / self.total**2 / n_runs)


def test_sets(runs: Sequence[PairedRun]) -> list[TestSet]:
    """The runs grouped by test set (order of first appearance); ValueError on mismatched images."""
    if not runs:
        raise ValueError("no paired runs to compare")
    order: dict[str, list[PairedRun]] = {}
    for run in runs:
        order.setdefault(run.test_set, []).append(run)
    sets = []
    for name, members in order.items():
        first = members[0]
        if len(first.keys) == 0:
            raise ValueError(f"test set {name!r} holds no images")
        for other in members[1:]:
            if other.keys != first.keys:
                raise ValueError(f"the runs of test set {name!r} did not test the same images")
        x = np.vstack([np.asarray(r.diffs, dtype=float).ravel() for r in members])
        if x.shape[1] != len(first.keys):
            raise ValueError(f"test set {name!r}: {x.shape[1]} differences for {len(first.keys)} image keys")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"test set {name!r}: the differences hold NaN or infinite values")
        w = np.ones(x.shape[1]) if first.weights is None else np.asarray(first.weights, dtype=float).ravel()
        if w.shape != (x.shape[1],) or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
            raise ValueError(f"test set {name!r}: weights must be one non-negative number per image, not all 0")
        sets.append(TestSet(x, w))
    return sets


@dataclass(frozen=True)
class Posterior:
    """The verdict's Student-t distribution of the difference: centre, scale (standard error), df."""

    mean: float
    se: float
    df: float
    method: str

    def interval(self, level: float) -> tuple[float, float]:
        if self.se == 0:
            return self.mean, self.mean
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * self.se
        return self.mean - half, self.mean + half

    def p_value(self) -> float:
        """Two-sided p of 'no difference'."""
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.mean) / self.se, self.df))

    def probabilities(self, rope: float) -> tuple[float, float, float]:
        """P(diff < -rope), P(|diff| <= rope), P(diff > rope)."""
        if self.se == 0:
            left, right = float(self.mean < -rope), float(self.mean > rope)
            return left, 1.0 - left - right, right
        left = float(stats.t.cdf(-rope, self.df, self.mean, self.se))
        right = float(stats.t.sf(rope, self.df, self.mean, self.se))
        return left, max(0.0, 1.0 - left - right), right


Runs = Sequence[PairedRun] | Sequence[TestSet]  # paired runs, or the test sets already built from them


def _sets(runs: Runs) -> list[TestSet]:
    """The test sets of ``runs`` (built once by compare_pair and handed to every statistic)."""
    return list(runs) if runs and isinstance(runs[0], TestSet) else test_sets(runs)  # type: ignore[arg-type]


def posterior(runs: Runs) -> Posterior:
    """The verdict's distribution of ``MAE(a) - MAE(b)`` for this design (see the module docstring)."""
    sets = _sets(runs)
    total = sum(s.total for s in sets)
    mean = sum(s.total * float(s.run_means().mean()) for s in sets) / total
    run_means = np.concatenate([s.run_means() for s in sets])
    n_runs = run_means.size
    if n_runs == 1:
        return Posterior(mean, math.sqrt(sets[0].image_variance()), max(1, sets[0].w.size - 1), "images only")
    if all(s.x.shape[0] >= 2 for s in sets):
        run_var = img_var = 0.0
        for s in sets:
            share = (s.total / total) ** 2
            run_var += share * max(0.0, float(np.var(s.run_means(), ddof=1)) / s.x.shape[0]
                                    - s.interaction_variance())
            img_var += share * s.image_variance()
        df = _quadrature_df(run_var, img_var, sum(s.x.shape[0] - 1 for s in sets))
        return Posterior(mean, math.sqrt(run_var + img_var), df, "hybrid t")
    shares = np.array([s.total / total for s in sets])
    set_means = np.array([float(s.run_means().mean()) for s in sets])
    var = float(np.var(set_means, ddof=1)) * float(np.sum(shares**2))
    return Posterior(mean, math.sqrt(var), set_means.size - 1, "t over test sets")


def _quadrature_df(run_var: float, img_var: float, run_df: int, level: float = 0.95) -> float:
    """Degrees of freedom of the hybrid t: those whose quantile times the total standard error equals
    the two half-widths added in quadrature, the seeds' part with a t on ``run_df`` degrees of freedom
    and the images' part with a normal quantile. Between ``run_df`` (seed noise dominates) and
    effectively infinite (image noise dominates). Welch-Satterthwaite degrees of freedom, estimated
    from 2-4 seeds, covered less than 95% in the simulations: a small between-seed variance drawn by
    chance also raised the degrees of freedom, narrowing the interval twice."""
    total = run_var + img_var
    if total <= 0:
        return float(run_df)
    q_t, q_z = float(stats.t.ppf(0.5 + level / 2, run_df)), float(stats.norm.ppf(0.5 + level / 2))
    target = math.sqrt(q_t**2 * run_var + q_z**2 * img_var) / math.sqrt(total)
    if target >= q_t:
        return float(run_df)
    if target <= float(stats.t.ppf(0.5 + level / 2, 1e6)):
        return 1e6
    p = 0.5 + level / 2
    return float(optimize.brentq(lambda df: special.stdtrit(df, p) - target, run_df, 1e6, rtol=1e-6))


def runs_interval(runs: Runs, level: float = 0.95) -> tuple[float, float] | None:
    """t interval over the per-run differences (training noise); None with one run."""
    means = np.concatenate([s.run_means() for s in _sets(runs)])
    if means.size < 2:
        return None
    centre, se = float(means.mean()), float(np.std(means, ddof=1) / math.sqrt(means.size))
    if se == 0:
        return centre, centre
    half = float(stats.t.ppf(0.5 + level / 2, means.size - 1)) * se
    return centre - half, centre + half


def images_interval(runs: Runs, level: float = 0.95, n_resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap over test images of the weighted mean of the seed-averaged differences,
    runs held fixed (test-set noise only)."""
    sets = _sets(runs)
    d = np.concatenate([s.image_means() for s in sets])
    w = np.concatenate([s.w for s in sets])
    if d.size < 2 or np.all(d == d[0]):
        mean = float(d @ w / w.sum())
        return mean, mean
    batch = max(1, min(n_resamples, 4_000_000 // d.size))
    result = stats.bootstrap((d, w), _weighted_mean, paired=True, vectorized=True, n_resamples=n_resamples,
                             batch=batch, confidence_level=level, method="percentile",
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)


def _weighted_mean(d: np.ndarray, w: np.ndarray, axis: int = -1) -> np.ndarray:
    total = np.sum(w, axis=axis)
    return np.sum(d * w, axis=axis) / np.where(total > 0, total, 1.0)


def two_level_bootstrap_interval(runs: Sequence[PairedRun], level: float = 0.95, n_resamples: int = 2000,
                                 seed: int = 0) -> tuple[float, float]:
    """Two-level percentile bootstrap (unweighted): resample the runs with replacement, then the images
    of each test set (the same draw for every run of that set, since its seeds share the images).

    Kept for comparison: with 3-5 runs it has few distinct resamples and runs narrow, so verdicts use
    :func:`posterior` instead (benchmarks/verdict_calibration.py measures both)."""
    sets = test_sets(runs)
    rng = np.random.default_rng(seed)
    per_run = []  # (B, runs of the set): each run's mean over its set's resampled images
    for s in sets:
        n = s.x.shape[1]
        image_counts = rng.multinomial(n, np.full(n, 1 / n), size=n_resamples) / n
        per_run.append(image_counts @ s.x.T)
    per_run_all = np.hstack(per_run)
    picks = rng.integers(0, per_run_all.shape[1], size=per_run_all.shape)
    means = np.take_along_axis(per_run_all, picks, axis=1).mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels' multipletests); None stays None."""
    from statsmodels.stats.multitest import multipletests

    present = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if present:
        adjusted = multipletests([p_values[i] for i in present], method="holm")[1]
        for i, p in zip(present, adjusted, strict=True):
            out[i] = float(p)
    return out


def decide(ci: Sequence[float], diff: float, p_adjusted: float, rope: float, alpha: float = 0.05) -> str:
    """``equivalent`` when the whole interval lies inside +-rope; else ``a lower`` / ``b lower`` when the
    adjusted p is below alpha (by the sign of the difference); else ``undecided``."""
    low, high = float(ci[0]), float(ci[1])
    if rope > 0 and -rope < low and high < rope:
        return "equivalent"
    if p_adjusted < alpha:
        return "a lower" if diff < 0 else "b lower"
    return "undecided"


def compare_pair(name_a: str, name_b: str, runs: Sequence[PairedRun], *, rope: float = 0.1, folds: int = 0,
                 level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every statistic of one pair, before the Holm step (``finish_pairs`` adds p_holm and the verdict).

    Keys: a, b, mae_diff, ci, ci_images, ci_runs, ci_corrected (folds: the Nadeau-Bengio interval), ci_method,
    se, df, p_value, rope, p_a_lower,
    p_equivalent, p_b_lower, probabilities, n_images, n_runs, n_test_sets, training_noise.
    """
    if not (math.isfinite(rope) and rope >= 0):
        raise ValueError(f"rope must be a number >= 0 (years), got {rope!r}")
    sets = test_sets(runs)  # built once for every statistic below
    post = posterior(sets)
    probs = post.probabilities(rope)
    source = "Student t of the interval (flat prior)"
    ci_corrected = None
    if folds >= 2 and len(sets) >= 2:
        probs, ci_corrected = _baycomp_correlated(sets, folds, rope, level)
        source = "baycomp correlated t-test (Nadeau-Bengio)"
    ci = post.interval(level)
    ci_runs = runs_interval(sets, level)
    return {
        "a": name_a, "b": name_b, "mae_diff": post.mean, "ci": [ci[0], ci[1]],
        "ci_images": list(images_interval(sets, level, n_resamples, seed)),
        "ci_runs": None if ci_runs is None else list(ci_runs), "ci_corrected": ci_corrected,
        "ci_method": post.method, "se": post.se, "df": post.df, "p_value": post.p_value(), "rope": rope,
        "p_a_lower": probs[0], "p_equivalent": probs[1], "p_b_lower": probs[2], "probabilities": source,
        "n_images": int(sum(s.x.shape[1] for s in sets)), "n_runs": int(sum(s.x.shape[0] for s in sets)),
        "n_test_sets": len(sets), "training_noise": post.method != "images only",
    }


def _baycomp_correlated(sets: list[TestSet], folds: int, rope: float, level: float
                        ) -> tuple[tuple[float, float, float], list[float]]:
    """baycomp's correlated t-test on the per-run differences: (P(a lower), P(equivalent), P(b lower))
    and its ``level`` credible interval, the Nadeau-Bengio corrected t interval."""
    import baycomp

    diffs = np.concatenate([s.run_means() for s in sets])
    repeats = max(1, diffs.size // folds) if diffs.size % folds == 0 else 1
    post = baycomp.CorrelatedTTest(np.zeros_like(diffs), diffs, rope=rope, runs=repeats)
    probs = post.probs()
    left, middle, right = (probs[0], 0.0, probs[1]) if rope == 0 else probs
    interval = Posterior(float(post.mean), math.sqrt(float(post.var)), float(post.df), "correlated t").interval(level)
    return (float(left), float(middle), float(right)), [interval[0], interval[1]]


def finish_pairs(rows: list[dict[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Holm over the pairs compared together, then each pair's verdict and its sentence (in place)."""
    adjusted = holm([r.get("p_value") for r in rows])
    for row, p in zip(rows, adjusted, strict=True):
        row["p_holm"] = p
        if p is None:
            continue
        state = decide(row["ci"], row["mae_diff"], p, row["rope"], alpha)
        if not row["training_noise"] and state != "undecided":
            state += ONE_RUN
        row["verdict"] = state
        row["verdict_text"] = verdict_text(row)
    return rows


def verdict_text(row: Mapping[str, Any]) -> str:
    """One line: ``a - b: -0.15 years [-0.30, +0.02]: undecided (P(a lower) 0.62, ...)``, with the
    methods' names, and for one run each the note that seed noise was not measured."""
    a, b = row["a"], row["b"]
    said = named_verdict(row)
    if row["verdict"].removesuffix(ONE_RUN) == "equivalent":
        said += f" (within ±{row['rope']:g} years)"
    probs = (f"P({a} lower) {row['p_a_lower']:.2f}, P(equivalent) {row['p_equivalent']:.2f}, "
             f"P({b} lower) {row['p_b_lower']:.2f}")
    text = (f"{a} - {b}: {signed(row['mae_diff'])} years [{signed(row['ci'][0])}, {signed(row['ci'][1])}]: "
            f"{said} ({probs})")
    if not row["training_noise"]:
        text += "; one run each, seed noise not measured"
    return text
