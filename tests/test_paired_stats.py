"""Paired statistics (ordinalage.evaluation.paired) and the critical-difference diagram."""

from __future__ import annotations

import math

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from ordinalage.evaluation.paired import (
    average_ranks,
    friedman_test,
    mean_std,
    nemenyi_cd,
    nemenyi_q,
    paired_bootstrap_ci,
    paired_comparison,
    paired_image_differences,
    verdict,
    wilcoxon_p,
)
from ordinalage.reporting.cd_diagram import cliques, plot_cd_diagram

# ------------------------------------------------------------------------------- bootstrap CI

TRUE_DIFF = 0.2


def _simulated_diffs(rng: np.random.Generator, n_images: int = 400) -> np.ndarray:
    """Per-image ``|err_a| - |err_b|`` with E = TRUE_DIFF exactly: correlated through a shared
    per-image difficulty, skewed (A's error noise has a heavier tail than B's)."""
    difficulty = rng.gamma(2.0, 2.5, n_images)  # mean 5 years, right-skewed
    err_a = difficulty * rng.gamma(2.0, 0.5, n_images) + TRUE_DIFF  # multiplier mean 1
    err_b = difficulty * rng.gamma(8.0, 1 / 8, n_images)  # multiplier mean 1
    return err_a - err_b


