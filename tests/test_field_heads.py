"""The field's heads (mean_variance, dldl_v2, sord, unimodal, orcnn) and every head's label
distribution: known-answer losses against each paper's formula in plain numpy on hand-sized
examples, valid distributions and ages for every registered head, float32 under autocast, a
gradient step that lowers the loss, config errors, and train -> evaluate --prior em --interval ->
export end to end on the synthetic faces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models import field_losses as fl
from ordinalage.models.heads import HEADS, REGRESSION_SIGMA, age_decoder, build_head, coral_importance_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only contend for the shared cores

NEW = ("mean_variance", "dldl_v2", "sord", "unimodal", "orcnn")
TINY = AgeGroups.parse("0-1,2-4")  # with max_age=4: K = 5 labels (years 0..4)
DECADES = AgeGroups.parse(None)
AGES = np.array([1.0, 3.0])
LOGITS = np.array([[0.5, 1.5, -0.3, 0.2, -1.0],
                   [-0.7, 0.1, 0.4, 1.2, 0.9]])


def head(name: str, groups: AgeGroups = TINY, in_features: int = 8, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg.setdefault("max_age", 4)
    return build_head(ModelConfig(head=name, **cfg), in_features, groups)


def loss_of(h: torch.nn.Module, logits: np.ndarray, ages: np.ndarray = AGES) -> float:
    age = torch.tensor(ages, dtype=torch.float32)
    group = torch.from_numpy(TINY.clip_indices(ages)).long()
    return float(h.loss(torch.tensor(logits, dtype=torch.float32), age, group))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def kl(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.sum(np.where(q > 0, q * (np.log(np.where(q > 0, q, 1)) - np.log(p)), 0.0), axis=1)


K = np.arange(5.0)


# ------------------------------------------------------------------------------ known answers (papers' formulas)


def test_mean_variance_loss_known_answer() -> None:
    """Pan et al. 2018: CE + 0.2 * 0.5 (m - y)^2 + 0.05 * sum p (k - m)^2, averaged over the batch."""
    p = softmax(LOGITS)
    m = p @ K
    var = np.sum(p * (K[None] - m[:, None]) ** 2, axis=1)
    ce = -np.log(p[[0, 1], AGES.astype(int)])
    expected = np.mean(ce + 0.2 * 0.5 * (m - AGES) ** 2 + 0.05 * var)
    assert loss_of(head("mean_variance"), LOGITS) == pytest.approx(expected, rel=1e-5)
    # the defaults are the paper's
    h = head("mean_variance")
    assert (h.lambda_mean, h.lambda_var) == (0.2, 0.05)


def test_dldl_v2_loss_known_answer() -> None:
    """Gao et al. 2018: KL(Gaussian(y, sigma) || p) + 1 * |E[y] - y|; sigma 2 by default."""
    p = softmax(LOGITS)
    for sigma, cfg in ((2.0, {}), (1.0, {"label_sigma": 1.0})):
        q = np.exp(-0.5 * ((K[None] - AGES[:, None]) / sigma) ** 2)
        q /= q.sum(1, keepdims=True)
        expected = np.mean(kl(q, p) + np.abs(p @ K - AGES))
        assert loss_of(head("dldl_v2", **cfg), LOGITS) == pytest.approx(expected, rel=1e-5)


def test_sord_loss_known_answer() -> None:
    """Diaz & Marathe 2019: q = softmax(-(y - k)^2), loss KL(q || p) (the soft-target CE less H(q))."""
    p = softmax(LOGITS)
    q = softmax(-(AGES[:, None] - K[None]) ** 2)
    expected = np.mean(kl(q, p))
    assert loss_of(head("sord"), LOGITS) == pytest.approx(expected, rel=1e-5)
    soft_ce = np.mean(-np.sum(q * np.log(p), axis=1))  # equivalently the cross-entropy up to a constant
    entropy = np.mean(-np.sum(q * np.log(q), axis=1))
    assert expected == pytest.approx(soft_ce - entropy)
    # label_sigma sets the metric's scale: (y - k)^2 / (2 sigma^2); for whole years that is DLDL's Gaussian
    dldl_kl = loss_of(head("dldl_v2", label_sigma=1.5), LOGITS) - np.mean(np.abs(p @ K - AGES))
    assert loss_of(head("sord", label_sigma=1.5), LOGITS) == pytest.approx(dldl_kl, rel=1e-5)
    # the label is the rounded age (the true class), not the float age
    assert loss_of(head("sord"), LOGITS, np.array([1.2, 2.6])) == pytest.approx(expected, rel=1e-6)


def test_unimodal_loss_and_distribution_known_answer() -> None:
    """Beckham & Pal 2017: P(k) = softmax(log Binomial(k; K-1, sigmoid(z)) / tau), tau = softplus(t) + 0.05;
    cross-entropy at the true year."""
    logits = np.array([[0.3, 0.5], [-1.2, -0.4]])  # (z, t) per image
    n = 4
    coef = np.log([math.comb(n, k) for k in range(n + 1)])
    pr = 1 / (1 + np.exp(-logits[:, 0]))
    tau = np.log1p(np.exp(logits[:, 1])) + 0.05
    log_pmf = coef[None] + K[None] * np.log(pr)[:, None] + (n - K[None]) * np.log1p(-pr)[:, None]
    q = softmax(log_pmf / tau[:, None])
    expected = np.mean(-np.log(q[[0, 1], AGES.astype(int)]))
    h = head("unimodal")
    assert loss_of(h, logits) == pytest.approx(expected, rel=1e-5)
    dec = h.decode(torch.tensor(logits, dtype=torch.float32))
    np.testing.assert_allclose(dec.label_proba.numpy(), q, rtol=1e-5, atol=1e-7)
    assert dec.age.tolist() == q.argmax(1).tolist() and h.decoder == "mode"  # the paper's argmax
    # unimodal: rises to the mode, falls after it, for any parameters
    big = head("unimodal", DECADES, max_age=90)
    for z, t in ((-3.0, -2.0), (0.0, 0.0), (2.5, 3.0), (8.0, -5.0)):
        p = big.decode(torch.tensor([[z, t]])).label_proba[0].numpy()
        mode = int(p.argmax())
        assert (np.diff(p[: mode + 1]) >= -1e-7).all() and (np.diff(p[mode:]) <= 1e-7).all()
    np.testing.assert_allclose(fl.log_binomial_coefficients(4).numpy(), coef, rtol=1e-6)
    # mean and median decoders read the same distribution
    mean = head("unimodal", decode="mean").decode(torch.tensor(logits, dtype=torch.float32)).age.numpy()
    np.testing.assert_allclose(mean, q @ K, rtol=1e-5)


def test_orcnn_loss_known_answer_and_independent_weights() -> None:
    """Niu et al. 2016: sum_k lambda_k BCE(sigmoid(z_k), [y > k]); lambda = 1, or CORAL's balanced weights."""
    logits = np.array([[2.0, 0.5, -0.5, -2.0], [1.0, 1.5, 0.3, -0.2]])
    levels = (AGES[:, None] > np.arange(4)[None]).astype(float)
    s = 1 / (1 + np.exp(-logits))
    bce = -(levels * np.log(s) + (1 - levels) * np.log(1 - s))
    h = head("orcnn")
    assert loss_of(h, logits) == pytest.approx(np.mean(bce.sum(1)), rel=1e-5)
    assert h.fc.weight.shape == (4, 8) and h.fc.bias.shape == (4,)  # one weight vector per task
    assert not torch.allclose(h.fc.weight[0], h.fc.weight[1])
    train_ages = np.array([0, 0, 1, 1, 1, 2, 3, 4, 4])
    w = build_head(ModelConfig(head="orcnn", max_age=4, coral_importance="balanced"), 8, TINY, train_ages=train_ages)
    lam = coral_importance_weights(train_ages, 5)
    np.testing.assert_allclose(w.importance.numpy(), lam)
    assert loss_of(w, logits) == pytest.approx(np.mean((bce * lam[None]).sum(1)), rel=1e-5)
    # decoding: the rank count, label probabilities from neighbouring differences
    dec = h.decode(torch.tensor(logits, dtype=torch.float32))
    assert dec.age.tolist() == [2.0, 3.0] and h.decoder == "median"
    np.testing.assert_allclose(dec.rank_proba.numpy(), s, rtol=1e-6)
    np.testing.assert_allclose(dec.label_proba[0].numpy(), np.diff(np.r_[1, s[0], 0]) * -1, rtol=1e-5)
    # ranks that disagree (P(y > 1) > P(y > 0)) are clipped and renormalised
    row = np.clip(-np.diff(np.r_[1, s[1], 0]), 0, None)
    np.testing.assert_allclose(dec.label_proba[1].numpy(), row / row.sum(), rtol=1e-5)


