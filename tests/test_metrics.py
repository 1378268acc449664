"""Metrics on hand-worked examples, against scikit-learn and a plain re-implementation, and edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_score,
    recall_score,
    root_mean_squared_error,
)

from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.posterior.metrics import (
    METRIC_NAMES,
    baseline_metrics,
    compute_metrics,
    rank_inconsistency,
    reference_from_truth,
)

G3 = AgeGroups.parse("0-10,11-20,21-30")

# Hand example, three groups 0-10, 11-20, 21-30:
#   true ages   5  15  25  28  -> true groups 0 1 2 2
#   pred ages   8  27  21   2  -> pred groups 0 2 2 0
TRUE_AGE = [5, 15, 25, 28]
PRED_AGE = [8, 27, 21, 2]
TRUE_G = [0, 1, 2, 2]
PRED_G = [0, 2, 2, 0]


@pytest.fixture
def hand() -> dict:
    return compute_metrics(TRUE_AGE, PRED_AGE, TRUE_G, PRED_G, 3, labels=G3.labels)


def test_hand_group_metrics(hand):
    assert hand["n"] == 4
    # exact groups at images 0 and 2: 2/4
    assert hand["accuracy"] == pytest.approx(0.5)
    # |group error| = 0 1 0 2 -> (1 + 0.5 + 1 + 0) / 4
    assert hand["one_off"] == pytest.approx(0.625)
    # |group error| <= 1 for 3 of 4
    assert hand["adjacent_accuracy"] == pytest.approx(0.75)
    # (0 + 1 + 0 + 2) / 4
    assert hand["mae_groups"] == pytest.approx(0.75)
    # rows = true: true 0 -> pred 0; true 1 -> pred 2; true 2 -> pred 2 and pred 0
    assert hand["confusion"] == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]


def test_hand_age_metrics(hand):
    # |age error| = 3 12 4 26
    assert hand["mae"] == pytest.approx(45 / 4)  # (3 + 12 + 4 + 26) / 4 = 11.25
    assert hand["rmse"] == pytest.approx(math.sqrt((9 + 144 + 16 + 676) / 4))  # sqrt(211.25)
    assert hand["ca3"] == pytest.approx(0.25)  # only 3 <= 3
    assert hand["ca5"] == pytest.approx(0.5)  # 3 and 4 <= 5


def test_hand_per_group_f1_and_kappa(hand):
    g0, g1, g2 = hand["groups"]
    # group 0: predicted at images 0 and 3, right once; one true image, found -> P 1/2, R 1, F1 2/3
    assert (g0["label"], g0["n"]) == ("0-10", 1)
    assert g0["precision"] == pytest.approx(0.5) and g0["recall"] == pytest.approx(1.0)
    assert g0["f1"] == pytest.approx(2 / 3)
    assert g0["mae"] == pytest.approx(3.0)
    # group 1: never predicted -> precision None; its one image missed -> recall 0, F1 0
    assert g1["n"] == 1 and g1["precision"] is None and g1["recall"] == 0.0 and g1["f1"] == 0.0
    assert g1["mae"] == pytest.approx(12.0)
    # group 2: predicted at images 1 and 2, right once; two true images, one found -> P = R = F1 = 1/2
    assert g2["n"] == 2 and g2["precision"] == pytest.approx(0.5) and g2["recall"] == pytest.approx(0.5)
    assert g2["f1"] == pytest.approx(0.5)
    assert g2["mae"] == pytest.approx((4 + 26) / 2)
    # macro F1 over all three groups: (2/3 + 0 + 1/2) / 3 = 7/18
    assert hand["macro_f1"] == pytest.approx(7 / 18)
    # quadratic kappa with weights (i-j)^2, in counts: observed disagreement
    #   (1,2): 1*1 + (2,0): 1*4 = 5; expected = outer(true counts [1,1,2], pred counts [2,0,2]) / 4
    #   row 0: 4*2/4 = 2; row 1: (1*2 + 1*2)/4 = 1; row 2: 4*4/4 = 4 -> 7;  kappa = 1 - 5/7 = 2/7
    assert hand["qwk"] == pytest.approx(2 / 7)
    assert hand["rank_inconsistency"] is None


def test_keys_and_json_types(hand):
    assert tuple(hand) == METRIC_NAMES

    def check(v):
        if isinstance(v, dict):
            for x in v.values():
                check(x)
        elif isinstance(v, list):
            for x in v:
                check(x)
        else:
            assert v is None or type(v) in (int, float, str), (v, type(v))

    check(hand)
    assert json.loads(json.dumps(hand)) == hand


def test_rank_inconsistency_hand():
    proba = np.array([
        [0.9, 0.5, 0.1],  # monotone
        [0.9, 0.95, 0.1],  # rises by 0.05: inconsistent
        [0.5, 0.5, 0.5],  # flat is non-increasing
        [0.2, 0.1, 0.1000001],  # rises by 1e-7: float rounding, below the 1e-6 tolerance
    ])
    assert rank_inconsistency(proba) == pytest.approx(0.25)
    m = compute_metrics(None, None, [0, 1, 2, 2], [0, 1, 2, 2], 3, rank_proba=proba)
    assert m["rank_inconsistency"] == pytest.approx(0.25)
    assert rank_inconsistency(np.ones((3, 1))) == 0.0  # one rank is trivially monotone


def _one_off_capstone(true_g, pred_g) -> float:
    """The capstone's score written out: 1 for the right group, 0.5 for a neighbour, else 0."""
    total = 0.0
    for t, p in zip(true_g, pred_g, strict=True):
        if t == p:
            total += 1.0
        elif abs(t - p) == 1:
            total += 0.5
    return total / len(true_g)


