"""What every head shares: the `Head` base class, its `Decoded` output, the registry (`HEADS`,
`register_head`, `add_head`), the traits each head declares (`HeadTraits`, `head_traits`) and the
label arithmetic (single-year labels, Gaussian label distributions, ordinal levels, CORAL importance
weights, rank probabilities to label probabilities).

A head is one class: everything the rest of the package asks of it is a class attribute of that
class (its title and description for cards and reports, its `auto` decoder, whether it reads
`model.label_sigma`, what its output means for prior correction, whether it can be a distilled
student). The layers that may not import torch (posterior, reporting) get them as a `HeadTraits`,
computed here and handed down (`LoadedModel.head_traits`, `CardFacts.head`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ordinalage.config import DECODE_RULES, ModelConfig
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

TARGETS = ("age", "group")


REGRESSION_LOSSES = ("l1", "mse", "huber")


CORAL_IMPORTANCE = ("none", "balanced")


DECODERS = ("mean", "median", "mode")  # what `model.decode: auto` may mean for a head (`Head.default_decoder`)


OUTPUTS = ("distribution", "ranks", "age")  # what a head's output means for the posterior (`Head.output`)


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


@dataclass(frozen=True)
class HeadTraits:
    """What the package asks of a head, torch-free (see `Head` for the meaning of each field)."""

    name: str
    title: str
    description: str
    default_decoder: str
    soft_labels: bool
    output: str
    distill_student: bool

    @property
    def prior_correction(self) -> bool:
        """Whether prior correction applies: the output is a distribution (or ranks turned into one)."""
        return self.output != "age"

    def decoder(self, decode: str = "auto") -> str:
        """The age decoder of `model.decode` for this head: `auto` is its `default_decoder`."""
        if decode not in DECODE_RULES:
            raise UsageError(f"config key 'model.decode': unknown value {decode!r} ({', '.join(DECODE_RULES)})")
        return self.default_decoder if decode == "auto" else decode


HEADS: dict[str, type[Head]] = {}


def trait_problems(cls: type[Head]) -> list[str]:
    """What is wrong with the traits a head class declares ([] when they are all valid)."""
    problems = []
    for attr in ("title", "description"):
        value = getattr(cls, attr, None)
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            problems.append(f"{attr} must be one non-empty line, got {value!r}")
    if getattr(cls, "default_decoder", None) not in DECODERS:
        problems.append(f"default_decoder must be one of {', '.join(DECODERS)}, got {cls.default_decoder!r}")
    if getattr(cls, "output", None) not in OUTPUTS:
        problems.append(f"output must be one of {', '.join(OUTPUTS)}, got {cls.output!r}")
    for attr in ("soft_labels", "distill_student"):
        if not isinstance(getattr(cls, attr, None), bool):
            problems.append(f"{attr} must be True or False, got {getattr(cls, attr, None)!r}")
    return problems


def add_head(name: str, cls: type[Head]) -> type[Head]:
    """Register the Head subclass `cls` under `name` (ValueError: a name taken, or invalid traits)."""
    if name in HEADS:
        raise ValueError(f"head {name!r} is registered twice")
    if not (isinstance(cls, type) and issubclass(cls, Head)):
        raise ValueError(f"head {name!r}: {cls!r} is not a subclass of ordinalage.models.head_base.Head")
    problems = trait_problems(cls)
    if problems:
        raise ValueError(f"head {name!r} ({cls.__qualname__}): " + "; ".join(problems))
    HEADS[name] = cls
    cls.name = name
    return cls


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    """Class decorator: register a Head subclass under `name` (see `add_head`)."""

    def deco(cls: type[Head]) -> type[Head]:
        return add_head(name, cls)

    return deco


def head_traits(name: str) -> HeadTraits:
    """The traits of the registered head `name` (UsageError naming `model.head` when unknown). The
    heads register on import of `ordinalage.models.heads`, which re-exports this function."""
    from ordinalage.plugins import load_plugins

    load_plugins("ordinalage.heads", add_head, builtin=HEADS, need=name)  # an installed head's run, too
    cls = HEADS.get(name)
    if cls is None:
        raise UsageError(f"config key 'model.head': unknown head {name!r} (known: {', '.join(HEADS)})")
    return cls.traits()


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
    """Base head: labels, sample weights, year-to-group binning; subclasses give forward/_loss/decode.

    Each registered head declares its traits as class attributes (checked by `register_head`):

    - `title`: one line for model cards and reports, e.g. "ordinal regression: CORAL (...)";
    - `description`: one sentence on what it learns;
    - `default_decoder`: mean | median | mode, what `model.decode: auto` means for this head;
    - `soft_labels`: it reads `model.label_sigma` (soft labels over the years, target age);
    - `output`: "distribution" (a distribution over its labels; prior correction applies), "ranks"
      (ordinal rank probabilities turned into a distribution; prior correction applies) or "age"
      (one age; its label_proba is nominal, prior correction does not apply);
    - `distill_student`: it can be trained on a teacher's label distributions (its logits are the
      log-probabilities, up to a constant, of its distribution over the years).

    `name` is set by `register_head`.
    """

    name = "base"
    title: ClassVar[str] = "a registered head"
    description: ClassVar[str] = "A head registered by a plugin."
    default_decoder: ClassVar[str] = "mean"
    soft_labels: ClassVar[bool] = False
    output: ClassVar[str] = "distribution"
    distill_student: ClassVar[bool] = False

    @classmethod
    def traits(cls) -> HeadTraits:
        """The class's traits as a torch-free `HeadTraits`."""
        return HeadTraits(name=cls.name, title=cls.title, description=cls.description,
                          default_decoder=cls.default_decoder, soft_labels=cls.soft_labels, output=cls.output,
                          distill_student=cls.distill_student)

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        super().__init__()
        self.target = cfg.target
        self.max_age = int(cfg.max_age)
        self.groups = groups
        self.num_classes = self.max_age + 1 if self.target == "age" else len(groups)
        self.in_features = in_features
        self.decoder = self.traits().decoder(cfg.decode)  # mean | median | mode of the label distribution
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
