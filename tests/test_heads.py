"""Heads: known-answer decoding, float32 losses under autocast, weights, gradients, valid outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coral_pytorch.dataset import levels_from_labelbatch
from coral_pytorch.losses import coral_loss, corn_loss

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models.heads import (
    HEADS,
    build_head,
    coral_importance_weights,
    corn_loss_weighted,
    gaussian_label_distribution,
    ordinal_levels,
    rank_to_label_proba,
)

DECADES = AgeGroups.parse(None)  # 0-10 ... 61-70
FIVE = AgeGroups.parse("0-9,10-19,20-29,30-39,40-49")
SMALL = AgeGroups.parse("0-3,4-6,7-10")


def logit(p) -> torch.Tensor:
    return torch.logit(torch.tensor(p, dtype=torch.float32))


def head(name: str, groups: AgeGroups = DECADES, in_features: int = 8, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_head(ModelConfig(head=name, **cfg), in_features, groups)


# ------------------------------------------------------------------------------ known answers


def test_coral_group_target_known_answer() -> None:
    h = head("coral", FIVE, target="group")
    dec = h.decode(logit([[0.9, 0.8, 0.3, 0.2]]))
    assert dec.group.tolist() == [2] and dec.group.dtype == torch.long
    torch.testing.assert_close(dec.group_proba, torch.tensor([[0.1, 0.1, 0.5, 0.1, 0.2]]))
    # age = expected midpoint: .1*4.5 + .1*14.5 + .5*24.5 + .1*34.5 + .2*44.5
    torch.testing.assert_close(dec.age, torch.tensor([26.5]))
    torch.testing.assert_close(dec.rank_proba, torch.tensor([[0.9, 0.8, 0.3, 0.2]]))


def test_corn_uses_cumulative_products() -> None:
    h = head("corn", FIVE, target="group")
    dec = h.decode(logit([[0.9, 0.8, 0.5, 0.9]]))  # cumprod .9 .72 .36 .324 -> 2 above 0.5
    assert dec.group.tolist() == [2]
    torch.testing.assert_close(dec.rank_proba, torch.tensor([[0.9, 0.72, 0.36, 0.324]]))
    torch.testing.assert_close(dec.group_proba, torch.tensor([[0.1, 0.18, 0.36, 0.036, 0.324]]))
    # the same logits through CORAL: sigmoid without the product -> 4 ranks above 0.5
    assert head("coral", FIVE, target="group").decode(logit([[0.9, 0.8, 0.6, 0.9]])).group.tolist() == [4]


def test_ordinal_age_target_bins_years_into_groups() -> None:
    h = head("coral", SMALL, max_age=10)
    dec = h.decode(logit([[0.99] * 5 + [0.4] * 5]))  # P(age > k): k = 0..9
    assert dec.age.tolist() == [5.0] and dec.age.dtype == torch.float32
    assert dec.group.tolist() == [1]  # 5 lies in 4-6
    # P(age = 0) = .01, P(age = 5) = .59, P(age = 10) = .4
    torch.testing.assert_close(dec.group_proba, torch.tensor([[0.01, 0.59, 0.40]]))


def test_class_head_age_target_expected_value() -> None:
    h = head("class", SMALL, max_age=10)
    logits = torch.full((1, 11), -1e4)
    logits[0, 2] = logits[0, 9] = 0.0  # half the mass on 2 years, half on 9
    dec = h.decode(logits)
    torch.testing.assert_close(dec.age, torch.tensor([5.5]))
    assert dec.group.tolist() == [1] and dec.rank_proba is None
    torch.testing.assert_close(dec.group_proba, torch.tensor([[0.5, 0.0, 0.5]]))


def test_class_head_group_target() -> None:
    h = head("class", FIVE, target="group")
    p = torch.tensor([[0.1, 0.6, 0.1, 0.1, 0.1]])
    dec = h.decode(p.log())
    assert dec.group.tolist() == [1]
    torch.testing.assert_close(dec.age, torch.tensor([0.1 * 4.5 + 0.6 * 14.5 + 0.1 * (24.5 + 34.5 + 44.5)]))
    torch.testing.assert_close(dec.group_proba, p)


def test_regression_head_offset_scale_and_clamp() -> None:
    h = head("regression", DECADES, max_age=90)
    h.set_init_age(30.0, 10.0)
    dec = h.decode(torch.tensor([[0.5], [-10.0], [100.0], [-1.45]]))
    torch.testing.assert_close(dec.age, torch.tensor([35.0, 0.0, 90.0, 15.5]))
    assert dec.group.tolist() == [3, 0, 6, 1]
    torch.testing.assert_close(dec.group_proba, torch.eye(7)[[3, 0, 6, 1]])
    # zero-initialised output layer: the first prediction is the offset
    assert h.decode(h(torch.randn(2, 8))).age.tolist() == [30.0, 30.0]
    h.fit_prior(np.array([10, 20, 30, 40, 200]))
    assert h.offset.item() == 30.0 and h.scale.item() == pytest.approx(np.std([10, 20, 30, 40, 90]))


def test_regression_loss_values() -> None:
    age = torch.tensor([20.0, 50.0])
    logits = torch.tensor([[1.0], [-1.0]])  # 40 and 20 with offset 30, scale 10: errors 20, 30 years
    losses = {}
    for name in ("l1", "mse", "huber"):
        h = head("regression", regression_loss=name)
        h.set_init_age(30.0, 10.0)
        losses[name] = h.loss(logits, age, torch.tensor([1, 4])).item()
    assert losses["l1"] == pytest.approx(2.5)  # mean |error| / scale
    assert losses["mse"] == pytest.approx((4 + 9) / 2)
    assert losses["huber"] == pytest.approx((1.5 + 2.5) / 2)


def test_group_of_age_matches_clip_indices() -> None:
    for groups in (DECADES, AgeGroups.parse("18-25,26-40,41+"), SMALL):
        h = head("class", groups, max_age=100)
        ages = torch.tensor(np.random.default_rng(0).uniform(0, 100, 500), dtype=torch.float32)
        ages = torch.cat([ages, torch.arange(101, dtype=torch.float32)])
        assert h.group_of_age(ages).tolist() == groups.clip_indices(ages.numpy()).tolist()


def test_rank_to_label_proba_clips_non_monotone_probas() -> None:
    p = rank_to_label_proba(torch.tensor([[0.4, 0.6]]))  # inconsistent ranks (CORAL can give these)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(1), torch.ones(1))
    torch.testing.assert_close(p, torch.tensor([[0.6, 0.0, 0.6]]) / 1.2)


# ------------------------------------------------------------------------------ losses


def test_levels_and_losses_match_coral_pytorch() -> None:
    labels = torch.tensor([0, 3, 1, 4, 2, 2])
    torch.testing.assert_close(ordinal_levels(labels, 5), levels_from_labelbatch(labels, 5))
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(corn_loss_weighted(logits, labels), corn_loss(logits, labels, 5))
    ages = labels.float() * 10 + 5  # group index of 5, 35, 15, 45, 25, 25
    h = head("coral", FIVE, target="group")
    torch.testing.assert_close(h.loss(logits, ages, labels), coral_loss(logits, levels_from_labelbatch(labels, 5)))
    h = head("corn", FIVE, target="group")
    torch.testing.assert_close(h.loss(logits, ages, labels), corn_loss(logits, labels, 5))


def test_age_labels_round_and_clamp() -> None:
    h = head("class", DECADES, max_age=80)
    logits = torch.zeros(3, 81)
    logits[:, 0] = 50.0  # all mass on year 0: the loss is ~0 only where the label is 0
    loss = [h.loss(logits[i:i + 1], torch.tensor([a]), torch.tensor([0])).item() for i, a in enumerate([0.4, 0.6, -3.0])]
    assert loss[0] < 1e-6 and loss[1] > 40 and loss[2] < 1e-6
    logits = torch.zeros(1, 81)
    logits[0, 80] = 50.0
    assert h.loss(logits, torch.tensor([95.0]), torch.tensor([6])).item() < 1e-6  # clamped to max_age


CASES = [(n, t) for n in ("class", "coral", "corn", "regression") for t in ("age", "group") if (n, t) != ("regression", "group")]


@pytest.mark.parametrize(("name", "target"), CASES)
def test_loss_is_float32_and_finite_under_bf16_autocast(name: str, target: str) -> None:
    h = head(name, DECADES, in_features=16, target=target)
    feats = torch.randn(8, 16).to(torch.bfloat16)
    age = torch.tensor([1.0, 9, 17, 33, 46, 52, 64, 70])
    group = torch.tensor(DECADES.clip_indices(age.numpy()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = h(feats)
        loss = h.loss(logits, age.to(torch.bfloat16), group)
        dec = h.decode(logits)
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    torch.testing.assert_close(loss, h.loss(logits.float(), age, group))  # same as a float32 computation
    assert dec.age.dtype == torch.float32 and dec.group_proba.dtype == torch.float32
    loss.backward()
    grads = [p.grad for p in h.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(("name", "target"), CASES)
def test_decode_gives_valid_groups_and_ages(name: str, target: str) -> None:
    groups = AgeGroups.parse("0-10,11-20,21-30,31-40,41-50,51-60,61-70,71+")
    h = head(name, groups, in_features=16, target=target, max_age=90)
    with torch.no_grad():
        for scale in (0.1, 10.0, 1000.0):
            dec = h.decode(h(torch.randn(64, 16) * scale) + (torch.randn(64, 1) * scale if name == "regression" else 0))
            assert dec.group.dtype == torch.long and dec.group.shape == (64,)
            assert ((dec.group >= 0) & (dec.group < len(groups))).all()
            assert ((dec.age >= 0) & (dec.age <= 90)).all() and torch.isfinite(dec.age).all()
            assert dec.group_proba.shape == (64, len(groups)) and (dec.group_proba >= 0).all()
            torch.testing.assert_close(dec.group_proba.sum(1), torch.ones(64))
            if name in ("coral", "corn"):
                assert dec.rank_proba.shape == (64, (91 if target == "age" else len(groups)) - 1)


@pytest.mark.parametrize("name", ["class", "coral", "corn", "regression"])
def test_weights_multiply_sample_losses(name: str) -> None:
    h = head(name, DECADES, in_features=16)
    logits = h(torch.randn(4, 16)).detach() + torch.randn(4, h.fc.out_features if hasattr(h, "fc") else 100)
    age = torch.tensor([5.0, 25.0, 45.0, 65.0])
    group = torch.tensor([0, 2, 4, 6])
    base = h.loss(logits, age, group)
    torch.testing.assert_close(h.loss(logits, age, group, torch.full((4,), 2.0)), 2 * base)
    only_first = h.loss(logits, age, group, torch.tensor([1.0, 0, 0, 0]))
    singles = [h.loss(logits[i:i + 1], age[i:i + 1], group[i:i + 1]) for i in range(4)]
    if name != "corn":  # corn normalises by the number of (sample, task) pairs, not by the samples
        torch.testing.assert_close(base, torch.stack(singles).mean())
        torch.testing.assert_close(only_first, singles[0] / 4)
    assert not torch.isclose(only_first, base)
    # per-group class weights (build_head's class_weights) act through the group index
    weighted = build_head(ModelConfig(head=name), 16, DECADES, class_weights=np.array([1.0, 1, 0, 1, 0, 1, 0]))
    weighted.load_state_dict({**h.state_dict(), "class_weights": weighted.class_weights})
    torch.testing.assert_close(weighted.loss(logits, age, group), h.loss(logits, age, group, torch.tensor([1.0, 0, 0, 0])))


def test_class_weights_shape_is_checked() -> None:
    with pytest.raises(UsageError, match="one per age group"):
        build_head(ModelConfig(head="class"), 4, DECADES, class_weights=np.ones(3))


# ------------------------------------------------------------------------------ CORAL importance


def test_coral_importance_known_answer() -> None:
    # labels 0,0,0,1,2 (K=3): #>0 = 2 -> max(2,3)=3; #>1 = 1 -> max(1,4)=4; sqrt, / max
    np.testing.assert_allclose(coral_importance_weights(np.array([0, 0, 0, 1, 2]), 3), [np.sqrt(3) / 2, 1.0], rtol=1e-6)


def test_balanced_importance_from_train_ages_changes_the_loss() -> None:
    ages = np.array([3, 3, 3, 14, 25, 25, 38, 47, 47, 47])
    plain = head("coral", FIVE, target="group")
    h = build_head(ModelConfig(head="coral", target="group", coral_importance="balanced"), 8, FIVE, train_ages=ages)
    expected = coral_importance_weights(FIVE.clip_indices(ages), 5)
    np.testing.assert_allclose(h.importance.numpy(), expected)
    assert h.importance.min() < 1
    h.load_state_dict({**plain.state_dict(), "importance": h.importance})
    logits, age = torch.randn(4, 4), torch.tensor([3.0, 14, 25, 47])
    group = torch.tensor(FIVE.clip_indices(age.numpy()))
    assert not torch.isclose(h.loss(logits, age, group), plain.loss(logits, age, group))
    imp = torch.tensor(expected)
    torch.testing.assert_close(h.loss(logits, age, group),
                               coral_loss(logits, levels_from_labelbatch(group, 5), importance_weights=imp))
    h.set_importance(np.ones(4))
    torch.testing.assert_close(h.loss(logits, age, group), plain.loss(logits, age, group))
    with pytest.raises(UsageError, match="importance"):
        h.set_importance(np.ones(3))
    # without `balanced`, fit_prior leaves the weights alone
    plain.fit_prior(ages)
    assert (plain.importance == 1).all()


# ------------------------------------------------------------------------------ registry and config errors


def test_registry_and_config_errors() -> None:
    assert set(HEADS) == {"class", "coral", "corn", "regression", "mean_variance", "dldl_v2", "sord", "unimodal", "orcnn"}
    with pytest.raises(UsageError, match="model.head.*'softmax'.*class, coral, corn, regression"):
        build_head(ModelConfig(head="softmax"), 4, DECADES)
    with pytest.raises(UsageError, match="model.target"):
        build_head(ModelConfig(head="coral", target="years"), 4, DECADES)
    with pytest.raises(UsageError, match="model.target"):
        build_head(ModelConfig(head="regression", target="group"), 4, DECADES)
    with pytest.raises(UsageError, match="model.regression_loss"):
        build_head(ModelConfig(head="regression", regression_loss="l3"), 4, DECADES)
    with pytest.raises(UsageError, match="model.coral_importance"):
        build_head(ModelConfig(head="coral", coral_importance="sqrt"), 4, DECADES)

    for bad in (dict(head="coral", label_sigma=2.0), dict(head="class", target="group", label_sigma=2.0),
                dict(head="class", label_sigma=-1.0)):
        with pytest.raises(UsageError, match="model.label_sigma"):
            build_head(ModelConfig(**bad), 4, DECADES)


def test_gaussian_label_distribution_known_answer() -> None:
    dist = gaussian_label_distribution(torch.tensor([5.0, 0.0, 30.0]), 11, sigma=1.0)
    torch.testing.assert_close(dist.sum(1), torch.ones(3))
    assert dist.argmax(1).tolist() == [5, 0, 10]  # centres clamp into 0..10
    w = np.exp(-0.5 * np.arange(-5, 6) ** 2)
    torch.testing.assert_close(dist[0], torch.tensor(w / w.sum(), dtype=torch.float32))
    assert dist[0, 4] == dist[0, 6] and dist[0, 4] > dist[0, 3]


def test_label_sigma_soft_loss_penalises_near_misses_less() -> None:
    one_hot = head("class", SMALL, max_age=10)
    soft = head("class", SMALL, max_age=10, label_sigma=1.5)
    age = torch.tensor([5.0])

    def peaked(at: int) -> torch.Tensor:
        logits = torch.full((1, 11), -5.0)
        logits[0, at] = 5.0
        return logits

    near, far = peaked(6), peaked(10)
    group = torch.tensor([1])
    # one-hot CE cannot tell a 1-year miss from a 5-year miss; the label distribution can
    torch.testing.assert_close(one_hot.loss(near, age, group), one_hot.loss(far, age, group))
    assert soft.loss(near, age, group) < soft.loss(far, age, group) - 1.0
    # a tiny sigma is one-hot again
    tiny = head("class", SMALL, max_age=10, label_sigma=1e-3)
    torch.testing.assert_close(tiny.loss(far, age, group), one_hot.loss(far, age, group))


@pytest.mark.parametrize(("name", "target", "outputs"), [
    ("class", "age", 101), ("class", "group", 7), ("coral", "age", 100), ("coral", "group", 6),
    ("corn", "age", 100), ("corn", "group", 6), ("regression", "age", 1),
])
def test_output_sizes(name: str, target: str, outputs: int) -> None:
    assert head(name, DECADES, target=target)(torch.randn(2, 8)).shape == (2, outputs)


# ------------------------------------------------------------------------------ label priors


@pytest.mark.parametrize("name", ["class", "coral", "corn"])
@pytest.mark.parametrize("target", ["age", "group"])
def test_bias_prior_predicts_the_training_distribution(name: str, target: str) -> None:
    ages = np.random.default_rng(0).normal(30, 8, 4000).clip(1, 90).round()
    h = head(name, DECADES, in_features=4, target=target)
    zero = torch.zeros(1, 4)  # the output is the bias alone
    before = h.decode(h(zero))
    assert 20 <= before.age.item() <= 50  # data-free prior: the middle of the groups, not max_age
    h.fit_prior(ages)
    dec = h.decode(h(zero))
    freq = np.bincount(DECADES.clip_indices(ages), minlength=7) / ages.size
    np.testing.assert_allclose(dec.group_proba[0].numpy(), freq, atol=0.01)
    if target == "age" and name != "class":
        assert dec.age.item() == np.median(ages)  # ordinal heads predict the median
    if target == "age" and name == "class":
        counts = np.bincount(ages.astype(int), minlength=101) + 0.5  # documented smoothing
        assert dec.age.item() == pytest.approx((counts * np.arange(101)).sum() / counts.sum(), abs=1e-3)


def test_train_ages_reach_fit_prior_through_build_head() -> None:
    ages = np.full(50, 62.0)
    h = build_head(ModelConfig(head="coral"), 4, DECADES, train_ages=ages)
    assert h.decode(h(torch.zeros(1, 4))).age.item() == 62.0


@pytest.mark.parametrize("name", ["coral", "corn"])
def test_ordinal_label_distribution_sums_to_one_and_gives_the_heads_age(name: str) -> None:
    """P(age = k) from consecutive differences of P(age > k): rows sum to one, and the age the head
    reports (the rank count) is the median of that distribution; mean/mode decoders read it too."""
    h = head(name, DECADES, target="age", max_age=5)
    # rank probabilities P(age > k), k = 0..4 (CORN: conditional, multiplied by the head)
    logits = logit([[0.95, 0.9, 0.7, 0.4, 0.1]])
    dec = h.decode(logits)
    p = dec.label_proba
    assert p.shape == (1, 6)
    torch.testing.assert_close(p.sum(1), torch.ones(1))
    cdf = p.cumsum(1)[0]
    median = int((cdf < 0.5 - 1e-6).sum())
    assert dec.age.item() == median
    if name == "coral":  # consistent ranks: exactly 1 - .95, .95 - .9, .9 - .7, .7 - .4, .4 - .1, .1
        torch.testing.assert_close(p, torch.tensor([[0.05, 0.05, 0.2, 0.3, 0.3, 0.1]]))
        assert dec.age.item() == 3
    years = torch.arange(6, dtype=torch.float32)
    for rule, expected in (("mean", (p[0] * years).sum()), ("mode", p[0].argmax().float())):
        torch.testing.assert_close(head(name, DECADES, target="age", max_age=5, decode=rule).decode(logits).age[0],
                                   expected)