def _qwk_formula(t, p, k) -> float:
    o = np.zeros((k, k))
    for a, b in zip(t, p, strict=True):
        o[a, b] += 1
    e = np.outer(o.sum(1), o.sum(0)) / o.sum()
    w = np.subtract.outer(np.arange(k), np.arange(k)) ** 2
    return 1 - (w * o).sum() / (w * e).sum()


@pytest.mark.parametrize("seed", range(5))
def test_random_agrees_with_sklearn_and_capstone(seed):
    rng = np.random.default_rng(seed)
    k, n = 7, 300
    ta = rng.uniform(0, 70, n)
    pa = np.clip(ta + rng.normal(0, 8, n), 0, 75)
    groups = AgeGroups.parse(None)
    tg, pg = groups.clip_indices(ta), groups.clip_indices(pa)
    m = compute_metrics(ta, pa, tg, pg, k, labels=groups.labels)
    assert m["accuracy"] == pytest.approx(accuracy_score(tg, pg))
    assert m["one_off"] == pytest.approx(_one_off_capstone(tg.tolist(), pg.tolist()))
    assert m["mae"] == pytest.approx(mean_absolute_error(ta, pa))
    assert m["rmse"] == pytest.approx(root_mean_squared_error(ta, pa))
    assert m["ca5"] == pytest.approx(sum(abs(a - b) <= 5 for a, b in zip(ta, pa, strict=True)) / n)
    assert m["macro_f1"] == pytest.approx(f1_score(tg, pg, labels=list(range(k)), average="macro", zero_division=0))
    assert m["qwk"] == pytest.approx(cohen_kappa_score(tg, pg, weights="quadratic", labels=list(range(k))))
    assert m["qwk"] == pytest.approx(_qwk_formula(tg, pg, k))
    assert m["confusion"] == confusion_matrix(tg, pg, labels=list(range(k))).tolist()
    assert sum(map(sum, m["confusion"])) == n
    for i, g in enumerate(m["groups"]):
        assert g["n"] == int((tg == i).sum())
        if g["precision"] is not None:
            assert g["precision"] == pytest.approx(precision_score(tg, pg, labels=[i], average="macro", zero_division=0))
        if g["recall"] is not None:
            assert g["recall"] == pytest.approx(recall_score(tg, pg, labels=[i], average="macro", zero_division=0))
            assert g["mae"] == pytest.approx(np.abs(pa - ta)[tg == i].mean())


