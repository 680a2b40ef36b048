"""CE/BCE + soft Dice loss (docs/rwkv-unet.md).

Binary (one logit, p = sigmoid): L = w_ce·BCE + w_dice·(1 − (2Σpg + ε)/(Σp² + Σg² + ε)).
Multi-class (K logits, p = softmax): L = w_ce·CE + w_dice·mean_k (1 − (2Σ p_k g_k + ε)/(Σp_k² + Σg_k² + ε)),
k over all K classes including the background; sums run over the whole batch; ε = 1e-5.

All reductions go through per-batch sums (CE sum, pixel count, Dice terms), so under DDP a
``sync`` function (a differentiable all-reduce) makes every rank compute the loss of the global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-5


@dataclass(frozen=True)
class LossWeights:
    """Weights of the cross-entropy and soft-Dice terms (dimensionless)."""

    ce: float = 0.5
    dice: float = 0.5


def loss_terms(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-batch sums [Σce, n_pixels, Σpg (K), Σp² (K), Σg² (K)] for logits (B, K, H, W) and
    integer targets (B, H, W); K = 1 means binary with a sigmoid."""
    logits = logits.float()
    k = logits.shape[1]
    if k == 1:
        x = logits[:, 0]
        g = (target > 0).float()
        ce = F.binary_cross_entropy_with_logits(x, g, reduction="sum")
        p = torch.sigmoid(x)
        dims = (0, 1, 2)
        pg, pp, gg = (p * g).sum(dims)[None], (p * p).sum(dims)[None], (g * g).sum(dims)[None]
    else:
        ce = F.cross_entropy(logits, target.long(), reduction="sum")
        p = torch.softmax(logits, dim=1)
        g = F.one_hot(target.long(), k).permute(0, 3, 1, 2).float()
        dims = (0, 2, 3)
        pg, pp, gg = (p * g).sum(dims), (p * p).sum(dims), (g * g).sum(dims)
    n = torch.full((1,), float(target.numel()), device=logits.device)  # a fill, no host copy (CUDA graphs)
    return torch.cat([ce[None], n, pg, pp, gg])


def loss_from_terms(terms: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    k = (terms.numel() - 2) // 3
    ce = terms[0] / terms[1]
    pg, pp, gg = terms[2:2 + k], terms[2 + k:2 + 2 * k], terms[2 + 2 * k:]
    dice_loss = (1.0 - (2.0 * pg + EPS) / (pp + gg + EPS)).mean()
    return weights.ce * ce + weights.dice * dice_loss


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, weights: LossWeights = LossWeights(),
                 sync: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The training loss of a batch; ``sync`` sums the batch statistics over DDP ranks."""
    terms = loss_terms(logits, target)
    if sync is not None:
        terms = sync(terms)
    return loss_from_terms(terms, weights)
