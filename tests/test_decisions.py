"""Decision metrics: conformal intervals, threshold error rates, bootstrap breakdowns, probability
calibration, and the report dicts. The worked examples are the ones in docs/evaluation.md."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console
from scipy.special import softmax

from ordinalage.errors import UsageError
from ordinalage.evaluation.breakdown import (
    breakdown,
    by_age,
    by_attribute,
    parse_by,
    select_attributes,
    utkface_attributes,
)
from ordinalage.evaluation.decisions import decision_metrics, headline
from ordinalage.evaluation.thresholds import THRESHOLD_KEYS, parse_thresholds, threshold_table
from ordinalage.groups import AgeGroups
from ordinalage.posterior.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    to_logproba,
)
from ordinalage.posterior.intervals import (
    Calibration,
    conformal_rank,
    conformity_scores,
    fit_conformal,
    interval_report,
    parse_level,
    predict_interval,
    predicted_cdf,
)
from ordinalage.reporting.plots import (
    decision_plots,
    plot_error_by_age,
    plot_reliability,
    plot_threshold_curve,
)
from ordinalage.reporting.tables import print_decisions

AGES = np.arange(101.0)  # single-year labels 0..100


# ---------------------------------------------------------------------------------------------
# worked examples (docs/evaluation.md)

# residual conformal: 9 validation images
CAL_TRUE = [20, 31, 40, 25, 50, 12, 33, 60, 70]
CAL_PRED = [21, 28, 40.5, 27, 44, 16, 30.5, 65, 60]  # |residuals| 1 3 0.5 2 6 4 2.5 5 10


def test_worked_residual_interval():
    cal = fit_conformal(CAL_TRUE, 0.2, cal_pred_age=CAL_PRED)
    # sorted scores 0.5 1 2 2.5 3 4 5 6 10; rank ceil(10 * 0.8) = 8 -> 6
    assert (cal.method, cal.n_cal, cal.q) == ("residual", 9, 6.0)
    lo, hi = predict_interval(cal, pred_age=[30.0, 3.0])
    assert lo.tolist() == [24.0, 0.0] and hi.tolist() == [36.0, 9.0]  # lower end clipped at age 0
    assert fit_conformal(CAL_TRUE, 0.1, cal_pred_age=CAL_PRED).q == 10.0  # rank 9 of 9
    with pytest.raises(UsageError, match=r"^interval 0.95: 9 calibration image\(s\) are too few.*at least 19"):
        fit_conformal(CAL_TRUE, 0.05, cal_pred_age=CAL_PRED)


def test_worked_cdf_interval():
    p = np.array([[0.2, 0.3, 0.5]])
    ages = [20, 21, 22]  # year a owns [a - 0.5, a + 0.5]
    assert predicted_cdf([21.0], p, ages)[0] == pytest.approx(0.35)  # 0.2 + half of 0.3
    method, s = conformity_scores([21.0], label_proba=p, label_ages=ages)
    assert method == "cdf" and s[0] == pytest.approx(0.15)
    lo, hi = predict_interval(Calibration("cdf", 0.1, 0.3, 10), label_proba=p, label_ages=ages)
    # F^-1(0.2) = 20.5, F^-1(0.8) = 21.5 + (0.8 - 0.5) / 0.5 = 22.1
    assert lo[0] == pytest.approx(20.5) and hi[0] == pytest.approx(22.1)


def test_worked_threshold_table():
    true = [10, 17, 18, 30, 16, 25]
    pred = [20, 15, 19, 17, 22, 26]
    rows = threshold_table(true, pred, [18], [18, 21, 25])
    assert [tuple(r) for r in rows] == [THRESHOLD_KEYS] * 3
    got = [(r["challenge"], r["n_under"], r["n_over"], r["false_accept"], r["false_reject"]) for r in rows]
    assert got == [(18, 3, 3, pytest.approx(2 / 3), pytest.approx(1 / 3)),
                   (21, 3, 3, pytest.approx(1 / 3), pytest.approx(2 / 3)),
                   (25, 3, 3, 0.0, pytest.approx(2 / 3))]


BD_TRUE = [20, 20, 21, 30, 40]
BD_PRED = [22, 19, 21, 35, 43]  # errors +2 -1 0 +5 +3
BD_GENDER = ["male", "female", "female", None, "male"]


def test_worked_breakdown_hand_counts():
    rows = by_age(BD_TRUE, BD_PRED, seed=0)
    got = [(r["age"], r["n"], r["bias"], r["mae"]) for r in rows]
    assert got == [(20, 2, 0.5, 1.5), (21, 1, 0.0, 0.0), (30, 1, 5.0, 5.0), (40, 1, 3.0, 3.0)]
    assert rows[1]["bias_lo"] is None  # one image: no interval
    g = by_attribute(BD_TRUE, BD_PRED, BD_GENDER, "gender")
    assert [(r["value"], r["n"], r["bias"], r["mae"]) for r in g] == [("female", 2, -0.5, 0.5), ("male", 2, 2.5, 2.5)]
    d = breakdown(BD_TRUE, BD_PRED, {"gender": BD_GENDER}, by=["gender"], min_n=2)
    gap = d["gaps"]["gender"]
    assert (gap["mae_gap"], gap["mae_high"], gap["mae_low"]) == (2.0, "male", "female")
    assert (gap["bias_gap"], gap["bias_high"], gap["bias_low"]) == (3.0, "male", "female")
    assert gap["mae_gap_lo"] <= gap["mae_gap"] <= gap["mae_gap_hi"]
    assert breakdown(BD_TRUE, BD_PRED, {"gender": BD_GENDER}, by=["gender"], min_n=3)["gaps"]["gender"] is None


def test_worked_ece_and_temperature():
    proba = [[0.9, 0.1], [0.25, 0.75], [0.62, 0.38], [0.35, 0.65]]
    labels = [0, 0, 0, 1]  # confidences .9 .75 .62 .65; correct yes no yes yes
    # bins (width 1/15): .9 -> 13, .75 -> 11, .62 and .65 -> 9
    # ECE = 1/4 |1 - .9| + 1/4 |0 - .75| + 2/4 |1 - .635| = 0.395
    assert expected_calibration_error(proba, labels) == pytest.approx(0.395)
    assert [r["n"] for r in reliability_bins(proba, labels)][9:14] == [2, 0, 1, 0, 1]
    # T = 2 takes square roots and renormalises: (.9, .1) -> (.75, .25)
    assert apply_temperature(np.log([[0.9, 0.1]]), 2.0)[0] == pytest.approx([0.75, 0.25])


# ---------------------------------------------------------------------------------------------
# conformal coverage


def _avg_coverage(seeds: int, n_cal: int, n_test: int, alpha: float, draw) -> float:
    cov = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        cal_kw, cal_y = draw(rng, n_cal)
        test_kw, test_y = draw(rng, n_test)
        cal = fit_conformal(cal_y, alpha, **{f"cal_{k}" if k != "label_ages" else k: v for k, v in cal_kw.items()})
        lo, hi = predict_interval(cal, **test_kw)
        cov.append(np.mean((lo <= test_y) & (test_y <= hi)))
    return float(np.mean(cov))


# 200 seeds of 100 calibration + 500 test images: the mean coverage has a Monte-Carlo sd of about
# 0.0023, so +-0.008 is ~3.5 sd
SEEDS, N_CAL, N_TEST, ALPHA, TOL = 200, 100, 500, 0.1, 0.008
LOWER, UPPER = 1 - ALPHA, 1 - ALPHA + 1 / (N_CAL + 1)


def _residual_draw(rng, n):
    # heteroscedastic Gaussian noise around the prediction
    pred = rng.uniform(1, 90, n)
    y = pred + rng.normal(0, 1 + pred / 20, n)
    return {"pred_age": pred}, y


def _label_proba(rng, n, spread=(1.5, 8.0)):
    centre = rng.uniform(5, 90, n)
    sd = rng.uniform(*spread, n)
    p = np.exp(-0.5 * ((AGES[None, :] - centre[:, None]) / sd[:, None]) ** 2)
    return p / p.sum(1, keepdims=True)


def _sample_years(rng, p):
    return (p.cumsum(1) > rng.uniform(size=(p.shape[0], 1))).argmax(1).astype(float)


def _cdf_draw_continuous(rng, n):
    # y drawn from the model's own piecewise-linear CDF: continuous scores, no ties
    p = _label_proba(rng, n)
    return {"label_proba": p, "label_ages": AGES}, _sample_years(rng, p) + rng.uniform(-0.5, 0.5, n)


def _cdf_draw_wrong_model(rng, n):
    # truths 2 years above the model's distribution and far more spread; whole years (ties): only
    # the lower bound holds
    p = _label_proba(rng, n)
    y = np.clip(np.round(_sample_years(rng, p) + 2 + rng.normal(0, 4, n)), 0, 100)
    return {"label_proba": p, "label_ages": AGES}, y


def test_residual_coverage_within_finite_sample_bound():
    cov = _avg_coverage(SEEDS, N_CAL, N_TEST, ALPHA, _residual_draw)
    assert LOWER - TOL <= cov <= UPPER + TOL, cov


def test_cdf_coverage_within_finite_sample_bound():
    cov = _avg_coverage(SEEDS, N_CAL, N_TEST, ALPHA, _cdf_draw_continuous)
    assert LOWER - TOL <= cov <= UPPER + TOL, cov


def test_cdf_coverage_holds_for_a_wrong_model():
    cov = _avg_coverage(100, N_CAL, N_TEST, ALPHA, _cdf_draw_wrong_model)
    assert cov >= LOWER - 0.011, cov


def test_cdf_interval_is_exactly_the_score_set():
    """y in [lo, hi] <=> |F(y) - 1/2| <= q: what makes the interval inherit conformal coverage."""
    rng = np.random.default_rng(1)
    p = _label_proba(rng, 300, spread=(0.3, 10.0))
    p[:, 40:45] = 0.0  # flat stretches of the CDF
    p /= p.sum(1, keepdims=True)
    for q in (0.0, 0.1, 0.37, 0.49):
        lo, hi = predict_interval(Calibration("cdf", 0.1, q, 10), label_proba=p, label_ages=AGES)
        for y in rng.uniform(-2, 103, (5, 300)):
            inside = (lo <= y) & (y <= hi)
            score = np.abs(predicted_cdf(y, p, AGES) - 0.5)
            clear = np.abs(score - q) > 1e-9  # ignore points on the boundary itself
            assert np.array_equal(inside[clear], (score <= q)[clear])


def test_conformal_rank_and_calibration_file(tmp_path):
    assert conformal_rank(19, 0.05) == 19 and conformal_rank(9, 0.2) == 8 and conformal_rank(100, 0.1) == 91
    cal = fit_conformal(CAL_TRUE, 0.2, cal_pred_age=CAL_PRED)
    path = cal.save(tmp_path)  # a folder: calibration.json inside
    assert path.name == "calibration.json" and not list(tmp_path.glob(".*tmp"))
    back = Calibration.load(tmp_path)
    assert back == cal and json.loads(path.read_text())["level"] == pytest.approx(0.8)
    assert back.at_level(0.9).q == 10.0
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(UsageError, match="bad.json"):
        Calibration.load(tmp_path / "bad.json")


def test_interval_report_per_group():
    g = AgeGroups.parse("0-10,11-20,21-30")
    rep = interval_report([0, 10, 20, 25], [5, 20, 30, 27], [3, 25, 22, 40], g)
    # covered: yes no yes no; widths 5 10 10 2; 40 lies above every group -> counted in 21-30
    assert rep["coverage"] == 0.5 and rep["mean_width"] == pytest.approx(6.75)
    assert [(r["label"], r["n"], r["coverage"]) for r in rep["per_group"]] == [
        ("0-10", 1, 1.0), ("11-20", 0, None), ("21-30", 3, pytest.approx(1 / 3))]


# ---------------------------------------------------------------------------------------------
# thresholds


def test_threshold_rates_match_a_loop():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 60, 400).astype(float)
    pred = true + rng.normal(0, 5, 400)
    thresholds, challenges = [13, 18, 21], [13, 18, 21, 25, 30]
    rows = threshold_table(true, pred, thresholds, challenges)
    i = 0
    for th in thresholds:
        for ch in challenges:
            under = over = fa = fr = 0
            for t, p in zip(true, pred, strict=True):
                if t < th:
                    under += 1
                    fa += p >= ch
                else:
                    over += 1
                    fr += p < ch
            r = rows[i]
            assert (r["threshold"], r["challenge"], r["n_under"], r["n_over"]) == (th, ch, under, over)
            assert r["false_accept"] == pytest.approx(fa / under) and r["false_reject"] == pytest.approx(fr / over)
            i += 1


def test_threshold_empty_side_is_none(tmp_path):
    rows = threshold_table([30, 40], [25, 50], [18], [18])
    assert rows[0]["n_under"] == 0 and rows[0]["false_accept"] is None and rows[0]["false_reject"] == 0.0
    assert plot_threshold_curve(tmp_path / "t.png", [10, 30, 40], [20, 25, 50], 18, [18, 21]).stat().st_size > 0


def test_parse_thresholds_and_flags():
    assert parse_thresholds("18, 21,18") == [18, 21]
    with pytest.raises(UsageError, match="^thresholds 'abc'"):
        parse_thresholds("abc")
    with pytest.raises(UsageError, match="--challenge '2x'"):
        parse_thresholds("18,2x", flag="--challenge")
    with pytest.raises(UsageError, match="^thresholds"):
        parse_thresholds(" , ")


# ---------------------------------------------------------------------------------------------
# breakdowns


def test_bootstrap_reproducible_for_a_seed():
    rng = np.random.default_rng(5)
    true = rng.integers(0, 80, 300).astype(float)
    pred = true + rng.normal(1, 4, 300)
    race = rng.choice(["White", "Black", "Asian"], 300).tolist()
    a = breakdown(true, pred, {"race": race}, by=["race"], seed=7, n_resamples=500)
    b = breakdown(true, pred, {"race": race}, by=["race"], seed=7, n_resamples=500)
    c = breakdown(true, pred, {"race": race}, by=["race"], seed=8, n_resamples=500)
    assert a == b and a != c
    for r in a["race"] + [x for x in a["by_age"] if x["n"] > 1]:
        assert r["bias_lo"] <= r["bias"] <= r["bias_hi"] and r["mae_lo"] <= r["mae"] <= r["mae_hi"]
    # a cell's interval depends only on its own images: dropping another group leaves it unchanged
    keep = np.array(race) != "Asian"
    d = breakdown(true[keep], pred[keep], {"race": np.array(race)[keep].tolist()}, by=["race"], seed=7, n_resamples=500)
    assert d["race"] == [r for r in a["race"] if r["value"] != "Asian"]


def test_utkface_attributes():
    assert utkface_attributes("data/26_1_3_20170117.jpg.chip.jpg") == {"gender": "female", "race": "Indian"}
    assert utkface_attributes("100_0_0_20170112213500903.jpg.chip.jpg") == {"gender": "male", "race": "White"}
    assert utkface_attributes("39_1_20170116174525125.jpg.chip.jpg") == {}  # race missing
    assert utkface_attributes("face.jpg") == {}


def test_by_column_errors_name_the_column():
    with pytest.raises(UsageError, match=r"^by: column 'skin' is not in the data \(available: gender, race\)"):
        select_attributes({"gender": ["m"], "race": ["White"]}, ["skin"], 1)
    with pytest.raises(UsageError, match="^by: column 'gender'.*available: none"):
        breakdown(BD_TRUE, BD_PRED, None, by=["gender"])
    with pytest.raises(UsageError, match="^by 'gaps'"):
        parse_by("gender,gaps")
    assert parse_by("gender, race,gender") == ["gender", "race"] and parse_by(None) == []


# ---------------------------------------------------------------------------------------------
# probability calibration


def _calibrated(rng, n=4000, k=7, scale=2.5):
    logits = rng.normal(0, scale, (n, k))
    p = softmax(logits, axis=1)
    labels = (p.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)  # drawn from p itself
    return logits, p, labels


def test_ece_small_when_calibrated_large_when_overconfident():
    rng = np.random.default_rng(11)
    logits, p, labels = _calibrated(rng)
    assert expected_calibration_error(p, labels) < 0.03
    assert expected_calibration_error(softmax(3 * logits, axis=1), labels) > 0.15


def test_fit_temperature_recovers_known_t(tmp_path):
    rng = np.random.default_rng(12)
    logits, _, labels = _calibrated(rng)
    t = fit_temperature(2.0 * logits, labels)  # the model's logits are twice too sharp
    assert t == pytest.approx(2.0, rel=0.1)
    after = apply_temperature(2.0 * logits, t)
    assert np.allclose(after.sum(1), 1.0)
    assert expected_calibration_error(after, labels) < expected_calibration_error(softmax(2 * logits, axis=1), labels)
    # generic over (N, L) and log-probabilities
    assert fit_temperature(to_logproba(softmax(2.0 * logits, axis=1)), labels) == pytest.approx(t, rel=1e-3)
    assert plot_reliability(tmp_path / "r.png", softmax(2 * logits, axis=1), labels, after).stat().st_size > 0
    with pytest.raises(UsageError, match="outside 0..6"):
        fit_temperature(logits, np.full(len(labels), 7))


# ---------------------------------------------------------------------------------------------
# inputs and the report


def test_interval_level_errors_name_the_flag():
    assert parse_level("0.9") == 0.9
    for bad in ("1.5", "0", "1", "-0.2", "abc", "nan"):
        with pytest.raises(UsageError, match="^interval"):
            parse_level(bad)
    with pytest.raises(UsageError, match="^interval"):
        fit_conformal(CAL_TRUE, 1.5, cal_pred_age=CAL_PRED)
    with pytest.raises(UsageError, match="no validation split to calibrate on"):
        fit_conformal([], 0.1, cal_pred_age=[])
    with pytest.raises(UsageError, match="label_proba and label_ages"):
        predict_interval(Calibration("cdf", 0.1, 0.3, 10), pred_age=[30.0])


def test_decision_metrics_report(tmp_path):
    rng = np.random.default_rng(13)
    n = 240
    true = rng.integers(1, 80, n).astype(float)
    p = _label_proba(rng, n)
    pred = p @ AGES
    groups = AgeGroups.parse(None)
    tg = groups.clip_indices(true)
    gp = softmax(rng.normal(0, 2, (n, len(groups))), axis=1)
    gender = rng.choice(["male", "female"], n).tolist()
    cal = fit_conformal(true[:120], 0.1, cal_label_proba=p[:120], label_ages=AGES)
    m = decision_metrics(true[120:], pred[120:], groups, group_proba=gp[120:], true_group=tg[120:],
                         label_proba=p[120:], label_ages=AGES, calibration=cal, thresholds=[18], challenges=[18, 25],
                         attributes={"gender": gender[120:]}, by=["gender"], val_group_proba=gp[:120],
                         val_true_group=tg[:120], n_resamples=200)
    assert set(m) == {"interval", "threshold", "breakdown", "calibration"}
    assert {"alpha", "level", "method", "coverage", "mean_width", "per_group"} <= set(m["interval"])
    assert m["interval"]["method"] == "cdf" and len(m["interval"]["per_group"]) == len(groups)
    assert set(m["breakdown"]) == {"by_age", "gender", "gaps"}
    assert set(m["calibration"]) >= {"ece", "ece_after", "T"}
    json.dumps(m)  # metrics.json-ready
    h = headline(m)
    assert h["false_accept"] == m["threshold"][0]["false_accept"] and h["gap_by"] == "gender"
    console = Console(record=True, width=140)
    print_decisions(m, console)
    text = console.export_text()
    for title in ("90% age interval", "age threshold", "error by gender", "largest gap", "ECE"):
        assert title in text
    paths = decision_plots(tmp_path, m, true[120:], pred[120:], group_proba=gp[120:], true_group=tg[120:],
                           thresholds=[18], challenges=[18, 25])
    assert [q.name for q in paths] == ["error_by_age.png", "threshold_18.png", "reliability.png"]
    assert plot_error_by_age(tmp_path / "e.png", m["breakdown"]["by_age"]).stat().st_size > 0
