"""Verdict statistics (ordinalage.evaluation.verdicts) against simulated bake-offs with a known answer."""

from __future__ import annotations

import gc
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from ordinalage.evaluation.simulate import simulate_errors, simulated_pair
from ordinalage.evaluation.verdicts import (
    PairedRun,
    compare_pair,
    decide,
    finish_pairs,
    holm,
    images_interval,
    posterior,
    runs_interval,
    two_level_bootstrap_interval,
)

TRUE = 0.2


def _coverage(reps: int, *, runs: int, images: int, run_sd: float, folds: int = 0, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        errors, names, index = simulate_errors([TRUE, 0.0], runs=runs, images=images, run_sd=run_sd, folds=folds,
                                               rng=rng)
        low, high = posterior(simulated_pair(errors, names, index, 0, 1)).interval(0.95)
        hits += low <= TRUE <= high
    return hits / reps


@pytest.mark.parametrize(("runs", "images", "run_sd", "folds"), [
    (3, 1000, 0.1, 0),   # three seeds on one test set: training noise and shared image noise alike
    (3, 1000, 0.0, 0),   # no training noise: the interval must not balloon into over-coverage
    (5, 2000, 0.1, 5),   # five folds, one seed each
])
def test_verdict_interval_covers_the_true_difference(runs, images, run_sd, folds):
    # 600 simulated bake-offs: the coverage's sampling SD is ~0.9%, so [93%, 97%] is ~ +-2.2 SD around 95%
    assert 0.93 <= _coverage(600, runs=runs, images=images, run_sd=run_sd, folds=folds) <= 0.97


def test_image_only_interval_under_covers_when_seeds_differ():
    rng = np.random.default_rng(3)
    hits_images = hits_verdict = 0
    reps = 300
    for rep in range(reps):
        errors, names, index = simulate_errors([TRUE, 0.0], runs=3, images=400, run_sd=0.15, rng=rng)
        runs = simulated_pair(errors, names, index, 0, 1)
        low, high = images_interval(runs, n_resamples=200, seed=rep)
        hits_images += low <= TRUE <= high
        low, high = posterior(runs).interval(0.95)
        hits_verdict += low <= TRUE <= high
    assert hits_images / reps < 0.85  # conditional on the trained models: names winners that are not
    assert hits_verdict / reps > 0.92


def test_no_false_winners_after_holm_when_four_methods_are_equal():
    rng = np.random.default_rng(5)
    reps, lower, any_lower = 600, 0, 0
    gc.freeze()  # statsmodels' multipletests runs gc.collect() on every call: keep that cheap here
    for _ in range(reps):
        errors, names, index = simulate_errors([0.0] * 4, runs=3, images=600, run_sd=0.1, rng=rng)
        posts = [posterior(simulated_pair(errors, names, index, a, b)) for a, b in itertools.combinations(range(4), 2)]
        verdicts = [decide(p.interval(0.95), p.mean, p_holm, rope=0.1)
                    for p, p_holm in zip(posts, holm([p.p_value() for p in posts]), strict=True)]
        hits = sum(v in ("a lower", "b lower") for v in verdicts)
        lower += hits
        any_lower += hits > 0
    assert lower / (6 * reps) <= 0.05  # the rate of "lower" verdicts among the pairs
    gc.unfreeze()
    assert any_lower / reps <= 0.075  # family-wise: 5% nominal, measured 5-6% (sampling SD ~0.9%)


def test_a_real_difference_is_found_and_a_tiny_one_is_called_equivalent():
    rng = np.random.default_rng(7)
    found = equivalent = 0
    for _ in range(60):
        errors, names, index = simulate_errors([0.6, 0.0, 0.01], runs=5, images=3000, run_sd=0.05, rng=rng)
        rows = finish_pairs([compare_pair("a", "b", simulated_pair(errors, names, index, 0, 1), n_resamples=20),
                             compare_pair("b", "c", simulated_pair(errors, names, index, 1, 2), rope=0.25,
                                          n_resamples=20)])
        found += rows[0]["verdict"] == "b lower"
        equivalent += rows[1]["verdict"] == "equivalent"
    assert found >= 57
    assert equivalent >= 48


def test_two_level_bootstrap_runs_narrow_with_three_seeds():
    # why verdicts use the hybrid t: with 3 runs the resampled run means take few values
    rng = np.random.default_rng(11)
    hits = 0
    reps = 300
    for rep in range(reps):
        errors, names, index = simulate_errors([TRUE, 0.0], runs=3, images=300, run_sd=0.5, rng=rng)
        low, high = two_level_bootstrap_interval(simulated_pair(errors, names, index, 0, 1), n_resamples=300,
                                                 seed=rep)
        hits += low <= TRUE <= high
    assert hits / reps < 0.88


# ----------------------------------------------------------------------------- known answers


def _run(test_set: str, diffs, weights=None) -> PairedRun:
    diffs = np.asarray(diffs, dtype=float)
    return PairedRun(test_set, tuple(f"i{j}" for j in range(diffs.size)), diffs,
                     None if weights is None else np.asarray(weights, dtype=float))


def test_one_run_uses_the_images_and_says_seed_noise_was_not_measured():
    rows = finish_pairs([compare_pair("A", "B", [_run("t", np.linspace(-3.0, -1.0, 50))])])
    row = rows[0]
    assert row["ci_method"] == "images only" and row["training_noise"] is False
    assert row["verdict"] == "a lower on these test images"
    assert "seed noise not measured" in row["verdict_text"] and row["verdict_text"].startswith("A - B: -2.00")


def test_runs_interval_is_the_t_interval_over_run_means():
    runs = [_run("t", [1.0, 1.0]), _run("t", [2.0, 2.0]), _run("t", [3.0, 3.0])]
    low, high = runs_interval(runs)
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (low, high) == pytest.approx((2 - half, 2 + half))


def test_t_over_test_sets_for_folds_with_one_seed_each():
    runs = [_run(f"fold{k}", [v, v]) for k, v in enumerate([0.1, 0.3, 0.2, 0.4])]
    post = posterior(runs)
    assert post.method == "t over test sets" and post.df == 3
    assert post.mean == pytest.approx(0.25)
    assert post.se == pytest.approx(np.std([0.1, 0.3, 0.2, 0.4], ddof=1) / 2)


def test_weights_standardise_the_mean_to_an_age_mix():
    diffs, weights = [1.0, 1.0, 1.0, -3.0], [1 / 3, 1 / 3, 1 / 3, 1.0]  # 3 images of one group, 1 of another
    post = posterior([_run("t", diffs, weights), _run("t", np.add(diffs, 0.1), weights)])
    assert post.mean == pytest.approx((1.0 - 3.0) / 2 + 0.05)


def test_folds_take_their_probabilities_from_baycomp():
    import baycomp

    values = [-0.3, -0.1, -0.25, -0.2, -0.15]
    runs = [_run(f"f{k}", [v - 1, v + 1]) for k, v in enumerate(values)]
    row = compare_pair("A", "B", runs, rope=0.1, folds=5, n_resamples=50)
    left, rope, right = baycomp.two_on_single(np.zeros(5), np.array(values), rope=0.1)
    assert (row["p_a_lower"], row["p_equivalent"], row["p_b_lower"]) == pytest.approx((left, rope, right))
    assert "baycomp" in row["probabilities"] and row["p_a_lower"] > 0.5  # every fold had a lower
    # the Nadeau-Bengio interval: var * (1/5 + 1/4), t on 4 degrees of freedom, wider than the plain t
    half = stats.t.ppf(0.975, 4) * math.sqrt(np.var(values, ddof=1) * (1 / 5 + 1 / 4))
    assert row["ci_corrected"] == pytest.approx([np.mean(values) - half, np.mean(values) + half])
    assert row["ci_corrected"][1] - row["ci_corrected"][0] > row["ci"][1] - row["ci"][0]


def test_decide_and_holm():
    assert decide([-0.05, 0.08], 0.01, 0.6, rope=0.1) == "equivalent"
    assert decide([-0.3, -0.1], -0.2, 0.01, rope=0.1) == "a lower"
    assert decide([0.1, 0.3], 0.2, 0.01, rope=0.1) == "b lower"
    assert decide([0.1, 0.3], 0.2, 0.2, rope=0.1) == "undecided"  # Holm took the win away
    assert decide([-0.05, 0.05], 0.0, 0.9, rope=0.0) == "undecided"  # no rope: no equivalence
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06], nan_ok=True)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="rope"):
        compare_pair("A", "B", [_run("t", [1.0, 2.0])], rope=-0.1)
    with pytest.raises(ValueError, match="same images"):
        posterior([_run("t", [1.0, 2.0]), PairedRun("t", ("x", "y"), np.array([1.0, 2.0]))])
    with pytest.raises(ValueError, match="no paired runs"):
        posterior([])


