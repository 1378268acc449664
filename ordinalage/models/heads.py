"""Heads: a registry of output layers by name; each gives logits, a float32 loss and a decoding.

    class        cross-entropy over single years (target age) or over the age groups (target group)
    coral        CORAL ordinal regression (coral-pytorch `CoralLayer` + `coral_loss`)
    corn         CORN ordinal regression (conditional binary tasks)
    regression   one output, L1 / MSE / Huber on the age

Targets (`ModelConfig.target`): `age` uses labels clamp(round(age), 0, max_age), i.e. max_age + 1
classes (max_age ranks for CORAL/CORN); `group` uses the age-group index (G classes, G - 1 ranks).

Every loss is computed in float32 with autocast off, whatever the logits' dtype (under autocast a
linear head gives bf16/fp16 logits). `weight` (per sample) multiplies each sample's loss; the head's
`class_weights` buffer (per age group, ones unless given to `build_head`) does too, via `group`.

Decoding (`decode(logits) -> Decoded`), every head gives both a group and an age:
- ordinal heads: rank probabilities P(label > k) are sigmoid(logits) (CORAL) or their cumulative
  product (CORN); the predicted label is the number of probabilities above 0.5 (as in the CORAL
  and CORN papers: the median of the predicted distribution, which minimises the expected absolute
  error). Label probabilities are the differences of neighbouring rank probabilities (clipped at 0,
  renormalised). Target age: age = the predicted label; target group: group = the predicted label
  and age = the expected group midpoint.
- class head: target age: age = the expected value of the softmax over years (DEX; smoother and
  lower MAE than the argmax); target group: group = argmax, age = the expected group midpoint.
- regression: age = the output clamped to [0, max_age]; group_proba is one-hot.
For target age the group is always `groups.clip_indices(age)` and group_proba sums the year
probabilities of each group (years below the first group count for it, years above the last for
the last), so the group may differ from the argmax of group_proba.

Label distributions (class head, target age, `label_sigma` > 0): the cross-entropy target is a
Gaussian over the years centred on the true age with std `label_sigma` (DLDL, Gao et al. 2017),
so that a near miss costs less than a far one; 0 keeps one-hot labels.

Starting points: the class, CORAL and CORN heads initialise their output biases to a label prior,
so that before training they predict its distribution (softmax bias = log p; CORAL bias_k =
logit P(label > k); CORN bias_k = logit P(label > k | label >= k)). Without data the prior is
uniform over the years the groups cover (a 3:1 weight over the years outside them); coral-pytorch's
own `preinit_bias` would start every rank probability above 0.5, i.e. predict max_age for all.
`head.fit_prior(train_ages)` sets the prior from the training ages (counts + 0.5), the regression
head's offset and scale (median and spread of the training ages; logits are (age - offset) / scale)
and, with `coral_importance: balanced`, the CORAL task weights (`coral_importance_weights`). All of
these are parameters or buffers, so they travel in checkpoints. `CoralHead.set_importance(w)` sets
task weights directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from coral_pytorch.dataset import proba_to_label
from coral_pytorch.layers import CoralLayer
from coral_pytorch.losses import coral_loss
from torch import nn

from ordinalage.config import ModelConfig, age_decoder
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

TARGETS = ("age", "group")
REGRESSION_LOSSES = ("l1", "mse", "huber")
CORAL_IMPORTANCE = ("none", "balanced")


class Decoded(NamedTuple):
    """Predictions of one batch: group long (N,), age float (N,), group_proba (N, G), rank_proba (N, K-1)
    or None, and label_proba (N, K): the head's distribution over its labels (single years 0..max_age
    for target age, groups for target group), None for the regression head, which has none."""

    group: torch.Tensor
    age: torch.Tensor
    group_proba: torch.Tensor
    rank_proba: torch.Tensor | None
    label_proba: torch.Tensor | None = None


HEADS: dict[str, type[Head]] = {}


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    """Class decorator: register a Head subclass under `name`."""

    def deco(cls: type[Head]) -> type[Head]:
        if name in HEADS:
            raise ValueError(f"head {name!r} is registered twice")
        HEADS[name] = cls
        cls.name = name
        return cls

    return deco


def build_head(cfg: ModelConfig, in_features: int, groups: AgeGroups, class_weights: np.ndarray | None = None,
               train_ages: np.ndarray | None = None) -> Head:
    """Build the head named by `cfg.head`.

    `class_weights`: one weight per age group (G,), multiplying each sample's loss through its group.
    `train_ages`: the training split's ages, passed to `head.fit_prior` (see the module docstring).
    """
    cls = HEADS.get(cfg.head)
    if cls is None:
        raise UsageError(f"config key 'model.head': unknown head {cfg.head!r} (known: {', '.join(sorted(HEADS))})")
    if cfg.target not in TARGETS:
        raise UsageError(f"config key 'model.target': unknown target {cfg.target!r} ({', '.join(TARGETS)})")
    if cfg.max_age < 1:
        raise UsageError(f"config key 'model.max_age': must be at least 1, got {cfg.max_age}")
    if cfg.label_sigma < 0 or (cfg.label_sigma > 0 and (cfg.head != "class" or cfg.target != "age")):
        raise UsageError(f"config key 'model.label_sigma': soft labels need head 'class' with target 'age' and a "
                         f"sigma >= 0 in years; got {cfg.label_sigma} for head {cfg.head!r}, target {cfg.target!r}")
    head = cls(cfg, in_features, groups)
    if class_weights is not None:
        head.set_class_weights(class_weights)
    if train_ages is not None:
        head.fit_prior(np.asarray(train_ages, dtype=float))
    return head


def age_labels(age: torch.Tensor, max_age: int) -> torch.Tensor:
    """Single-year labels: clamp(round(age), 0, max_age) as int64."""
    return torch.round(age.float()).clamp(0, max_age).long()


def gaussian_label_distribution(age: torch.Tensor, num_classes: int, sigma: float) -> torch.Tensor:
    """(N,) ages -> (N, num_classes) soft labels: a Gaussian over the years 0..num_classes-1 centred on
    the age (clamped to that range) with std `sigma` years, normalised to sum to 1 (DLDL)."""
    years = torch.arange(num_classes, dtype=torch.float32, device=age.device)
    centre = age.float().clamp(0, num_classes - 1)[:, None]
    return torch.softmax(-0.5 * ((years - centre) / sigma) ** 2, dim=1)


def ordinal_levels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Extended binary labels (N, K-1): level k is 1 where label > k (vectorised `levels_from_labelbatch`)."""
    return (labels[:, None] > torch.arange(num_classes - 1, device=labels.device)).float()