def test_regression_label_proba_is_a_gaussian_with_the_regressions_age_as_mean() -> None:
    h = head("regression", DECADES, max_age=90)
    h.set_init_age(30.0, 10.0)
    z = torch.tensor([[0.0], [0.525], [-2.95], [-3.1], [6.0], [-10.0], [7.0], [5.97]])
    dec = h.decode(z)
    torch.testing.assert_close(dec.age, torch.tensor([30.0, 35.25, 0.5, 0.0, 90.0, 0.0, 90.0, 89.7]))  # as before
    p = dec.label_proba.numpy().astype(np.float64)
    assert p.shape == (8, 91) and (p >= 0).all()
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(p @ np.arange(91), dec.age.numpy(), atol=2e-4)  # the mean is the age, ends too
    years = np.arange(91)
    g = np.exp(-0.5 * ((years - 30) / REGRESSION_SIGMA) ** 2)  # interior: the discretised Gaussian itself
    np.testing.assert_allclose(p[0], g / g.sum(), atol=1e-6)
    assert p[1].argmax() == 35 and np.std(np.repeat(years, (p[1] * 1e6).astype(int))) == pytest.approx(4.0, abs=0.05)
    np.testing.assert_allclose(p[2, :3], [0.5, 0.5, 0.0], atol=1e-6)  # age 0.5: no room to spread below 0
    assert p[3, 0] == pytest.approx(1.0) and p[4, 90] == pytest.approx(1.0)
    torch.testing.assert_close(dec.group_proba, torch.eye(7)[dec.group])  # group_proba unchanged: one-hot
    assert age_decoder("regression") == "mean"