def test_planner_predicts_the_interval_a_design_will_give():
    from ordinalage.comparison.planner import halfwidth_folds, halfwidth_seeds, noise_components

    rng = np.random.default_rng(13)
    errors, names, index = simulate_errors([0.0, 0.0], runs=12, images=1500, run_sd=0.2, rng=rng)
    pilot = noise_components(simulated_pair(errors, names, index, 0, 1))
    assert pilot is not None and pilot["run_var"] == pytest.approx(2 * 0.2**2, rel=0.6)  # a difference of two runs
    widths_seeds, widths_folds = [], []
    for _ in range(150):
        errors, names, index = simulate_errors([0.0, 0.0], runs=4, images=1500, run_sd=0.2, rng=rng)
        low, high = posterior(simulated_pair(errors, names, index, 0, 1)).interval(0.95)
        widths_seeds.append((high - low) / 2)
        errors, names, index = simulate_errors([0.0, 0.0], runs=5, images=1500, run_sd=0.2, folds=5, rng=rng)
        low, high = posterior(simulated_pair(errors, names, index, 0, 1)).interval(0.95)
        widths_folds.append((high - low) / 2)
    assert halfwidth_seeds(pilot, 4, 1500) == pytest.approx(np.mean(widths_seeds), rel=0.35)
    assert halfwidth_folds(pilot, 5, 1, 1500) == pytest.approx(np.mean(widths_folds), rel=0.35)
    assert noise_components([_run("t", [0.1, 0.2, 0.3])]) is None  # one run: training noise unknown


