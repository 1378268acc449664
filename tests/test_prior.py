"""Prior correction (label shift): reweighting, EM, effective training prior, decoders, prior files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ordinalage.data.sampling import class_weights, sampler_weights
from ordinalage.errors import UsageError
from ordinalage.evaluation.estimate import estimate_prior_for
from ordinalage.groups import AgeGroups
from ordinalage.posterior.prior import (
    decode_age,
    effective_train_prior,
    em_prior,
    em_seconds_per_10k,
    group_proba_from_labels,
    residual_distribution,
    reweight,
    smoothing_matrix,
    synthetic_shift,
)
from ordinalage.posterior.prior_files import read_prior, write_prior
from ordinalage.reporting.plots import plot_prior

AGES = np.arange(0, 81, dtype=float)


def tv(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(np.abs(np.asarray(a) - np.asarray(b)).sum())


def test_em_recovers_a_known_shift_better_with_more_images():
    errors = {}
    for n in (500, 20_000):
        proba, source, labels = synthetic_shift(n, 81, seed=3)
        empirical = np.bincount(labels, minlength=81) / n
        est = em_prior(proba, source, smooth=1.0)
        assert est.converged and est.n_iter < 1000
        assert est.prior.shape == (81,) and np.isclose(est.prior.sum(), 1.0) and (est.prior >= 0).all()
        errors[n] = tv(est.prior, empirical)
        assert errors[n] < 0.5 * tv(source, empirical)  # much closer to the target than the training mix
    assert errors[20_000] < errors[500]
    assert errors[20_000] < 0.04


def test_em_without_shift_stays_at_the_source_prior():
    # images drawn from the source itself: EM should barely move
    rng = np.random.default_rng(0)
    source = np.array([0.2, 0.5, 0.3])
    labels = rng.choice(3, size=20_000, p=source)
    lik = np.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7]])  # P(observation | label)
    obs = np.array([rng.choice(3, p=lik[y]) for y in labels])
    post = lik[:, obs].T * source
    post /= post.sum(axis=1, keepdims=True)
    est = em_prior(post, source, smooth=0)
    assert tv(est.prior, source) < 0.03


def test_em_with_smoothing_converges_and_stays_a_distribution():
    proba, source, _ = synthetic_shift(2000, 81, seed=5)
    for smooth in (0.5, 2.0, 5.0):
        est = em_prior(proba, source, smooth=smooth, label_ages=AGES)
        assert est.converged
        assert np.isclose(est.prior.sum(), 1.0) and (est.prior > 0).all() and np.isfinite(est.prior).all()
        assert len(est.log_likelihood) == est.n_iter
    # the iteration cap is honoured and reported
    capped = em_prior(proba, source, smooth=0, max_iter=3)
    assert capped.n_iter == 3 and not capped.converged


def test_smoothing_matrix_conserves_mass_at_the_ends():
    k = smoothing_matrix(10, 2.0)
    assert np.allclose(k.sum(axis=0), 1.0)
    assert smoothing_matrix(10, 0.0) is None
    with pytest.raises(ValueError):
        smoothing_matrix(10, -1.0)


def test_reweight_with_the_training_prior_changes_nothing():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(81), size=50)
    source = rng.dirichlet(np.ones(81))
    assert np.allclose(reweight(proba, source, source), proba)
    assert np.allclose(reweight(proba, source, 7 * source), proba)  # priors need not be normalised


def test_reweight_formula_and_zero_mass_without_nan():
    proba = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    out = reweight(proba, [0.5, 0.25, 0.25], [0.25, 0.25, 0.5])
    expected = np.array([[0.25, 0.5, 0.0], [0.1, 0.3, 1.0]])
    assert np.allclose(out, expected / expected.sum(axis=1, keepdims=True))
    # zero source mass: ratio 1 there; identity still holds
    source = np.array([0.5, 0.5, 0.0])
    assert np.allclose(reweight(proba, source, source), proba)
    # a row entirely on labels the target rules out comes back unchanged
    out = reweight(np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]), [1, 1, 1], [1, 0, 1])
    assert np.isfinite(out).all()
    assert np.allclose(out, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_decode_mean_median_mode_on_a_hand_example():
    ages = np.array([10.0, 20.0, 30.0, 40.0])
    proba = np.array([[0.4, 0.0, 0.1, 0.5],    # mean 27, median 30 (CDF 0.4, 0.4, 0.5), mode 40
                      [0.1, 0.6, 0.2, 0.1]])   # mean 23, median 20, mode 20
    assert np.allclose(decode_age(proba, ages, "mean"), [27.0, 23.0])
    assert np.allclose(decode_age(proba, ages, "median"), [30.0, 20.0])
    assert np.allclose(decode_age(proba, ages, "mode"), [40.0, 20.0])
    with pytest.raises(UsageError, match="decoder"):
        decode_age(proba, ages, "average")


def test_group_proba_from_labels_sums_years_into_groups():
    groups = AgeGroups.parse("0-10,11-20,21+")
    ages = np.arange(0, 31, dtype=float)
    proba = np.zeros((1, 31))
    proba[0, [5, 10, 11, 25, 30]] = [0.1, 0.2, 0.3, 0.25, 0.15]
    assert np.allclose(group_proba_from_labels(proba, ages, groups), [[0.3, 0.3, 0.4]])
    # years below the first group count for it
    groups = AgeGroups.parse("5-10,11-30")
    assert np.allclose(group_proba_from_labels(proba, ages, groups), [[0.3, 0.7]])


def test_effective_train_prior_with_weighted_sampler_on_a_hand_example():
    # six training records, two age groups (0-1, 2-3), years 0..3; counts per group 4 and 2
    groups = AgeGroups.parse("0-1,2-3")
    ages = np.array([0, 0, 0, 1, 2, 3], dtype=float)
    gidx = groups.indices(ages)
    sw = sampler_weights(gidx, 2)  # 1/4 per record of group 0, 1/2 per record of group 1
    prior = effective_train_prior(ages.astype(int), 4, sample_weights=sw, floor=0.0)
    assert np.allclose(prior, [0.375, 0.125, 0.25, 0.25])  # the sampler balances the two groups
    # no sampler: the raw counts; the floor keeps an unseen year above zero
    assert np.allclose(effective_train_prior(ages.astype(int), 4, floor=0.0), [3 / 6, 1 / 6, 1 / 6, 1 / 6])
    floored = effective_train_prior(np.array([0, 0, 1]), 3, floor=0.5)
    assert np.allclose(floored, np.array([2.5, 1.5, 0.5]) / 4.5)
    # class weights multiply through the group index: balanced weights balance the groups too
    cw = class_weights(gidx, 2)
    prior = effective_train_prior(ages.astype(int), 4, class_weights=cw, group_idx=gidx, floor=0.0)
    assert np.allclose(prior, [0.375, 0.125, 0.25, 0.25])
    with pytest.raises(ValueError, match="group_idx"):
        effective_train_prior(ages.astype(int), 4, class_weights=cw)


def test_effective_train_prior_with_label_distributions_spreads_like_the_soft_targets():
    import torch

    from ordinalage.models.heads import gaussian_label_distribution

    labels = np.array([1, 1, 1, 5, 9])
    expected = gaussian_label_distribution(torch.tensor(labels, dtype=torch.float32), 11, 2.0).double().numpy().mean(0)
    prior = effective_train_prior(labels, 11, label_sigma=2.0, floor=0.0)
    assert np.allclose(prior, expected, atol=1e-6)
    assert prior[0] > 0.05  # the unseen year 0 next to three 1-year-olds gets the mass the model learnt there


def test_residual_distribution_is_a_distribution_that_follows_the_prediction():
    rng = np.random.default_rng(2)
    true = rng.uniform(0, 80, size=400)
    pred = 0.7 * true + 12 + rng.normal(0, 3, size=400)  # regression toward the middle
    dist = residual_distribution(pred, true, AGES)
    out = dist(np.array([20.0, 40.0, 60.0, -5.0, 200.0]))
    assert out.shape == (5, 81) and np.allclose(out.sum(axis=1), 1.0) and (out > 0).all()
    means = decode_age(out[:3], AGES, "mean")
    assert means[0] < means[1] < means[2]
    # conditional residuals undo the pull toward the middle: a prediction of 60 means about (60-12)/0.7
    assert abs(means[2] - (60 - 12) / 0.7) < 4.0
    assert np.isclose(dist.source_prior.sum(), 1.0) and dist.source_prior.shape == (81,)
    plain = residual_distribution(pred, true, AGES, conditional=False)(np.array([60.0]))
    assert abs(decode_age(plain, AGES, "mean")[0] - (60 - 12) / 0.7) > abs(means[2] - (60 - 12) / 0.7)


def test_read_prior_csv(tmp_path):
    f = tmp_path / "mix.csv"
    f.write_text("age,weight\n0,2\n1,1\n\n3,1\n", encoding="utf-8")
    prior = read_prior(f, np.arange(4.0), floor=0.0)
    assert np.allclose(prior, [0.5, 0.25, 0.0, 0.25])
    floored = read_prior(f, np.arange(4.0))
    assert (floored > 0).all() and np.isclose(floored.sum(), 1.0)


def test_read_prior_csv_of_years_for_a_group_model(tmp_path):
    groups = AgeGroups.parse("0-10,11-20,21+")
    f = tmp_path / "mix.csv"
    f.write_text("age,weight\n5,1\n10,1\n15,2\n90,4\n", encoding="utf-8")
    assert np.allclose(read_prior(f, np.arange(3.0), floor=0.0, groups=groups), [0.25, 0.25, 0.5])
    f.write_text("age,weight\n5,1\n10.5,1\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"line 3: age 10.5 is not a whole year inside the model's age groups"):
        read_prior(f, np.arange(3.0), groups=groups)


@pytest.mark.parametrize("text, message", [
    ("age,weight\n0,1\n1,-2\n", r"line 3: weight -2 for age 1 is negative"),
    ("age,weight\n", r"line 2: no rows"),
    ("age,weight\n0,1\n\n120,1\n", r"line 4: age 120 is outside the model's range"),
    ("age,weight\n0,1\n2.5,1\n", r"line 3: age 2.5 is not one of the model's labels"),
    ("age,weight\n0,one\n", r"line 2: weight 'one' is not a number"),
    ("age,share\n0,1\n", r"line 1: the header must name .*missing: weight"),
    ("age,weight\n0,1\n0,2\n", r"line 3: age 0 was already given \(line 2\)"),
    ("age,weight\n0,0\n", r"all weights are 0"),
    ("", r"line 1: empty file"),
])
def test_read_prior_csv_errors_name_the_file_and_line(tmp_path, text, message):
    f = tmp_path / "mix.csv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=message) as info:
        read_prior(f, np.arange(81.0))
    assert str(f) in str(info.value)


def test_prior_json_round_trip(tmp_path):
    prior = np.random.default_rng(4).dirichlet(np.ones(81))
    out = write_prior(tmp_path / "sub" / "prior.json", prior, AGES, {"n_images": np.int64(12), "smooth": 1.0})
    obj = json.loads(out.read_text())
    assert obj["ages"][:3] == [0, 1, 2] and obj["meta"]["n_images"] == 12
    assert np.allclose(read_prior(out, AGES, floor=0.0), prior)
    assert [p.name for p in out.parent.iterdir()] == ["prior.json"]  # no temporary file left behind
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ages": [0, 1, 500], "weight": [1, 1, 1]}))
    with pytest.raises(UsageError, match=r"entry 2: age 500 is outside"):
        read_prior(bad, AGES)
    bad.write_text("{\n  \"ages\": [0,\n")
    with pytest.raises(UsageError, match=r"bad.json, line \d+: not valid JSON"):
        read_prior(bad, AGES)
    with pytest.raises(UsageError, match="no such file"):
        read_prior(tmp_path / "missing.csv", AGES)


def test_estimate_prior_for_writes_json_and_png(tmp_path):
    proba, source, _ = synthetic_shift(1000, 81, seed=6)
    est = estimate_prior_for(proba, AGES, source, tmp_path / "prior.json", tmp_path / "prior.png", smooth=1.0)
    assert est.converged
    obj = json.loads((tmp_path / "prior.json").read_text())
    assert obj["meta"]["n_images"] == 1000 and obj["meta"]["method"] == "em"
    assert np.allclose(read_prior(tmp_path / "prior.json", AGES, floor=0.0), est.prior)
    assert (tmp_path / "prior.png").read_bytes()[:4] == b"\x89PNG"
    plot_prior(tmp_path / "p2.png", AGES, est.prior, train=source, true=source)
    assert (tmp_path / "p2.png").stat().st_size > 0


def test_em_seconds_per_10k_reports_its_measurement():
    out = em_seconds_per_10k(n=500, n_labels=21)
    assert out["seconds_per_10k"] > 0 and out["converged"] and out["n"] == 500
