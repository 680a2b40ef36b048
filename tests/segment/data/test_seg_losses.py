"""CE/BCE + soft Dice: the formula of docs/rwkv-unet.md written out by hand (float32, tol 1e-6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segment.losses import LossWeights, ce_dice_loss


def test_binary_loss_formula() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 5, 6, generator=g)
    target = (torch.rand(2, 5, 6, generator=g) > 0.5).long()
    p = torch.sigmoid(logits[:, 0])
    t = target.float()
    dice = 1 - (2 * (p * t).sum() + 1e-5) / ((p * p).sum() + (t * t).sum() + 1e-5)
    ref = 0.3 * F.binary_cross_entropy_with_logits(logits[:, 0], t) + 0.7 * dice
    assert torch.allclose(ce_dice_loss(logits, target, LossWeights(0.3, 0.7)), ref, atol=1e-6)


def test_multiclass_loss_formula_includes_background() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 7, 5, generator=g)
    target = torch.randint(0, 4, (3, 7, 5), generator=g)
    p = torch.softmax(logits, 1)
    oh = F.one_hot(target, 4).permute(0, 3, 1, 2).float()
    d = [1 - (2 * (p[:, k] * oh[:, k]).sum() + 1e-5) / ((p[:, k] ** 2).sum() + (oh[:, k] ** 2).sum() + 1e-5)
         for k in range(4)]
    ref = 0.5 * F.cross_entropy(logits, target) + 0.5 * torch.stack(d).mean()
    assert torch.allclose(ce_dice_loss(logits, target), ref, atol=1e-6)


def test_split_batch_with_summed_statistics_equals_whole_batch() -> None:
    from segment.losses import loss_from_terms, loss_terms

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 3, 6, 6, generator=g)
    target = torch.randint(0, 3, (4, 6, 6), generator=g)
    terms = loss_terms(logits[:2], target[:2]) + loss_terms(logits[2:], target[2:])
    assert torch.allclose(loss_from_terms(terms, LossWeights()), ce_dice_loss(logits, target), atol=1e-6)


def test_lr_schedules() -> None:
    from segment.engine import lr_at

    assert lr_at(0, 100, 1e-3, "poly") == 1e-3 and lr_at(100, 100, 1e-3, "poly") == 0.0
    assert abs(lr_at(50, 100, 1e-3, "poly") - 1e-3 * 0.5 ** 0.9) < 1e-15
    assert lr_at(0, 100, 1e-3, "cosine") == 1e-3 and abs(lr_at(50, 100, 1e-3, "cosine") - 5e-4) < 1e-15
    assert abs(lr_at(100, 100, 1e-3, "cosine")) < 1e-15
