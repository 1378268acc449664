"""Adapting a model's predictions to the age mix of the people it meets (`--prior`).

`resolve_prior(spec, ...)` turns `train | uniform | em | FILE` into a target prior over the head's
labels; `adapt(...)` reweights the label distributions to it (`prior.reweight`) and decodes age,
group and group probabilities again. A head whose output is one age (its `output` trait "age", e.g.
regression) has no distribution over ages and is refused with a message (docs/evaluation.md, "Prior
correction"). What a head is comes in as its traits (`models.heads.HeadTraits`, through
`LoadedModel.head_traits` and `.decoder`): this module imports no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups
from ordinalage.posterior.prior import (
    DEFAULT_SMOOTH,
    PriorEstimate,
    decode_age,
    em_prior,
    group_proba_from_labels,
    reweight,
)
from ordinalage.posterior.prior_files import read_prior

PRIOR_MODES = ("train", "uniform", "em")


@dataclass
class Adapted:
    """Predictions decoded again under a target prior."""

    age: np.ndarray
    group: np.ndarray
    group_proba: np.ndarray
    label_proba: np.ndarray
    prior: np.ndarray  # the target prior used
    mode: str  # train | uniform | em | file
    estimate: PriorEstimate | None = None  # EM details when mode == em
    source: str | None = None  # the FILE when mode == file


NO_DISTRIBUTION = ("prior correction needs a distribution over ages: the {name} head gives one age, "
                   "so use a head with a distribution (class, CORAL, CORN, ...) or leave the prior as trained")


def check_distribution(label_proba: np.ndarray | None, train_prior: np.ndarray | None, head: Any) -> None:
    """Prior correction needs predicted label distributions and a model that supports it (`head`: the
    model's `HeadTraits`)."""
    if label_proba is None:
        raise UsageError(NO_DISTRIBUTION.format(name=head.name))
    check_prior_support(train_prior, head)


def check_prior_support(train_prior: np.ndarray | None, head: Any) -> None:
    """The model can be adapted to an age mix: its head's output is a distribution (`head`: its
    `HeadTraits`, `output` not "age"), and its training prior is stored."""
    if not head.prior_correction:
        raise UsageError(NO_DISTRIBUTION.format(name=head.name))
    if train_prior is None:
        raise UsageError("this checkpoint stores no training prior (trained before prior correction existed); "
                         "retrain it to use prior correction")


def resolve_prior(spec: str, label_proba: np.ndarray, train_prior: np.ndarray, label_ages: np.ndarray,
                  groups: AgeGroups, target: str, smooth: float = DEFAULT_SMOOTH
                  ) -> tuple[np.ndarray, str, PriorEstimate | None]:
    """(target prior, mode, EM estimate) for `spec` = train | uniform | em | a prior CSV/JSON file."""
    if spec == "train":
        return np.asarray(train_prior, dtype=float), "train", None
    if spec == "uniform":
        return np.full(len(train_prior), 1.0 / len(train_prior)), "uniform", None
    if spec == "em":
        est = em_prior(label_proba, train_prior, smooth=smooth if target == "age" else 0.0,
                       label_ages=label_ages if target == "age" else None)
        return est.prior, "em", est
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"prior {spec!r}: not train, uniform, em or an existing CSV/JSON file")
    return read_prior(path, label_ages, groups=groups if target == "group" else None), "file", None


def adapt(label_proba: np.ndarray, train_prior: np.ndarray, prior: np.ndarray, label_ages: np.ndarray,
          groups: AgeGroups, target: str, how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reweight to `prior` and decode: (age, group, group_proba, label_proba)."""
    p = reweight(label_proba, train_prior, prior)
    return (*decode_labels(p, label_ages, groups, target, how), p)


def decode_labels(p: np.ndarray, label_ages: np.ndarray, groups: AgeGroups, target: str, how: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(age, group, group_proba) from label distributions (N, L) by the decoder `how`: years are
    decoded to an age and binned; groups are decoded directly (mean/mode: the most probable group,
    median: the first group where the CDF reaches 0.5) with the expected midpoint as the age."""
    if target == "group":
        group = p.argmax(1) if how in ("mean", "mode") else np.argmax(np.cumsum(p, 1) >= 0.5 - 1e-9, axis=1)
        return p @ groups.midpoints(), group.astype(np.int64), p
    age = decode_age(p, label_ages, how)
    return age, groups.clip_indices(age).astype(np.int64), group_proba_from_labels(p, label_ages, groups)


def average_outputs(label_probas: Sequence[np.ndarray | None], ages: Sequence[np.ndarray],
                    group_probas: Sequence[np.ndarray], loaded: Any
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """An ensemble's (age, group, group_proba, label_proba) from its members' outputs on the same
    images: the mean label distribution decoded by the first member's rule (`loaded`: its
    LoadedModel), or, when a member has no distribution (regression), the mean age and group
    distribution with the age's group."""
    if all(p is not None for p in label_probas):
        proba = np.mean(np.stack(label_probas), axis=0)  # type: ignore[arg-type]
        age, group, group_proba = decode_labels(proba, loaded.label_ages, loaded.groups, loaded.config.model.target,
                                                loaded.decoder)
        return age, group.astype(np.int64), group_proba.astype(np.float32), proba.astype(np.float32)
    age = np.mean(np.stack(ages), axis=0)
    return (age, loaded.groups.clip_indices(age).astype(np.int64),
            np.mean(np.stack(group_probas), axis=0).astype(np.float32), None)


def adapt_predictions(label_proba: np.ndarray | None, loaded: Any, spec: str, smooth: float = DEFAULT_SMOOTH,
                      temperature: float | None = None) -> Adapted:
    """`adapt` for a loaded model (`runs.checkpoint.LoadedModel`: its `head_traits`, `decoder`, ...) and a
    `--prior` spec.

    `temperature`: soften (T > 1) the label distributions before EM estimates the mix (a model
    over-confident on its own split makes EM under-correct); the reweighting itself uses them as predicted.
    """
    cfg = loaded.config.model
    check_distribution(label_proba, loaded.train_prior, loaded.head_traits)
    assert label_proba is not None
    ages = np.asarray(loaded.label_ages, dtype=float)
    est_input = label_proba
    if temperature is not None and spec == "em":
        from ordinalage.posterior.calibration import apply_temperature, to_logproba

        est_input = apply_temperature(to_logproba(label_proba), temperature)
    prior, mode, est = resolve_prior(spec, est_input, loaded.train_prior, ages, loaded.groups, cfg.target, smooth)
    how = loaded.decoder
    age, group, group_proba, p = adapt(label_proba, loaded.train_prior, prior, ages, loaded.groups, cfg.target, how)
    return Adapted(age=age, group=group, group_proba=group_proba, label_proba=p, prior=prior, mode=mode, estimate=est,
                   source=spec if mode == "file" else None)


def prior_summary(adapted: Adapted) -> dict[str, Any]:
    """JSON-ready description of the prior used (metrics.json `prior`)."""
    out: dict[str, Any] = {"mode": adapted.mode}
    if adapted.source:
        out["file"] = adapted.source
    if adapted.estimate is not None:
        out.update(n_iter=adapted.estimate.n_iter, converged=adapted.estimate.converged)
    return out
