"""Heads: a registry of output layers by name (`head_base`; the heads in `classic_heads` and
`field_heads`, registered in that order); each gives logits, a float32 loss and a decoding.

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

Traits: every head declares, as class attributes, what the rest of the package asks of it (`title`,
`description`, `default_decoder`, `soft_labels`, `output`, `distill_student`; see `head_base.Head`);
`head_traits(name)` gives them torch-free for the layers that may not import a model.

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
phi = (y - k)^2, i.e. a std of 1/sqrt(2) years); heads without the `soft_labels` trait refuse it.

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

import numpy as np

from ordinalage.config import ModelConfig
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.models.classic_heads import ClassHead, CoralHead, CornHead, RegressionHead, corn_loss_weighted
from ordinalage.models.field_heads import DldlV2Head, MeanVarianceHead, OrcnnHead, SordHead, UnimodalHead
from ordinalage.models.head_base import (
    CORAL_IMPORTANCE,
    DECODERS,
    HEADS,
    OUTPUTS,
    REGRESSION_LOSSES,
    REGRESSION_SIGMA,
    TARGETS,
    Decoded,
    Head,
    HeadTraits,
    add_head,
    age_labels,
    coral_importance_weights,
    gaussian_label_distribution,
    head_traits,
    logit_of,
    ordinal_levels,
    rank_to_label_proba,
    register_head,
    tail_proba,
)
from ordinalage.plugins import load_plugins

__all__ = ["CORAL_IMPORTANCE", "DECODERS", "HEADS", "OUTPUTS", "REGRESSION_LOSSES", "REGRESSION_SIGMA", "TARGETS",
           "ClassHead", "CoralHead", "CornHead", "Decoded", "DldlV2Head", "Head", "HeadTraits", "MeanVarianceHead",
           "OrcnnHead", "RegressionHead", "SordHead", "UnimodalHead", "add_head", "age_decoder", "age_labels",
           "build_head", "coral_importance_weights", "corn_loss_weighted", "gaussian_label_distribution",
           "head_traits", "logit_of", "ordinal_levels", "rank_to_label_proba", "register_head", "soft_label_heads",
           "tail_proba"]


def soft_label_heads() -> tuple[str, ...]:
    """The registered heads that read `model.label_sigma` (their `soft_labels` trait)."""
    return tuple(name for name, cls in HEADS.items() if cls.soft_labels)


def age_decoder(head: str, decode: str = "auto") -> str:
    """The age decoder (mean | median | mode) of `model.decode` for the head `head`: `auto` is the
    head's `default_decoder`."""
    return head_traits(head).decoder(decode)


def build_head(cfg: ModelConfig, in_features: int, groups: AgeGroups, class_weights: np.ndarray | None = None,
               train_ages: np.ndarray | None = None) -> Head:
    """Build the head named by `cfg.head`.

    `class_weights`: one weight per age group (G,), multiplying each sample's loss through its group.
    `train_ages`: the training split's ages, passed to `head.fit_prior` (see the module docstring).
    """
    load_plugins("ordinalage.heads", add_head, builtin=HEADS, need=cfg.head)  # installed heads, once
    cls = HEADS.get(cfg.head)
    if cls is None:
        raise UsageError(f"config key 'model.head': unknown head {cfg.head!r} (known: {', '.join(HEADS)})")
    if cfg.target not in TARGETS:
        raise UsageError(f"config key 'model.target': unknown target {cfg.target!r} ({', '.join(TARGETS)})")
    if cfg.max_age < 1:
        raise UsageError(f"config key 'model.max_age': must be at least 1, got {cfg.max_age}")
    if cfg.label_sigma < 0 or (cfg.label_sigma > 0 and (not cls.soft_labels or cfg.target != "age")):
        heads = ", ".join(repr(h) for h in soft_label_heads())
        raise UsageError(f"config key 'model.label_sigma': soft labels need head {heads} with target 'age' and a "
                         f"sigma >= 0 in years; got {cfg.label_sigma} for head {cfg.head!r}, target {cfg.target!r}")
    head = cls(cfg, in_features, groups)
    if class_weights is not None:
        head.set_class_weights(class_weights)
    if train_ages is not None:
        head.fit_prior(np.asarray(train_ages, dtype=float))
    return head
