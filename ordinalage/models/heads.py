"""Heads: a registry of output layers by name; each gives logits, a float32 loss and a decoding.

    class          cross-entropy over single years (target age) or over the age groups (target group)
    coral          CORAL ordinal regression (coral-pytorch `CoralLayer` + `coral_loss`)
    corn           CORN ordinal regression (conditional binary tasks)
    regression     one output, L1 / MSE / Huber on the age
  the field's methods (target age only; maths in `field_losses.py`, papers and defaults in docs/heads.md):
    mean_variance  softmax; CE + 0.2 mean loss + 0.05 variance loss (Pan et al., CVPR 2018)
    dldl_v2        softmax; KL to a Gaussian label distribution + |E[y] - y| (Gao et al., IJCAI 2018)
    sord           softmax; KL to soft ordinal labels softmax(-(y - k)^2) (Diaz & Marathe, CVPR 2019)
    unimodal       one binomial parameter and a learnt temperature (Beckham & Pal, ICML 2017)
    orcnn          K-1 rank tasks with independent weights (Niu et al., CVPR 2016)

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
- regression: age = the output clamped to [0, max_age]; group_proba is one-hot; label_proba is a
  nominal distribution with that exact mean (`REGRESSION_SIGMA`, see `RegressionHead`).
- the field's heads: their softmax (mean_variance, dldl_v2, sord) or binomial (unimodal) over the
  years decoded by `model.decode` (auto: the mean; unimodal: the mode), ORCNN as CORAL.
Every head's label_proba is non-negative and sums to 1 (prior correction, intervals, ensembles).
For target age the group is always `groups.clip_indices(age)` and group_proba sums the year
probabilities of each group (years below the first group count for it, years above the last for
the last), so the group may differ from the argmax of group_proba.

Label distributions (class head, target age, `label_sigma` > 0): the cross-entropy target is a
Gaussian over the years centred on the true age with std `label_sigma` (DLDL, Gao et al. 2017),
so that a near miss costs less than a far one; 0 keeps one-hot labels. `label_sigma` is the
std of the soft labels for `dldl_v2` (0: its paper's 2 years) and `sord` too (0: its paper's
phi = (y - k)^2, i.e. a std of 1/sqrt(2) years); other heads refuse it.

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

import math
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
from ordinalage.models import field_losses as fl

TARGETS = ("age", "group")
REGRESSION_LOSSES = ("l1", "mse", "huber")
CORAL_IMPORTANCE = ("none", "balanced")
SOFT_LABEL_HEADS = ("class", "dldl_v2", "sord")  # heads that read `model.label_sigma` (target age)
REGRESSION_SIGMA = 4.0  # years: the spread of the regression head's nominal label distribution


class Decoded(NamedTuple):
    """Predictions of one batch: group long (N,), age float (N,), group_proba (N, G), rank_proba (N, K-1)
    or None, and label_proba (N, K): the head's distribution over its labels (single years 0..max_age
    for target age, groups for target group); every registered head gives one (rows sum to 1)."""

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
        raise UsageError(f"config key 'model.head': unknown head {cfg.head!r} (known: {', '.join(HEADS)})")
    if cfg.target not in TARGETS:
        raise UsageError(f"config key 'model.target': unknown target {cfg.target!r} ({', '.join(TARGETS)})")
    if cfg.max_age < 1:
        raise UsageError(f"config key 'model.max_age': must be at least 1, got {cfg.max_age}")
    if cfg.label_sigma < 0 or (cfg.label_sigma > 0 and (cfg.head not in SOFT_LABEL_HEADS or cfg.target != "age")):
        heads = ", ".join(repr(h) for h in SOFT_LABEL_HEADS)
        raise UsageError(f"config key 'model.label_sigma': soft labels need head {heads} with target 'age' and a "
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

    label_proba: a nominal distribution over the years, not learnt: a discretised Gaussian of std
    `REGRESSION_SIGMA` (4 years) around the decoded age whose mean is exactly that age
    (`field_losses.mean_preserving_gaussian`: cut symmetrically near 0 and max_age). It lets
    ensembles average a regression member with others (the mean decoder gives back the mean of the
    members' ages) and intervals use it; prior correction still refuses the regression head (its
    spread is a constant, not the model's uncertainty). group_proba stays one-hot on the age's group.
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
        label_proba = fl.mean_preserving_gaussian(age, self.num_classes, REGRESSION_SIGMA)
        return Decoded(group, age, F.one_hot(group, len(self.groups)).float(), None, label_proba)


# ------------------------------------------------------------------------------------------------
# The field's methods (docs/heads.md): single years only, registered after the four heads above so
# that the registry lists those first. Maths in field_losses.py.


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
        self.fc.bias[0] = _logit(np.array([mean / (self.num_classes - 1)]))[0]
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
        self.fc.bias.copy_(_logit(tail_proba(counts)))

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
