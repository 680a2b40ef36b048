"""Training augmentations in plain torch, batched, with an explicit generator (docs/datasets.md).

Per sample: rot90 (k ∈ 0..3) + horizontal flip (p 0.5); rotation by an angle in [−30°, 30°]
(p 0.3); scale-crop of side s ∈ [0.8, 1.0] resized back (p 0.3); brightness b ∈ [−0.2, 0.2] and
contrast c ∈ [0.8, 1.2], x ← clip(c·x + b, 0, 1) (p 0.3). Rotation and crop are one affine map
x_in = s·R(θ)·x_out + t, sampled bilinearly for images and nearest for masks, zeros outside.
Images are in [0, 1] (before normalisation). Parameters are drawn on the CPU for the whole
global batch, so DDP ranks slice the same draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges; angles in degrees, brightness/contrast dimensionless."""

    p_rot90_flip: float = 0.5
    p_rotate: float = 0.3
    max_angle: float = 30.0
    p_crop: float = 0.3
    min_crop: float = 0.8
    p_intensity: float = 0.3
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.8, 1.2)


def sample_params(n: int, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> dict[str, torch.Tensor]:
    """Random parameters for ``n`` samples from ``gen`` (CPU)."""
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    r90 = u(n) < cfg.p_rot90_flip
    return {
        "k": torch.where(r90, torch.randint(0, 4, (n,), generator=gen), 0),
        "flip": r90 & (u(n) < 0.5),
        "angle": torch.where(u(n) < cfg.p_rotate, (u(n) * 2 - 1) * cfg.max_angle, 0.0),
        "scale": torch.where(u(n) < cfg.p_crop, cfg.min_crop + u(n) * (1 - cfg.min_crop), 1.0),
        "shift": u(n, 2) * 2 - 1,
        "intensity": u(n) < cfg.p_intensity,
        "brightness": (u(n) * 2 - 1) * cfg.brightness,
        "contrast": cfg.contrast[0] + u(n) * (cfg.contrast[1] - cfg.contrast[0]),
    }


def slice_params(params: dict[str, torch.Tensor], sl: slice) -> dict[str, torch.Tensor]:
    return {k: v[sl] for k, v in params.items()}


def apply(images: torch.Tensor, masks: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment images (B, C, H, W) in [0, 1] and integer masks (B, H, W)."""
    dev = images.device
    imgs, msks = [], []
    for i in range(images.shape[0]):
        x, m = images[i], masks[i]
        k = int(params["k"][i])
        if k:
            x, m = torch.rot90(x, k, (1, 2)), torch.rot90(m, k, (0, 1))
        if bool(params["flip"][i]):
            x, m = x.flip(2), m.flip(1)
        imgs.append(x)
        msks.append(m)
    images, masks = torch.stack(imgs), torch.stack(msks)
    angle, scale = params["angle"].to(dev), params["scale"].to(dev)
    sel = (angle != 0) | (scale != 1)
    if bool(sel.any()):
        idx = sel.nonzero().flatten()
        th = angle[idx] * math.pi / 180.0
        s = scale[idx]
        t = params["shift"].to(dev)[idx] * (1 - s)[:, None]
        cos, sin = torch.cos(th) * s, torch.sin(th) * s
        theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
        sub = images[idx]
        grid = F.affine_grid(theta.to(sub.dtype), list(sub.shape), align_corners=False)
        images = images.clone()
        masks = masks.clone()
        images[idx] = F.grid_sample(sub, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        m = masks[idx][:, None].to(sub.dtype)
        masks[idx] = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].round().to(masks.dtype)
    on = params["intensity"].to(dev)
    if bool(on.any()):
        c = torch.where(on, params["contrast"].to(dev), 1.0).to(images.dtype)[:, None, None, None]
        b = torch.where(on, params["brightness"].to(dev), 0.0).to(images.dtype)[:, None, None, None]
        images = (images * c + b).clamp(0.0, 1.0)
    return images, masks
