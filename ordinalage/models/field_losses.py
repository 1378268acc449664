"""The maths of the field's age-estimation methods as plain torch functions, one sample per row.

The heads of `heads.py` (`mean_variance`, `dldl_v2`, `sord`, `unimodal`, `orcnn`, and the
regression head's nominal distribution) call these; each takes float32 tensors and returns one
loss per sample (N,) or a distribution per sample (N, K) over the labels 0..K-1 (single years).
docs/heads.md gives the papers, equations and defaults. Nothing here uses an op that ONNX opset 17
or TorchScript cannot trace (the binomial coefficients are computed once in Python, not by lgamma).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def label_years(num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., num_classes - 1 as a float tensor on `like`'s device and dtype."""
    return torch.arange(num_classes, dtype=like.dtype, device=like.device)


def expectation(proba: torch.Tensor) -> torch.Tensor:
    """E[y] = sum_k p_k k of each row of a (N, K) distribution over 0..K-1."""
    return proba @ label_years(proba.shape[1], proba)


def kl_divergence(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(logits)) = sum_k q_k (log q_k - log p_k) per row (0 log 0 = 0)."""
    return (torch.xlogy(target, target) - target * F.log_softmax(logits, dim=1)).sum(1)


def mean_variance_loss(logits: torch.Tensor, labels: torch.Tensor, age: torch.Tensor, lambda_mean: float,
                       lambda_var: float) -> torch.Tensor:
    """Pan et al. (CVPR 2018), per sample: CE(p, y) + lambda_mean * 0.5 (E[y] - age)^2 + lambda_var * Var[y],
    with p = softmax(logits), E[y] = sum_k p_k k and Var[y] = sum_k p_k (k - E[y])^2 (years, years^2)."""
    proba = logits.softmax(1)
    mean = expectation(proba)
    var = (proba * (label_years(logits.shape[1], logits)[None, :] - mean[:, None]) ** 2).sum(1)
    ce = F.cross_entropy(logits, labels, reduction="none")
    return ce + lambda_mean * 0.5 * (mean - age) ** 2 + lambda_var * var


def dldl_v2_loss(logits: torch.Tensor, target: torch.Tensor, age: torch.Tensor, lam: float) -> torch.Tensor:
    """Gao et al. (IJCAI 2018), per sample: KL(target || softmax(logits)) + lam * |E[y] - age|."""
    return kl_divergence(target, logits) + lam * (expectation(logits.softmax(1)) - age).abs()


def sord_labels(labels: torch.Tensor, num_classes: int, scale: float) -> torch.Tensor:
    """Diaz & Marathe (CVPR 2019) soft labels: q_k = softmax_k(-phi(y, k)), phi = (y - k)^2 / scale
    for the integer labels y (N,) -> (N, num_classes). scale 1 is the paper's squared distance."""
    years = torch.arange(num_classes, dtype=torch.float32, device=labels.device)
    return torch.softmax(-((labels.float()[:, None] - years[None, :]) ** 2) / scale, dim=1)


def log_binomial_coefficients(n: int) -> torch.Tensor:
    """log C(n, k) for k = 0..n (float32, computed in float64 by Python's lgamma)."""
    return torch.tensor([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(n + 1)],
                        dtype=torch.float32)


def unimodal_log_proba(p_logit: torch.Tensor, tau: torch.Tensor, log_coef: torch.Tensor) -> torch.Tensor:
    """Beckham & Pal (ICML 2017), binomial: log softmax_k(log Binomial(k; K - 1, p) / tau) per row.

    `p_logit` (N,): logit of the binomial parameter p = sigmoid(p_logit); `tau` (N,) > 0: the softmax
    temperature; `log_coef` (K,): `log_binomial_coefficients(K - 1)`. log p and log(1 - p) are
    logsigmoid(+-p_logit), stable for any logit."""
    k = label_years(log_coef.shape[0], p_logit)
    n = float(log_coef.shape[0] - 1)
    log_pmf = log_coef[None, :] + k[None, :] * F.logsigmoid(p_logit)[:, None] \
        + (n - k[None, :]) * F.logsigmoid(-p_logit)[:, None]
    return F.log_softmax(log_pmf / tau[:, None], dim=1)


def rank_bce(logits: torch.Tensor, labels: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Niu et al. (CVPR 2016) per sample: sum_k lambda_k BCE(sigmoid(z_k), [y > k]) over the K-1 rank tasks
    (the CORAL loss's formula; ORCNN differs from CORAL in the layer, not the loss)."""
    ranks = torch.arange(logits.shape[1], device=logits.device)
    target = (labels[:, None] > ranks).to(logits.dtype)
    return (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * importance).sum(1)


def mean_preserving_gaussian(age: torch.Tensor, num_classes: int, sigma: float) -> torch.Tensor:
    """(N,) ages -> (N, num_classes) distributions over the years 0..num_classes-1 whose mean is
    exactly clamp(age, 0, num_classes - 1): a Gaussian of std `sigma` years, discretised and cut
    symmetrically where it would cross 0 or the last year.

    With a = the clamped age, j = min(floor(a), K - 2) and f = a - j in [0, 1]: p = (1 - f) g_j + f g_{j+1},
    g_c the discretised Gaussian exp(-(k - c)^2 / (2 sigma^2)) on the years c - R..c + R, normalised,
    R = min(j, K - 2 - j) so that both kernels stay inside 0..K-1. Each kernel is symmetric about
    its centre, so the mean is (1 - f) j + f (j + 1) = a exactly; away from the ends (R >= 3 sigma)
    it is the plain discretised Gaussian, near them it narrows (at a < 1 it is the two-point
    distribution on 0 and 1)."""
    last = num_classes - 1
    a = age.float().clamp(0, last)
    j = torch.floor(a).clamp(max=max(last - 1, 0))
    f = a - j
    reach = torch.minimum(j, last - 1 - j).clamp_min(0)
    years = torch.arange(num_classes, dtype=torch.float32, device=age.device)[None, :]

    def kernel(centre: torch.Tensor) -> torch.Tensor:
        d = years - centre[:, None]
        inside = (d.abs() <= reach[:, None] + 1e-6).float()
        w = torch.exp(-0.5 * (d / sigma) ** 2) * inside
        return w / w.sum(1, keepdim=True)

    return (1 - f)[:, None] * kernel(j) + f[:, None] * kernel(j + 1)