# ------------------------------------------------------------------------------------- age mix


def test_age_mix_weights_give_each_group_its_share():
    from ordinalage.evaluation.pairing import mix_weights
    from ordinalage.groups import AgeGroups

    groups = AgeGroups.parse("0-10,11-20,21-30")
    ages = np.array([5, 5, 5, 15, 25, 25])
    diffs = np.array([1.0, 1.0, 1.0, -2.0, 0.5, 0.5])  # group means: 1.0, -2.0, 0.5
    w = mix_weights(ages, groups, np.full(3, 1 / 3))
    assert float(diffs @ w / w.sum()) == pytest.approx((1.0 - 2.0 + 0.5) / 3)
    w = mix_weights(ages, groups, np.array([0.0, 0.0, 1.0]))
    assert float(diffs @ w / w.sum()) == pytest.approx(0.5)
    assert mix_weights(ages, groups, None) is None


def test_age_mix_from_a_prior_file_and_bad_files(tmp_path):
    from ordinalage.errors import UsageError
    from ordinalage.evaluation.pairing import check_mix, parse_age_mix
    from ordinalage.evaluation.predictions import TestErrors
    from ordinalage.groups import AgeGroups
    from ordinalage.posterior.prior_files import write_prior

    groups = AgeGroups.parse("0-10,11-20,21-30,31+")
    write_prior(tmp_path / "prior.json", np.array([1.0, 1.0, 2.0, 0.0]), np.array([3, 8, 25, 40]))
    mix = parse_age_mix(str(tmp_path / "prior.json"), groups)
    assert mix.shares.tolist() == pytest.approx([0.5, 0.0, 0.5, 0.0])  # years summed into their groups
    assert parse_age_mix("test", groups).shares is None
    assert parse_age_mix("uniform", groups).shares.tolist() == pytest.approx([0.25] * 4)
    test_set = TestErrors(("a", "b", "c"), np.zeros(3), np.array([5.0, 15.0, 35.0]))  # no one aged 21-30
    with pytest.raises(UsageError, match="21-30"):  # the file weighs a group the test set lacks
        check_mix(mix, groups, [test_set])
    uniform, dropped = check_mix(parse_age_mix("uniform", groups), groups, [test_set])
    assert dropped == ["21-30"] and uniform.shares.tolist() == pytest.approx([1 / 3, 1 / 3, 0, 1 / 3])
    (tmp_path / "neg.csv").write_text("age,weight\n5,-1\n")
    with pytest.raises(UsageError, match="negative"):
        parse_age_mix(str(tmp_path / "neg.csv"), groups)
    with pytest.raises(UsageError, match="no such file"):
        parse_age_mix(str(tmp_path / "missing.json"), groups)