@pytest.mark.parametrize("seed", range(3))
def test_one_off_random_group_predictions(seed):
    rng = np.random.default_rng(100 + seed)
    tg, pg = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    m = compute_metrics(None, None, tg, pg, 7)
    assert m["one_off"] == pytest.approx(_one_off_capstone(tg.tolist(), pg.tolist()))
    assert m["adjacent_accuracy"] == pytest.approx(np.mean(np.abs(tg - pg) <= 1))


def test_group_without_true_images():
    # four groups; group 3 is predicted once but never true, group 2 is neither true nor predicted
    m = compute_metrics([1, 2, 15], [1, 2, 80], [0, 0, 1], [0, 0, 3], 4)
    g2, g3 = m["groups"][2], m["groups"][3]
    assert g3 == {"label": "3", "n": 0, "precision": 0.0, "recall": None, "f1": 0.0, "mae": None}
    assert g2 == {"label": "2", "n": 0, "precision": None, "recall": None, "f1": None, "mae": None}
    # macro F1 counts all four groups, undefined ones as 0: (1 + 0 + 0 + 0) / 4
    assert m["macro_f1"] == pytest.approx(0.25)


def test_single_image():
    m = compute_metrics([33], [36], [3], [3], 7)
    assert m["n"] == 1 and m["accuracy"] == 1.0 and m["one_off"] == 1.0
    assert m["mae"] == 3.0 and m["rmse"] == 3.0 and m["ca3"] == 1.0
    assert m["qwk"] is None  # one group in truth and prediction: kappa is 0/0
    wrong = compute_metrics([33], [45], [3], [4], 7)
    assert wrong["accuracy"] == 0.0 and wrong["one_off"] == 0.5 and wrong["ca5"] == 0.0


def test_group_only_predictions_have_no_age_metrics():
    m = compute_metrics(None, None, [0, 1, 2], [0, 1, 1], 3)
    assert m["mae"] is None and m["rmse"] is None and m["ca3"] is None and m["ca5"] is None
    assert all(g["mae"] is None for g in m["groups"])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_errors():
    with pytest.raises(UsageError, match="n = 0"):
        compute_metrics([], [], [], [], 7)
    with pytest.raises(UsageError, match=r"pred_group\[1\] = 7 is outside the group range 0..6"):
        compute_metrics(None, None, [0, 1], [0, 7], 7)
    with pytest.raises(UsageError, match="true_group"):
        compute_metrics(None, None, [-1, 1], [0, 1], 7)
    with pytest.raises(UsageError, match="2 true groups but 3"):
        compute_metrics(None, None, [0, 1], [0, 1, 2], 7)
    with pytest.raises(UsageError, match="finite"):
        compute_metrics([1.0, float("nan")], [1.0, 2.0], [0, 0], [0, 0], 7)


def test_out_of_range_ages_land_in_edge_groups():
    groups = AgeGroups.parse(None)
    # a predicted age of 95 is binned into the last group, -3 into the first; metrics accept both
    pg = groups.clip_indices([95.0, -3.0])
    assert pg.tolist() == [6, 0]
    m = compute_metrics([65, 4], [95, -3], [6, 0], pg, 7)
    assert m["accuracy"] == 1.0 and m["mae"] == pytest.approx((30 + 7) / 2)


def test_baseline_hand():
    # truth groups 0 1 1 2 (ages 5 12 18 25); baseline always says group 1 and age 15
    b = baseline_metrics([5, 12, 18, 25], [0, 1, 1, 2], 1, 15.0, G3)
    assert b["accuracy"] == pytest.approx(0.5)  # the two group-1 images
    assert b["one_off"] == pytest.approx(0.75)  # (0.5 + 1 + 1 + 0.5) / 4
    assert b["mae"] == pytest.approx((10 + 3 + 3 + 10) / 4)
    assert b["confusion"] == [[0, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert b["groups"][1]["precision"] == pytest.approx(0.5)
    assert baseline_metrics(None, [0, 1], 1, None, G3)["mae"] is None


def test_reference_from_truth():
    ref = reference_from_truth(np.array([1.0, 2.0, 30.0, 40.0]), np.array([0, 0, 2, 2]), 3)
    assert ref == {"majority_group": 0, "median_age": 16.0}  # tie -> lowest group; median (2 + 30) / 2
