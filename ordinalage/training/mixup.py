"""Mixup adapted to age targets: blend each training face with a partner of a similar age.

Plain mixup (Zhang et al., ICLR 2018) blends two random images, x = lam * x_i + (1 - lam) * x_j
with lam ~ Beta(alpha, alpha), and trains on lam * loss(y_i) + (1 - lam) * loss(y_j). For a
label distribution over ages that target is bimodal when a child is blended with an old man.
C-Mixup (Yao et al., NeurIPS 2022) picks the partner by label distance instead: j is drawn with
probability proportional to exp(-(a_i - a_j)^2 / (2 sigma^2)), so blended faces carry ages
close to each other. `train.mixup_sigma` is that sigma in years (0: random partners, plain
mixup); `train.mixup_alpha` is alpha (0: off). The loss is the head's own loss, so every head
(class, CORAL, CORN, regression, the field's heads) and a distilled student's loss mix the same way.

Partners are drawn inside the batch from torch's random stream, which `fit` seeds per epoch and
keeps in last.pt, so a resumed run draws the same partners.
"""

from __future__ import annotations

import torch


def partner_index(age: torch.Tensor, sigma: float) -> torch.Tensor:
    """For each row of `age` (n,), the index of its partner in the batch: uniform over the batch
    when `sigma` <= 0, else drawn with weights exp(-(a_i - a_j)^2 / (2 sigma^2)) (the row itself
    included, so a face with no one of its age nearby is blended with itself)."""
    n = age.shape[0]
    if sigma <= 0:
        return torch.randint(0, n, (n,), device=age.device)
    a = age.float().reshape(-1, 1)
    weights = torch.exp(-((a - a.T) ** 2) / (2.0 * float(sigma) ** 2))
    return torch.multinomial(weights, 1).reshape(-1)


def mix_batch(x: torch.Tensor, age: torch.Tensor, alpha: float, sigma: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(blended images, partner index, lam): x_i * lam + x_partner * (1 - lam), one lam ~ Beta(alpha,
    alpha) per batch, folded to lam >= 0.5 so each blended face stays closer to its own image."""
    if alpha <= 0:
        raise ValueError(f"mixup: alpha must be more than 0, got {alpha}")
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    lam = float(beta.sample())
    lam = max(lam, 1.0 - lam)
    partner = partner_index(age, sigma)
    return x * lam + x[partner] * (1.0 - lam), partner, lam


__all__ = ["mix_batch", "partner_index"]