# ------------------------------------------------------------------------------ every head's distribution


def _cases() -> list[tuple[str, str]]:
    return [(n, t) for n in HEADS for t in ("age", "group") if t == "age" or n in ("class", "coral", "corn")]


@pytest.mark.parametrize(("name", "target"), _cases())
def test_label_proba_is_a_distribution_and_ages_are_in_range(name: str, target: str) -> None:
    groups = AgeGroups.parse("0-10,11-20,21-30,31-40,41-50,51-60,61-70,71+")
    h = head(name, groups, in_features=16, target=target, max_age=90)
    n_labels = 91 if target == "age" else len(groups)
    with torch.no_grad():
        for scale in (0.1, 10.0, 1000.0):
            logits = h(torch.randn(64, 16) * scale) + (torch.randn(64, 1) * scale if name == "regression" else 0)
            dec = h.decode(logits)
            assert dec.label_proba is not None and dec.label_proba.shape == (64, n_labels)
            assert dec.label_proba.dtype == torch.float32 and torch.isfinite(dec.label_proba).all()
            assert (dec.label_proba >= 0).all()
            torch.testing.assert_close(dec.label_proba.sum(1), torch.ones(64), atol=1e-5, rtol=0)
            assert ((dec.age >= 0) & (dec.age <= 90)).all() and torch.isfinite(dec.age).all()
            assert ((dec.group >= 0) & (dec.group < len(groups))).all() and dec.group.dtype == torch.long
            torch.testing.assert_close(dec.group_proba.sum(1), torch.ones(64))
            if target == "age":
                assert dec.group.tolist() == groups.clip_indices(dec.age.numpy()).tolist()