def _coverage(level: float, reps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for rep in range(reps):
        _, (low, high) = paired_bootstrap_ci(_simulated_diffs(rng), level=level, n_resamples=1000, seed=rep)
        hits += low <= TRUE_DIFF <= high
    return hits / reps


def test_bootstrap_ci_covers_the_true_difference_at_the_nominal_rate():
    # 1000 repetitions: the coverage's sampling SD is ~0.7%, so [93%, 97%] is ~ +-3 SD around 95%
    coverage = _coverage(0.95, reps=1000, seed=2024)
    assert 0.93 <= coverage <= 0.97, coverage
    # the same check fails an interval that is too narrow
    assert _coverage(0.80, reps=300, seed=7) < 0.90


def test_bootstrap_ci_shape_determinism_and_degenerate_data():
    diffs = _simulated_diffs(np.random.default_rng(0))
    mean, (low, high) = paired_bootstrap_ci(diffs, seed=3)
    assert mean == pytest.approx(diffs.mean())
    assert low < mean < high
    assert paired_bootstrap_ci(diffs, seed=3) == (mean, (low, high))
    _, (low90, high90) = paired_bootstrap_ci(diffs, level=0.90, seed=3)
    assert low < low90 < high90 < high
    assert paired_bootstrap_ci(np.full(7, 0.25)) == (0.25, (0.25, 0.25))
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap_ci(np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap_ci(np.array([1.0, np.nan]))


# --------------------------------------------------------------------------- Wilcoxon, Friedman


def test_wilcoxon_matches_scipy_and_handles_degenerate_cases():
    a = [5.10, 5.32, 4.98, 5.20, 5.05, 5.41]
    b = [5.02, 5.35, 4.80, 5.01, 4.90, 5.22]
    assert wilcoxon_p(a, b) == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-12)
    # three seeds, all in one direction: the smallest exact two-sided p is 2 / 2**3
    assert wilcoxon_p([5.1, 5.2, 5.3], [5.0, 5.0, 5.0]) == pytest.approx(0.25)
    assert wilcoxon_p([5.1], [5.0]) is None
    assert wilcoxon_p([5.1, 5.2], [5.1, 5.2]) is None
    with pytest.raises(ValueError, match="3 run MAEs but method B has 2"):
        wilcoxon_p([1, 2, 3], [1, 2])


SCORES = np.array(
    [  # rows: data sets; columns: methods (MAE, lower is better)
        [5.1, 4.9, 5.0, 5.6],
        [6.2, 6.0, 6.0, 6.8],
        [4.4, 4.5, 4.1, 4.9],
        [7.0, 6.6, 6.7, 7.3],
        [5.5, 5.2, 5.4, 5.9],
    ]
)


def test_friedman_matches_scipy():
    result = friedman_test(SCORES)
    expected = stats.friedmanchisquare(*SCORES.T)
    assert result["statistic"] == pytest.approx(expected.statistic, rel=1e-12)
    assert result["p_value"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert result["n_datasets"] == 5 and result["k_methods"] == 4
    assert result["average_ranks"] == pytest.approx(list(average_ranks(SCORES)))
    with pytest.raises(ValueError, match="at least 3 methods"):
        friedman_test(SCORES[:, :2])
    with pytest.raises(ValueError, match="at least 2 data sets"):
        friedman_test(SCORES[:1])


# ---------------------------------------------------------------------------- ranks and CD


def test_average_ranks_by_hand_with_a_tie():
    # ranks per row (1 = lowest MAE):   row 1: 3 1 2 4   row 2: 3 1.5 1.5 4 (tie)   row 3: 2 3 1 4
    #                                   row 4: 3 1 2 4   row 5: 3 1 2 4
    expected = [(3 + 3 + 2 + 3 + 3) / 5, (1 + 1.5 + 3 + 1 + 1) / 5, (2 + 1.5 + 1 + 2 + 2) / 5, 4.0]
    assert average_ranks(SCORES) == pytest.approx(expected)
    # higher is better (e.g. accuracy): the ranks reverse, k + 1 - r
    assert average_ranks(SCORES, lower_is_better=False) == pytest.approx([5 - r for r in expected])


@pytest.mark.parametrize("k,q", [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (10, 3.164)])
def test_nemenyi_q_matches_demsar_table(k, q):
    # Demsar (2006) Table 5(a), printed to 3 decimals; scipy gives 2.3437 for k = 3 where the table
    # prints 2.343 (the others agree when rounded), so compare to within one unit of the 3rd decimal
    assert nemenyi_q(k) == pytest.approx(q, abs=1e-3)


def test_nemenyi_cd_by_hand():
    # k = 4, n = 5: CD = 2.569 * sqrt(4 * 5 / (6 * 5)) = 2.569 * sqrt(2 / 3) = 2.0976
    assert nemenyi_cd(4, 5) == pytest.approx(2.569 * math.sqrt(2 / 3), abs=1e-3)
    assert nemenyi_cd(4, 5) == pytest.approx(nemenyi_q(4) * math.sqrt(4 * 5 / 30), rel=1e-12)
    with pytest.raises(ValueError):
        nemenyi_cd(1, 5)


def test_mean_std():
    assert mean_std([2.0, 4.0, 6.0]) == pytest.approx((4.0, 2.0))
    assert mean_std([3.5]) == (3.5, 0.0)


# ---------------------------------------------------------------------- per-image differences


def test_paired_image_differences_by_hand():
    # two seeds on fold 0 (images x, y), one run on fold 1 (image z); A - B per image:
    #   x: seed 1: 3 - 1 = 2, seed 2: 2 - 2 = 0 -> mean 1.0
    #   y: seed 1: 1 - 2 = -1, seed 2: 1 - 4 = -3 -> mean -2.0
    #   z: fold 1: 5 - 4.5 = 0.5
    blocks_a = [{"x": 3.0, "y": 1.0}, {"y": 1.0, "x": 2.0}, {"z": 5.0}]
    blocks_b = [{"x": 1.0, "y": 2.0}, {"x": 2.0, "y": 4.0}, {"z": 4.5}]
    assert paired_image_differences(blocks_a, blocks_b).tolist() == [1.0, -2.0, 0.5]  # sorted x, y, z
    # absolute values are taken: signed residuals give the same differences
    signed_a = [{"x": -3.0, "y": 1.0}, {"y": -1.0, "x": 2.0}, {"z": -5.0}]
    assert paired_image_differences(signed_a, blocks_b).tolist() == [1.0, -2.0, 0.5]


def test_paired_image_differences_rejects_mismatched_runs():
    with pytest.raises(ValueError, match=r"3 image keys differ.*only in A: c.*only in B: d, e"):
        paired_image_differences([{"a": 1.0, "b": 2.0, "c": 1.0}], [{"a": 1.0, "b": 2.0, "d": 1.0, "e": 1.0}])
    with pytest.raises(ValueError, match="2 runs .* has 1"):
        paired_image_differences([{"a": 1.0}, {"a": 1.0}], [{"a": 1.0}])
    with pytest.raises(ValueError, match="not a finite number"):
        paired_image_differences([{"a": float("nan")}], [{"a": 1.0}])


def test_paired_comparison_fields():
    rng = np.random.default_rng(5)
    keys = [f"img{i:03d}" for i in range(120)]
    # 3 seeds x 2 folds: folds test the first and second half of the images; A is worse by ~0.5
    blocks_a, blocks_b = [], []
    for _seed in range(3):
        for fold in (keys[:60], keys[60:]):
            b = rng.gamma(2.0, 2.5, len(fold))
            blocks_b.append(dict(zip(fold, b, strict=True)))
            blocks_a.append(dict(zip(fold, b + 0.5 + rng.normal(0, 0.3, len(fold)), strict=True)))
    result = paired_comparison("coral", "class", blocks_a, blocks_b, n_resamples=500)
    assert set(result) == {"a", "b", "mae_diff", "ci", "p_wilcoxon", "n_images", "n_runs", "verdict"}
    assert result["n_images"] == 120 and result["n_runs"] == 6
    diffs = paired_image_differences(blocks_a, blocks_b)
    assert result["mae_diff"] == pytest.approx(diffs.mean())
    low, high = result["ci"]
    assert 0 < low < result["mae_diff"] < high
    maes_a = [np.mean(list(block.values())) for block in blocks_a]
    maes_b = [np.mean(list(block.values())) for block in blocks_b]
    assert result["p_wilcoxon"] == pytest.approx(stats.wilcoxon(maes_a, maes_b).pvalue)
    assert result["verdict"].endswith(": class lower (better) MAE")


# ------------------------------------------------------------------------------------ verdict


def test_verdict_strings():
    assert (
        verdict("corn", "class", 0.12, (-0.05, 0.29))
        == "corn - class: +0.12 years [-0.05, +0.29]: no difference shown"
    )
    assert (
        verdict("coral", "class", -0.31, (-0.45, -0.17))
        == "coral - class: -0.31 years [-0.45, -0.17]: coral lower (better) MAE"
    )
    assert (
        verdict("coral", "class", 0.31, (0.17, 0.45))
        == "coral - class: +0.31 years [+0.17, +0.45]: class lower (better) MAE"
    )
    # a CI ending exactly at zero does not show a difference; -0.001 prints as +0.00
    assert verdict("a", "b", -0.001, (-0.2, 0.0)) == "a - b: +0.00 years [-0.20, +0.00]: no difference shown"


# ------------------------------------------------------------------------------- CD diagram


def test_cliques_by_hand():
    # input order: C=2.9, A=1.2, D=3.6, B=1.9, E=4.4; sorted: A 1.2, B 1.9, C 2.9, D 3.6, E 4.4
    ranks = [2.9, 1.2, 3.6, 1.9, 4.4]
    # cd = 1.0: A-B (0.7) yes, A-C (1.7) no; B-C (1.0) not < 1.0; C-D (0.7) yes, C-E (1.5) no;
    # D-E (0.8) yes -> groups {A,B}, {C,D}, {D,E}
    assert cliques(ranks, 1.0) == [(1, 3), (0, 2), (2, 4)]
    # cd = 1.8: A..C (1.7), B..D (1.7), C..E (1.5) -> three overlapping maximal groups
    assert cliques(ranks, 1.8) == [(1, 3, 0), (3, 0, 2), (0, 2, 4)]
    assert cliques(ranks, 0.5) == []
    assert cliques(ranks, 10.0) == [(1, 3, 0, 2, 4)]


def test_plot_cd_diagram_writes_a_png(tmp_path):
    names = ["class", "coral", "corn", "regression"]
    ranks = average_ranks(SCORES)
    path = tmp_path / "sub" / "cd.png"
    out = plot_cd_diagram(names, ranks, nemenyi_cd(4, 5), path, title="MAE, 5 data sets")
    assert out == tmp_path / "sub" / "cd.png"
    assert out.stat().st_size > 0
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 100
    assert image[..., :3].min() < 0.5  # something dark was drawn on the white background
    with pytest.raises(ValueError, match="3 names but 4"):
        plot_cd_diagram(names[:3], ranks, 1.0, tmp_path / "x.png")


def test_friedman_ranks_and_critical_difference_equal_autoranks():
    # the hand-written Friedman/Nemenyi (three scipy calls) is kept beside autorank, shown equal here:
    # autorank picks its own test from normality checks and warns below 5 data sets, and bake-offs
    # often have 2-4
    import warnings

    import pandas as pd
    from autorank import autorank

    rng = np.random.default_rng(0)
    scores = rng.normal(7.0, 0.3, (6, 4))
    scores[:, 0] -= 0.4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = autorank(pd.DataFrame(scores, columns=list("abcd")), alpha=0.05, verbose=False, order="ascending",
                       force_mode="nonparametric")
    assert ref.omnibus == "friedman"
    assert friedman_test(scores)["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert average_ranks(scores).tolist() == pytest.approx([ref.rankdf["meanrank"][c] for c in "abcd"])
    assert nemenyi_cd(4, 6) == pytest.approx(ref.cd, rel=1e-4)
