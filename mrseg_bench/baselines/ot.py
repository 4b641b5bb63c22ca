"""Batched entropic optimal transport (Sinkhorn, log domain) and the soft-IoU cost.

For a batch of small problems (MoSE: 16 weighted samples x R raters per image), ``sinkhorn``
returns the plan P of::

    min_P <P, C> - eps * H(P)   s.t.  P 1 = a,  P^T 1 = b,  P >= 0

by ``iters`` alternating dual updates in the log domain (stable for small eps)::

    f_i = eps * (log a_i - LSE_j((g_j - C_ij) / eps)),   g_j = eps * (log b_j - LSE_i((f_i - C_ij) / eps))
    P_ij = exp((f_i + g_j - C_ij) / eps)

Written in torch rather than taken from an OT library: the problems are tiny and many, so one
batched tensor program (no Python loop over images or samples) on the tensors' own device is
simplest and fastest; autograd differentiates through the unrolled iterations, so the loss
<P, C> sends gradients to the cost (the segmentations) AND to the masses ``a`` (MoSE's gates);
and it adds no dependency (POT solves one problem per call unless its batch API is present, and
its backend dispatch would add a package to the shared environment for ~20 lines of code).
Zero masses (invalid raters) are clamped to 1e-30, so every log stays finite and their columns
carry no mass to float precision.
"""

from __future__ import annotations

import torch


def sinkhorn(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, eps: float = 0.05,
             iters: int = 100) -> torch.Tensor:
    """Entropic OT plans ``[B,N,M]`` for masses ``a [B,N]``, ``b [B,M]`` (each row summing to 1)
    and costs ``cost [B,N,M]``; differentiable in all three."""
    if cost.ndim != 3 or a.shape != cost.shape[:2] or b.shape != (cost.shape[0], cost.shape[2]):
        raise ValueError(f"sinkhorn: a {tuple(a.shape)}, b {tuple(b.shape)}, cost {tuple(cost.shape)} "
                         f"do not match [B,N], [B,M], [B,N,M]")
    if eps <= 0 or iters < 1:
        raise ValueError(f"sinkhorn: need eps > 0 and iters >= 1, got {eps}, {iters}")
    cost = cost.float()
    log_a = a.float().clamp_min(1e-30).log()
    log_b = b.float().clamp_min(1e-30).log()
    k = -cost / eps  # [B,N,M]
    f = torch.zeros_like(log_a)  # potentials divided by eps
    g = torch.zeros_like(log_b)
    for _ in range(iters):  # fixed, small number of dual updates on the whole batch
        f = log_a - torch.logsumexp(k + g[:, None, :], dim=2)
        g = log_b - torch.logsumexp(k + f[:, :, None], dim=1)
    return torch.exp(k + f[:, :, None] + g[:, None, :])


def soft_iou_cost(probs: torch.Tensor, masks: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (|p y| + s) / (|p| + |y| - |p y| + s)`` for every (sample, rater) pair: ``probs
    [B,N,H,W]`` in [0,1], ``masks [B,M,H,W]`` -> ``[B,N,M]``. Sums over pixels; ``s`` = 1 makes
    an empty prediction against an empty mask cost 0. One einsum, no [B,N,M,H,W] tensor."""
    p = probs.float().flatten(2)
    y = masks.float().flatten(2)
    inter = torch.einsum("bnp,bmp->bnm", p, y)
    union = p.sum(2)[:, :, None] + y.sum(2)[:, None, :] - inter
    return 1.0 - (inter + smooth) / (union + smooth)
