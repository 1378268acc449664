"""The field's heads (docs/heads.md): mean-variance, DLDL-v2, SORD, unimodal and OR-CNN, single years
only, registered beside the four classic heads of `models.heads`. Maths in field_losses.py."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from coral_pytorch.dataset import proba_to_label
from torch import nn

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models import field_losses as fl
from ordinalage.models.classic_heads import ClassHead
from ordinalage.models.head_base import (
    CORAL_IMPORTANCE,
    Decoded,
    Head,
    coral_importance_weights,
    gaussian_label_distribution,
    logit_of,
    rank_to_label_proba,
    register_head,
    tail_proba,
)


def _age_target_only(cfg: ModelConfig, name: str) -> None:
    if cfg.target != "age":
        raise UsageError(f"config key 'model.target': the {name} head predicts single years; use target 'age' "
                         f"(got {cfg.target!r})")


@register_head("mean_variance")
class MeanVarianceHead(ClassHead):
    """Mean-variance loss (Pan, Han, Shan, Chen, CVPR 2018, "Mean-Variance Loss for Deep Age Estimation
    from a Face"): softmax p over the years 0..max_age,

        L = CE(p, y) + lambda_mean * 0.5 (m - y)^2 + lambda_var * sum_k p_k (k - m)^2,   m = sum_k p_k k,

    averaged over the batch; y is the true age clamped to [0, max_age] (years; CE uses its rounded label).
    Defaults are the paper's: lambda_mean = 0.2, lambda_var = 0.05 (class attributes). Decoded by
    `model.decode` (auto: the mean m, the paper's rule). Target age only.
    """

    title = "mean-variance loss: a softmax over the years, its mean pulled to the age and its variance kept small"
    description = "Cross-entropy plus penalties on the distribution's mean error and its variance (Pan et al., CVPR 2018)."
    default_decoder = "mean"
    soft_labels = False
    output = "distribution"
    distill_student = True

    lambda_mean = 0.2
    lambda_var = 0.05

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        _age_target_only(cfg, self.name)
        super().__init__(cfg, in_features, groups)

    def _loss(self, logits, labels, age, w):  # type: ignore[no-untyped-def]
        per = fl.mean_variance_loss(logits, labels, age.clamp(0, self.max_age), self.lambda_mean, self.lambda_var)
        return (per * w).mean()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", lambda_mean={self.lambda_mean}, lambda_var={self.lambda_var}"


@register_head("dldl_v2")
class DldlV2Head(ClassHead):
    """DLDL-v2 (Gao, Zhou, Wu, Geng, IJCAI 2018, "Age Estimation Using Expectation of Label Distribution
    Learning"): softmax p over the years, q a Gaussian over the years centred on the true age
    with std sigma (`gaussian_label_distribution`),

        L = KL(q || p) + lambda |sum_k p_k k - y|,

    sigma = `model.label_sigma` (0: the paper's 2 years), lambda = 1 (the paper's; class attribute).
    Decoded by `model.decode` (auto: the expectation, the paper's rule). Target age only. (The
    `class` head with `label_sigma` is DLDL without the expectation term.)
    """

    title = "label distribution learning: DLDL-v2 (a softmax over the years fitted to a Gaussian around the age)"
    description = "KL divergence to a Gaussian label distribution plus the expected age's L1 error (Gao et al., IJCAI 2018)."
    default_decoder = "mean"
    soft_labels = True
    output = "distribution"
    distill_student = True

    lam = 1.0
    default_sigma = 2.0

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        _age_target_only(cfg, self.name)
        super().__init__(cfg, in_features, groups)
        self.label_sigma = float(cfg.label_sigma) or self.default_sigma

    def _loss(self, logits, labels, age, w):  # type: ignore[no-untyped-def]
        target = gaussian_label_distribution(age, self.num_classes, self.label_sigma)
        per = fl.dldl_v2_loss(logits, target, age.clamp(0, self.max_age), self.lam)
        return (per * w).mean()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", lambda={self.lam}"


@register_head("sord")
class SordHead(ClassHead):
    """SORD (Diaz & Marathe, CVPR 2019, "Soft Labels for Ordinal Regression"): softmax p over
    the years, soft labels q_k = softmax_k(-phi(y, k)) for the true year y (its rounded label),

        L = KL(q || p)   (the cross-entropy with soft targets, less the constant entropy of q),

    phi(y, k) = (y - k)^2, the paper's squared distance, when `model.label_sigma` is 0; a sigma > 0
    scales it to (y - k)^2 / (2 sigma^2), the same std in years as the other soft-label heads (the
    default is sigma = 1/sqrt(2) years). With this metric the labels are a Gaussian, as in DLDL.
    Decoded by `model.decode` (auto: the expectation). Target age only.
    """

    title = "soft ordinal labels: SORD (a softmax over the years fitted to soft labels by distance)"
    description = "KL divergence to soft labels softmax(-(y - k)^2) that encode how far each year is (Diaz & Marathe, CVPR 2019)."
    default_decoder = "mean"
    soft_labels = True
    output = "distribution"
    distill_student = True

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        _age_target_only(cfg, self.name)
        super().__init__(cfg, in_features, groups)
        # label_sigma: the soft labels' std in years, as on the class and dldl_v2 heads (the paper's phi: 1/sqrt(2))
        self.phi_scale = 2.0 * float(cfg.label_sigma) ** 2 if cfg.label_sigma > 0 else 1.0
        self.label_sigma = float(cfg.label_sigma) or math.sqrt(0.5)

    def _loss(self, logits, labels, age, w):  # type: ignore[no-untyped-def]
        target = fl.sord_labels(labels, self.num_classes, self.phi_scale)
        return (fl.kl_divergence(target, logits) * w).mean()

    def extra_repr(self) -> str:
        return f"target={self.target}, classes={self.num_classes}, groups={len(self.groups)}, phi=(y-k)^2/{self.phi_scale:g}"


@register_head("unimodal")
class UnimodalHead(Head):
    """Binomial unimodal output (Beckham & Pal, ICML 2017, "Unimodal Probability Distributions for Deep
    Ordinal Classification"): two outputs per image, z and t; p = sigmoid(z) is a binomial
    parameter and tau = softplus(t) + 0.05 a temperature learnt per image,

        P(y = k) = softmax_k(log Binomial(k; K - 1, p) / tau),  k = 0..K-1 = max_age,

    loss: the cross-entropy of that distribution at the true year. The distribution is unimodal for
    any p and tau. The log binomial coefficients are a buffer computed once (no lgamma in the graph).
    Decoded by `model.decode` (auto: the mode, the paper's argmax; mean/median are often better for
    MAE). Starts at tau = 1 and p = the prior's mean year / max_age. Target age only.
    """

    title = "unimodal: a binomial distribution over the years with a learnt temperature"
    description = "One binomial parameter and a temperature per image give a distribution with a single peak (Beckham & Pal, ICML 2017)."
    default_decoder = "mode"  # the paper's argmax
    soft_labels = False
    output = "distribution"
    distill_student = False

    tau_min = 0.05

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        _age_target_only(cfg, self.name)
        super().__init__(cfg, in_features, groups)
        self.fc = nn.Linear(in_features, 2)
        self.register_buffer("log_coef", fl.log_binomial_coefficients(self.num_classes - 1), persistent=False)
        self.init_prior(self.default_counts())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    @torch.no_grad()
    def init_prior(self, counts: np.ndarray) -> None:
        """p = the mean label / (K - 1), tau = 1 for zero features."""
        c = np.asarray(counts, dtype=np.float64)
        mean = float((c * np.arange(c.size)).sum() / c.sum())
        self.fc.bias[0] = logit_of(np.array([mean / (self.num_classes - 1)]))[0]
        self.fc.bias[1] = float(np.log(np.expm1(1.0 - self.tau_min)))  # softplus^-1(1 - tau_min)

    def log_proba(self, logits: torch.Tensor) -> torch.Tensor:
        tau = F.softplus(logits[:, 1]) + self.tau_min
        return fl.unimodal_log_proba(logits[:, 0], tau, self.log_coef)

    def _loss(self, logits, labels, age, w):  # type: ignore[no-untyped-def]
        return (F.nll_loss(self.log_proba(logits), labels, reduction="none") * w).mean()

    def _decode(self, logits: torch.Tensor) -> Decoded:
        proba = self.log_proba(logits).exp()
        age = self.age_from(proba)
        return Decoded(self.group_of_age(age), age, self.years_to_groups(proba), None, proba)


@register_head("orcnn")
class OrcnnHead(Head):
    """OR-CNN (Niu, Zhou, Wang, Gao, Hua, CVPR 2016, "Ordinal Regression with Multiple Output CNN for Age
    Estimation"): K-1 binary tasks "age > k", each with its own weight vector and bias (CORAL
    shares one weight vector; `nn.Linear(F, K-1)` here), loss

        L = sum_k lambda_k BCE(sigmoid(z_k), [y > k])   per image, averaged over the batch.

    lambda_k = 1 by default; `model.coral_importance: balanced` sets CORAL's label-frequency task
    weights (`coral_importance_weights`; the paper weights tasks by their data too, by its own formula).
    Decoded as CORAL: age = #{k: sigmoid(z_k) > 0.5} (the median, for `auto`), label_proba from
    `rank_to_label_proba` (the ranks may disagree: clipped, renormalised). Biases start at the label
    prior's logit P(y > k). Target age only.
    """

    title = "ordinal regression: OR-CNN (independent binary 'older than k' outputs)"
    description = "K-1 binary tasks 'age > k', each with its own weight vector (Niu et al., CVPR 2016)."
    default_decoder = "median"
    soft_labels = False
    output = "ranks"
    distill_student = False

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        _age_target_only(cfg, self.name)
        super().__init__(cfg, in_features, groups)
        if cfg.coral_importance not in CORAL_IMPORTANCE:
            raise UsageError(f"config key 'model.coral_importance': unknown value {cfg.coral_importance!r} "
                             f"({', '.join(CORAL_IMPORTANCE)})")
        self.balanced = cfg.coral_importance == "balanced"
        self.fc = nn.Linear(in_features, self.num_classes - 1)
        self.register_buffer("importance", torch.ones(self.num_classes - 1))
        self.init_prior(self.default_counts())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    @torch.no_grad()
    def init_prior(self, counts: np.ndarray) -> None:
        self.fc.bias.copy_(logit_of(tail_proba(counts)))

    def fit_prior(self, ages: np.ndarray) -> None:
        """Label prior; with `coral_importance: balanced` also the task weights."""
        super().fit_prior(ages)
        if self.balanced:
            self.importance.copy_(torch.from_numpy(coral_importance_weights(self.labels_of(ages), self.num_classes)))

    def _loss(self, logits, labels, age, w):  # type: ignore[no-untyped-def]
        return (fl.rank_bce(logits, labels, self.importance) * w).mean()

    def _decode(self, logits: torch.Tensor) -> Decoded:
        rank_proba = torch.sigmoid(logits)
        return self._decode_label_proba(rank_to_label_proba(rank_proba), proba_to_label(rank_proba), rank_proba)