@pytest.mark.parametrize("name", NEW)
def test_loss_is_float32_under_bf16_autocast_and_weights_multiply(name: str) -> None:
    h = head(name, DECADES, in_features=16, max_age=80)
    feats = torch.randn(8, 16).to(torch.bfloat16)
    age = torch.tensor([1.0, 9, 17, 33, 46, 52, 64, 70])
    group = torch.tensor(DECADES.clip_indices(age.numpy()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = h(feats)
        loss = h.loss(logits, age.to(torch.bfloat16), group)
        dec = h.decode(logits)
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    torch.testing.assert_close(loss, h.loss(logits.float(), age, group))
    assert dec.age.dtype == torch.float32 and dec.label_proba.dtype == torch.float32
    loss.backward()
    grads = [p.grad for p in h.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    logits = logits.detach().float()
    base = h.loss(logits, age, group)
    torch.testing.assert_close(h.loss(logits, age, group, torch.full((8,), 2.0)), 2 * base)
    singles = torch.stack([h.loss(logits[i:i + 1], age[i:i + 1], group[i:i + 1]) for i in range(8)])
    torch.testing.assert_close(base, singles.mean())


@pytest.mark.parametrize("name", NEW)
def test_a_gradient_step_lowers_the_loss(name: str) -> None:
    h = head(name, DECADES, in_features=16, max_age=80)
    feats = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    age = torch.tensor([4.0, 15, 27, 38, 55, 69])
    group = torch.tensor(DECADES.clip_indices(age.numpy()))
    before = h.loss(h(feats), age, group)
    before.backward()
    grad_sq = sum(float((p.grad ** 2).sum()) for p in h.parameters())
    with torch.no_grad():
        for p in h.parameters():
            p -= 0.01 / max(grad_sq, 1.0) ** 0.5 * p.grad  # a short step along the negative gradient
    with torch.no_grad():
        after = h.loss(h(feats), age, group)
    assert float(after) < float(before.detach())
    # and a few hundred steps of Adam fit the batch
    opt = torch.optim.Adam(h.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        h.loss(h(feats), age, group).backward()
        opt.step()
    with torch.no_grad():
        assert (h.decode(h(feats)).age - age).abs().mean() < 3.0


@pytest.mark.parametrize("name", ["unimodal", "orcnn", "mean_variance"])
def test_the_bias_prior_starts_at_the_training_ages(name: str) -> None:
    ages = np.random.default_rng(0).normal(30, 8, 4000).clip(1, 90).round()
    h = build_head(ModelConfig(head=name), 4, DECADES, train_ages=ages)
    dec = h.decode(h(torch.zeros(1, 4)))
    if name == "orcnn":
        assert dec.age.item() == np.median(ages)
    elif name == "unimodal":  # the binomial's mode at the mean year
        assert abs(dec.age.item() - ages.mean()) <= 1
    else:  # the mean of the smoothed counts (counts + 0.5, as for the class head)
        counts = np.bincount(ages.astype(int), minlength=h.num_classes) + 0.5
        assert dec.age.item() == pytest.approx((counts * np.arange(h.num_classes)).sum() / counts.sum(), abs=1e-3)


@pytest.mark.parametrize("name", ["dldl_v2", "sord"])
def test_head_label_sigma_is_the_std_of_its_soft_labels(name: str) -> None:
    """`head.label_sigma` is the std (years) of the soft targets the head trains on, in the form
    `posterior.prior.effective_train_prior(label_sigma=)` sums for the training prior."""
    from ordinalage.models.heads import gaussian_label_distribution
    from ordinalage.posterior.prior import effective_train_prior

    h = head(name, DECADES, max_age=30)
    labels = torch.tensor([0, 3, 3, 17, 30])
    if name == "sord":
        soft = fl.sord_labels(labels, 31, h.phi_scale)
    else:
        soft = gaussian_label_distribution(labels.float(), 31, h.label_sigma)
    prior = effective_train_prior(labels.numpy(), 31, label_sigma=h.label_sigma, floor=0.0)
    np.testing.assert_allclose(prior, soft.mean(0).numpy(), atol=1e-6)


# ------------------------------------------------------------------------------ config


def test_config_errors_and_decoders() -> None:
    for name in NEW:
        with pytest.raises(UsageError, match=f"model.target.*{name}"):
            build_head(ModelConfig(head=name, target="group"), 4, DECADES)
    for name in ("mean_variance", "unimodal", "orcnn"):
        with pytest.raises(UsageError, match="model.label_sigma"):
            build_head(ModelConfig(head=name, label_sigma=2.0), 4, DECADES)
    with pytest.raises(UsageError, match="model.coral_importance"):
        build_head(ModelConfig(head="orcnn", coral_importance="sqrt"), 4, DECADES)
    assert build_head(ModelConfig(head="dldl_v2"), 4, DECADES).label_sigma == 2.0
    assert build_head(ModelConfig(head="dldl_v2", label_sigma=3.0), 4, DECADES).label_sigma == 3.0
    assert build_head(ModelConfig(head="sord", label_sigma=2.0), 4, DECADES).phi_scale == 8.0
    default_sord = build_head(ModelConfig(head="sord"), 4, DECADES)
    assert default_sord.phi_scale == 1.0 and default_sord.label_sigma == pytest.approx(0.5 ** 0.5)
    assert {n: age_decoder(n) for n in HEADS} == {
        "class": "mean", "coral": "median", "corn": "median", "regression": "mean", "mean_variance": "mean",
        "dldl_v2": "mean", "sord": "mean", "unimodal": "mode", "orcnn": "median"}
    assert age_decoder("unimodal", "mean") == "mean"
    assert list(HEADS)[:4] == ["class", "coral", "corn", "regression"]  # the new ones listed after


def test_train_help_choices_include_the_new_heads() -> None:
    from ordinalage.training.choices import registries

    assert set(NEW) <= set(registries()["model.head"])


# ------------------------------------------------------------------------------ end to end


def _sets(cache_dir: str) -> list[str]:
    sets = [f"data.cache_dir={cache_dir}", "data.synth_n=160", "data.synth_size=48", "data.image_size=32",
            "data.num_workers=0", "model.width=8", "train.batch_size=32", "train.device=cpu", "train.eval_on_end=false"]
    return [a for s in sets for a in ("--set", s)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                            "ignore:ONNX Preprocess:UserWarning")
@pytest.mark.parametrize("name", [*NEW, "regression"])
def test_train_evaluate_and_export_end_to_end(name: str, synth_cache_dir: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    from ordinalage.cli import main
    from ordinalage.inference.export import run_export

    run = tmp_path / "run"
    assert main(["train", "--head", name, "--epochs", "1", "--out", str(run), *_sets(synth_cache_dir)]) == 0
    prior = [] if name == "regression" else ["--prior", "em"]  # regression: no prior correction (its spread is fixed)
    capsys.readouterr()
    assert main(["evaluate", str(run), *prior, "--interval", "0.9", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 <= res["interval"]["coverage"] <= 1 and res["mae"] >= 0
    if prior:
        assert res["prior"]["mode"] == "em"
    assert json.loads((run / "calibration.json").read_text())["method"] == "cdf"  # from label_proba
    pytest.importorskip("onnxruntime")
    for fmt, suffix in (("onnx", "onnx"), ("torchscript", "pt")):
        assert run_export(run, fmt=fmt, out=tmp_path / f"m.{suffix}")["ok"]
