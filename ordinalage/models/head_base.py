"""What every head shares: the `Head` base class, its `Decoded` output, the registry (`HEADS`,
`register_head`) and the label arithmetic (single-year labels, Gaussian label distributions,
ordinal levels, CORAL importance weights, rank probabilities to label probabilities)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ordinalage.config import ModelConfig, age_decoder
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

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


def logit_of(p: np.ndarray) -> torch.Tensor:
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