def coral_importance_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """CORAL paper task weights: sqrt(max(m_k, n - m_k)) / max_k(...), m_k = #labels > k."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return np.ones(num_classes - 1, dtype=np.float32)
    above = labels.size - np.cumsum(np.bincount(labels, minlength=num_classes))[: num_classes - 1]
    m = np.sqrt(np.maximum(above, labels.size - above).astype(np.float64))
    return (m / m.max()).astype(np.float32)


def tail_proba(counts: np.ndarray) -> np.ndarray:
    """P(label > k) for k = 0..K-2 from label counts (K,)."""
    p = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    return np.clip(1.0 - np.cumsum(p)[:-1], 1e-6, 1 - 1e-6)


def _logit(p: np.ndarray) -> torch.Tensor:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return torch.from_numpy(np.log(p) - np.log1p(-p)).float()


def rank_to_label_proba(rank_proba: torch.Tensor) -> torch.Tensor:
    """P(label > k) (N, K-1) -> P(label = k) (N, K), clipped at 0 and renormalised."""
    n = rank_proba.shape[0]
    ones = torch.ones(n, 1, dtype=rank_proba.dtype, device=rank_proba.device)
    zeros = torch.zeros_like(ones)
    upper = torch.cat([ones, rank_proba], 1)  # P(label >= k)
    lower = torch.cat([rank_proba, zeros], 1)  # P(label >= k + 1)
    p = (upper - lower).clamp_min(0)
    return p / p.sum(1, keepdim=True).clamp_min(1e-12)


class Head(nn.Module):
    """Base head: labels, sample weights, year-to-group binning; subclasses give forward/_loss/decode."""

    name = "base"

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        super().__init__()
        self.target = cfg.target
        self.max_age = int(cfg.max_age)
        self.groups = groups
        self.num_classes = self.max_age + 1 if self.target == "age" else len(groups)
        self.in_features = in_features
        self.decoder = age_decoder(self.name, cfg.decode)  # mean | median | mode of the label distribution
        g = len(groups)
        self.register_buffer("class_weights", torch.ones(g))
        years = np.arange(self.max_age + 1)
        self.register_buffer("year_to_group", torch.from_numpy(groups.clip_indices(years)).long(), persistent=False)
        self.register_buffer("midpoints", torch.tensor(groups.midpoints(), dtype=torch.float32), persistent=False)

    # -- interface --------------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, age: torch.Tensor, group: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss of the batch (float32, autocast off); `weight` (N,) multiplies each sample's loss."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            labels = age_labels(age, self.max_age) if self.target == "age" else group.long()
            w = self.class_weights[group.long()]
            if weight is not None:
                w = w * weight.float()
            return self._loss(logits.float(), labels, age.float(), w)

    def decode(self, logits: torch.Tensor) -> Decoded:
        """Logits -> Decoded (float32)."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self._decode(logits.detach().float())

    def set_class_weights(self, weights: np.ndarray | torch.Tensor) -> None:
        """One loss weight per age group."""
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if w.shape != (len(self.groups),):
            raise UsageError(f"class weights: expected one per age group ({len(self.groups)}), got shape {tuple(w.shape)}")
        self.class_weights.copy_(w)

    def fit_prior(self, ages: np.ndarray) -> None:
        """Set data-dependent starting points from the training ages (label prior by default)."""
        labels = self.labels_of(ages)
        if labels.size:
            self.init_prior(np.bincount(labels, minlength=self.num_classes) + 0.5)

    def init_prior(self, counts: np.ndarray) -> None:
        """Set the output biases so the head predicts the label distribution `counts` (default: nothing)."""

    def default_counts(self) -> np.ndarray:
        """Data-free prior: 1.5 for the labels inside the groups' span, 0.5 for the others."""
        counts = np.full(self.num_classes, 0.5)
        if self.target == "group":
            return counts + 1.0
        top = self.groups.max_age if np.isfinite(self.groups.max_age) else self.groups.groups[-1].lo + 10
        counts[int(self.groups.min_age): int(min(top, self.max_age)) + 1] += 1.0
        return counts

    def labels_of(self, ages: np.ndarray) -> np.ndarray:
        """The head's integer labels for numpy ages (years, or group indices for target group)."""
        a = np.asarray(ages, dtype=float)
        if self.target == "age":
            return np.clip(np.round(a), 0, self.max_age).astype(np.int64)
        return self.groups.clip_indices(a)

    # -- helpers ----------------------------------------------------------------------------

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, age: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, logits: torch.Tensor) -> Decoded:
        raise NotImplementedError

    def group_of_age(self, age: torch.Tensor) -> torch.Tensor:
        """`groups.clip_indices` on the device for ages in [0, max_age] (only whole years matter)."""
        years = torch.floor(age).clamp(0, self.max_age).long()
        return self.year_to_group[years]

    def years_to_groups(self, year_proba: torch.Tensor) -> torch.Tensor:
        """(N, max_age + 1) year probabilities -> (N, G) group probabilities (renormalised)."""
        out = year_proba @ F.one_hot(self.year_to_group, len(self.groups)).to(year_proba.dtype)
        return out / out.sum(1, keepdim=True).clamp_min(1e-12)

    def age_from(self, label_proba: torch.Tensor) -> torch.Tensor:
        """The age of each row of a (N, max_age + 1) year distribution by `model.decode`."""
        years = torch.arange(label_proba.shape[1], dtype=label_proba.dtype, device=label_proba.device)
        if self.decoder == "mean":
            return label_proba @ years
        if self.decoder == "mode":
            return label_proba.argmax(1).to(label_proba.dtype)
        cdf = label_proba.cumsum(1) / label_proba.sum(1, keepdim=True).clamp_min(1e-12)
        return (cdf < 0.5 - 1e-6).sum(1).clamp_max(label_proba.shape[1] - 1).to(label_proba.dtype)

    def _decode_label_proba(self, label_proba: torch.Tensor, label: torch.Tensor,
                            rank_proba: torch.Tensor | None) -> Decoded:
        """Shared ending for ordinal heads: the predicted label (the rank count, for `auto`/median)
        and its distribution -> Decoded."""
        if self.target == "age":
            age = label.float() if self.decoder == "median" else self.age_from(label_proba)
            return Decoded(self.group_of_age(age), age, self.years_to_groups(label_proba), rank_proba, label_proba)
        return Decoded(label.long(), label_proba @ self.midpoints, label_proba, rank_proba, label_proba)

    def extra_repr(self) -> str:
        return f"target={self.target}, classes={self.num_classes}, groups={len(self.groups)}"


@register_head("class")
class ClassHead(Head):
    """Linear layer + softmax cross-entropy over years or groups."""

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
        self.coral.coral_bias.copy_(_logit(tail_proba(counts)))

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
        self.fc.bias.copy_(_logit(tail / at_least))

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
    """

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
        return Decoded(group, age, F.one_hot(group, len(self.groups)).float(), None)
