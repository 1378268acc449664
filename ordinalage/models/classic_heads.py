"""The four classic heads: classification (`class`), CORAL, CORN and regression."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from coral_pytorch.dataset import proba_to_label
from coral_pytorch.layers import CoralLayer
from coral_pytorch.losses import coral_loss
from torch import nn

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models import field_losses as fl
from ordinalage.models.head_base import (
    CORAL_IMPORTANCE,
    REGRESSION_LOSSES,
    REGRESSION_SIGMA,
    Decoded,
    Head,
    coral_importance_weights,
    gaussian_label_distribution,
    logit_of,
    ordinal_levels,
    rank_to_label_proba,
    register_head,
    tail_proba,
)


@register_head("class")
class ClassHead(Head):
    """Linear layer + softmax cross-entropy over years or groups."""

    title = "classification: a softmax over the labels"
    description = "Cross-entropy over single years (or age groups), with Gaussian soft labels when label_sigma > 0."
    default_decoder = "mean"  # DEX's expectation over the years
    soft_labels = True
    output = "distribution"
    distill_student = True

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        super().__init__(cfg, in_features, groups)
        self.fc = nn.Linear(in_features, self.num_classes)
        self.label_sigma = float(cfg.label_sigma) if self.target == "age" else 0.0
        self.init_prior(self.default_counts())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    @torch.no_grad()
    def init_prior(self, counts: np.ndarray) -> None:
        p = np.asarray(counts, dtype=np.float64) / np.sum(counts)
        self.fc.bias.copy_(torch.from_numpy(np.log(p)).float())

    def _loss(self, logits, labels, age, w):  # type: ignore[no-untyped-def]
        target = gaussian_label_distribution(age, self.num_classes, self.label_sigma) if self.label_sigma > 0 else labels
        return (F.cross_entropy(logits, target, reduction="none") * w).mean()

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", label_sigma={self.label_sigma}" if self.label_sigma else "")

    def _decode(self, logits: torch.Tensor) -> Decoded:
        proba = logits.softmax(1)
        if self.target == "age":
            age = self.age_from(proba)
            return Decoded(self.group_of_age(age), age, self.years_to_groups(proba), None, proba)
        return Decoded(proba.argmax(1), proba @ self.midpoints, proba, None, proba)


@register_head("coral")
class CoralHead(Head):
    """CORAL: one shared weight vector, K-1 biases (coral-pytorch `CoralLayer`), `coral_loss`."""

    title = "ordinal regression: CORAL (rank-consistent binary 'older than k' outputs)"
    description = "K-1 binary tasks 'age > k' sharing one weight vector, so the rank probabilities never cross."
    default_decoder = "median"  # the number of P(age > k) > 0.5
    soft_labels = False
    output = "ranks"
    distill_student = False

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        super().__init__(cfg, in_features, groups)
        if cfg.coral_importance not in CORAL_IMPORTANCE:
            raise UsageError(f"config key 'model.coral_importance': unknown value {cfg.coral_importance!r} "
                             f"({', '.join(CORAL_IMPORTANCE)})")
        self.balanced = cfg.coral_importance == "balanced"
        self.coral = CoralLayer(in_features, self.num_classes)
        self.register_buffer("importance", torch.ones(self.num_classes - 1))
        self.init_prior(self.default_counts())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.coral(features)

    def set_importance(self, weights: np.ndarray | torch.Tensor) -> None:
        """Task weights, one per rank (K-1,)."""
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if w.shape != self.importance.shape:
            raise UsageError(f"CORAL importance weights: expected shape {tuple(self.importance.shape)}, got {tuple(w.shape)}")
        self.importance.copy_(w)

    @torch.no_grad()
    def init_prior(self, counts: np.ndarray) -> None:
        self.coral.coral_bias.copy_(logit_of(tail_proba(counts)))

    def fit_prior(self, ages: np.ndarray) -> None:
        """Label prior; with `coral_importance: balanced` also the task weights."""
        super().fit_prior(ages)
        if self.balanced:
            self.set_importance(coral_importance_weights(self.labels_of(ages), self.num_classes))

    def _loss(self, logits, labels, age, w):  # type: ignore[no-untyped-def]
        levels = ordinal_levels(labels, self.num_classes)
        per_sample = coral_loss(logits, levels, importance_weights=self.importance, reduction=None)
        return (per_sample * w).mean()

    def _decode(self, logits: torch.Tensor) -> Decoded:
        rank_proba = torch.sigmoid(logits)
        return self._decode_label_proba(rank_to_label_proba(rank_proba), proba_to_label(rank_proba), rank_proba)


def corn_loss_weighted(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """coral-pytorch's `corn_loss` without its Python loop over tasks, plus per-sample weights.

    Task k is trained on the samples with label >= k, target label > k; the sum of their binary
    cross-entropies is divided by the number of (sample, task) pairs used. With `weight` None this
    equals `coral_pytorch.losses.corn_loss(logits, labels, K)` (checked in the tests), without its
    K boolean-mask indexings (each a device sync on CUDA).
    """
    ranks = torch.arange(logits.shape[1], device=logits.device)
    used = (labels[:, None] >= ranks).to(logits.dtype)
    target = (labels[:, None] > ranks).to(logits.dtype)
    per_sample = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * used).sum(1)
    if weight is not None:
        per_sample = per_sample * weight
    return per_sample.sum() / used.sum()


@register_head("corn")
class CornHead(Head):
    """CORN: K-1 independent logits for the conditional tasks P(label > k | label > k-1)."""

    title = "ordinal regression: CORN (conditional binary 'older than k' outputs)"
    description = "K-1 conditional tasks P(age > k | age > k-1) whose running product gives the rank probabilities."
    default_decoder = "median"
    soft_labels = False
    output = "ranks"
    distill_student = False

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        super().__init__(cfg, in_features, groups)
        self.fc = nn.Linear(in_features, self.num_classes - 1)
        self.init_prior(self.default_counts())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    @torch.no_grad()
    def init_prior(self, counts: np.ndarray) -> None:
        tail = tail_proba(counts)  # P(label > k)
        at_least = np.concatenate([[1.0], tail[:-1]])  # P(label >= k)
        self.fc.bias.copy_(logit_of(tail / at_least))

    def _loss(self, logits, labels, age, w):  # type: ignore[no-untyped-def]
        return corn_loss_weighted(logits, labels, w)

    def _decode(self, logits: torch.Tensor) -> Decoded:
        rank_proba = torch.cumprod(torch.sigmoid(logits), dim=1)
        return self._decode_label_proba(rank_to_label_proba(rank_proba), proba_to_label(rank_proba), rank_proba)


@register_head("regression")
class RegressionHead(Head):
    """One output z; age = offset + scale * z. Loss on the standardised error (age error / scale).

    The offset and scale are buffers: by default the mean group midpoint and 10 years; `fit_prior`
    sets them to the median and standard deviation of the training ages. The output layer starts at
    zero, so the first prediction is the offset. Losses: `l1` (MAE / scale), `mse`, `huber` (delta 1,
    i.e. one scale unit). Target `group` is not supported: this head regresses the age.

    label_proba: a nominal distribution over the years, not learnt: a discretised Gaussian of std
    `REGRESSION_SIGMA` (4 years) around the decoded age whose mean is exactly that age
    (`field_losses.mean_preserving_gaussian`: cut symmetrically near 0 and max_age). It lets
    ensembles average a regression member with others (the mean decoder gives back the mean of the
    members' ages) and intervals use it; prior correction still refuses the regression head (its
    spread is a constant, not the model's uncertainty). group_proba stays one-hot on the age's group.
    """

    title = "regression: one age in years"
    description = "One output scaled to an age, trained with an L1, MSE or Huber loss on the age."
    default_decoder = "mean"  # the mean of its nominal distribution is its age
    soft_labels = False
    output = "age"
    distill_student = False

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        super().__init__(cfg, in_features, groups)
        if cfg.target != "age":
            raise UsageError("config key 'model.target': the regression head predicts the age; use target 'age'")
        if cfg.regression_loss not in REGRESSION_LOSSES:
            raise UsageError(f"config key 'model.regression_loss': unknown value {cfg.regression_loss!r} "
                             f"({', '.join(REGRESSION_LOSSES)})")
        self.loss_name = cfg.regression_loss
        self.fc = nn.Linear(in_features, 1)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        offset = float(np.clip(np.mean(groups.midpoints()), 0, self.max_age))
        self.register_buffer("offset", torch.tensor(offset))
        self.register_buffer("scale", torch.tensor(10.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def set_init_age(self, offset: float, scale: float | None = None) -> None:
        """Set the age the head predicts for a zero output (and optionally the scale)."""
        self.offset.fill_(float(offset))
        if scale is not None:
            self.scale.fill_(max(float(scale), 1.0))

    def fit_prior(self, ages: np.ndarray) -> None:
        a = np.clip(np.asarray(ages, dtype=float), 0, self.max_age)
        if a.size:
            self.set_init_age(float(np.median(a)), float(a.std()) if a.size > 1 else None)

    def ages_from(self, logits: torch.Tensor) -> torch.Tensor:
        """Unclamped age estimate (float32) from the raw outputs."""
        return self.offset + self.scale * logits.float()[:, 0]

    def _loss(self, logits, labels, age, w):  # type: ignore[no-untyped-def]
        err_pred = self.ages_from(logits) / self.scale
        err_true = age.clamp(0, self.max_age) / self.scale
        if self.loss_name == "l1":
            per = F.l1_loss(err_pred, err_true, reduction="none")
        elif self.loss_name == "mse":
            per = F.mse_loss(err_pred, err_true, reduction="none")
        else:
            per = F.huber_loss(err_pred, err_true, reduction="none", delta=1.0)
        return (per * w).mean()

    def _decode(self, logits: torch.Tensor) -> Decoded:
        age = self.ages_from(logits).clamp(0, self.max_age)
        group = self.group_of_age(age)
        label_proba = fl.mean_preserving_gaussian(age, self.num_classes, REGRESSION_SIGMA)
        return Decoded(group, age, F.one_hot(group, len(self.groups)).float(), None, label_proba)
