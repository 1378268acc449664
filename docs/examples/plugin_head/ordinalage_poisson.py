"""A Poisson unimodal head for ordinalage, installed as a plugin (entry point group `ordinalage.heads`).

Beckham & Pal, "Unimodal Probability Distributions for Deep Ordinal Classification", ICML 2017,
propose two unimodal output layers: a binomial one (ordinalage ships it as the `unimodal` head) and
a Poisson one, this head. Two outputs per image, z and t: z is log(lambda) of a Poisson
distribution over the years k = 0..K-1 (K = max_age + 1) and tau = softplus(t) + 0.05 a temperature,

    P(y = k) = softmax_k((k log(lambda) - lambda - log k!) / tau) = softmax_k((k z - log k!) / tau)

(-lambda is the same for every k, so it cancels in the softmax). The distribution is unimodal for any
lambda and tau, with its mode near lambda; tau sets its spread. Loss: the cross-entropy of that
distribution at the true year. log k! is a buffer computed once, so the exported graph (ONNX,
TorchScript) has no lgamma. Target age only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ordinalage.errors import UsageError
from ordinalage.heads import AgeGroups, Decoded, Head, ModelConfig


class PoissonHead(Head):
    """Poisson unimodal head (Beckham & Pal, ICML 2017), registered by entry point as `poisson`."""

    title = "unimodal: a Poisson distribution over the years with a learnt temperature"
    description = "Beckham & Pal's Poisson output: log(lambda) and a temperature per image, a unimodal softmax."
    default_decoder = "mean"  # `model.decode: auto`: the mean of the distribution
    soft_labels = False  # it does not read model.label_sigma
    output = "distribution"  # label_proba is its own distribution over the years: prior correction applies
    distill_student = False  # its logits are (z, t), not one score per year

    tau_min = 0.05

    def __init__(self, cfg: ModelConfig, in_features: int, groups: AgeGroups) -> None:
        if cfg.target != "age":
            raise UsageError(f"config key 'model.target': the poisson head predicts single years; use target "
                             f"'age' (got {cfg.target!r})")
        super().__init__(cfg, in_features, groups)
        self.fc = nn.Linear(in_features, 2)
        k = torch.arange(self.num_classes, dtype=torch.float32)
        self.register_buffer("k", k, persistent=False)
        self.register_buffer("log_factorial", torch.lgamma(k + 1), persistent=False)
        self.init_prior(self.default_counts())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)  # (N, 2): z = log(lambda), t (temperature before softplus)

    @torch.no_grad()
    def init_prior(self, counts: np.ndarray) -> None:
        """For zero features: lambda = the prior's mean year, tau = 1."""
        c = np.asarray(counts, dtype=np.float64)
        mean = float((c * np.arange(c.size)).sum() / c.sum())
        self.fc.bias[0] = float(np.log(max(mean, 0.5)))
        self.fc.bias[1] = float(np.log(np.expm1(1.0 - self.tau_min)))  # softplus^-1(1 - tau_min)

    def log_proba(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, 2) outputs -> (N, K) log P(y = k)."""
        tau = F.softplus(logits[:, 1:2]) + self.tau_min
        return torch.log_softmax((logits[:, 0:1] * self.k - self.log_factorial) / tau, dim=1)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, age: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (F.nll_loss(self.log_proba(logits), labels, reduction="none") * w).mean()

    def _decode(self, logits: torch.Tensor) -> Decoded:
        proba = self.log_proba(logits).exp()  # rows sum to 1
        age = self.age_from(proba)  # by model.decode: mean, median or mode of the distribution
        return Decoded(self.group_of_age(age), age, self.years_to_groups(proba), None, proba)
