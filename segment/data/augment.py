"""Training augmentations in plain torch, batched, with an explicit generator (docs/datasets.md).

Per sample: rot90 (k ∈ 0..3) + horizontal flip (p 0.5); rotation by an angle in [−30°, 30°]
(p 0.3); scale-crop of side s ∈ [0.8, 1.0] resized back (p 0.3); brightness b ∈ [−0.2, 0.2] and
contrast c ∈ [0.8, 1.2], x ← clip(c·x + b, 0, 1) (p 0.3). Rotation and crop are one affine map
x_in = s·R(θ)·x_out + t, sampled bilinearly for images and nearest for masks, zeros outside.
Images are in [0, 1] (before normalisation). Parameters are drawn on the CPU for the whole
global batch, so DDP ranks slice the same draws; :func:`apply` runs batched on the images' device
with no host synchronisation (rot90/flip as one exact index gather).
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


def _rot90_flip_index(k: torch.Tensor, flip: torch.Tensor, n: int) -> torch.Tensor:
    """Flat source index (B, n·n) of rot90 by ``k`` (dims (H, W), as ``torch.rot90``) followed by a
    horizontal flip where ``flip``, for square n × n images: exact, one gather for the batch."""
    i = torch.arange(n, device=k.device)
    r, c = i[:, None].expand(n, n), i[None, :].expand(n, n)
    c = torch.where(flip[:, None, None], n - 1 - c, c)  # output (r, c) of the flipped image
    k = k[:, None, None] % 4
    src_r = torch.where(k == 0, r, torch.where(k == 1, c, torch.where(k == 2, n - 1 - r, n - 1 - c)))
    src_c = torch.where(k == 0, c, torch.where(k == 1, n - 1 - r, torch.where(k == 2, n - 1 - c, r)))
    return (src_r * n + src_c).flatten(1)


def apply(images: torch.Tensor, masks: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment square images (B, C, H, W) in [0, 1] and integer masks (B, H, W).

    Batched and free of host synchronisation (no per-sample branch reads a device value), so it
    runs on the GPU at the pace of the training step; ``params`` may live on either device.
    """
    dev = images.device
    b, ch, h, w = images.shape
    p = {key: v.to(dev) for key, v in params.items()}
    if h == w:
        idx = _rot90_flip_index(p["k"], p["flip"], h)
        images = images.flatten(2).gather(2, idx[:, None].expand(b, ch, h * w)).view(b, ch, h, w)
        masks = masks.flatten(1).gather(1, idx).view(b, h, w)
    else:  # rectangular: per sample (rot90 changes the shape; never used by the pipeline, which resizes to squares)
        pairs = [(torch.rot90(images[i], int(p["k"][i]), (1, 2)), torch.rot90(masks[i], int(p["k"][i]), (0, 1)))
                 for i in range(b)]
        pairs = [(x.flip(2), m.flip(1)) if bool(p["flip"][i]) else (x, m) for i, (x, m) in enumerate(pairs)]
        images, masks = torch.stack([x for x, _ in pairs]), torch.stack([m for _, m in pairs])
    angle, scale = p["angle"], p["scale"]
    sel = (angle != 0) | (scale != 1)
    th = angle * math.pi / 180.0
    t = p["shift"] * (1 - scale)[:, None]
    cos, sin = torch.cos(th) * scale, torch.sin(th) * scale
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    wmask = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[:, 0].round().to(masks.dtype)
    images = torch.where(sel[:, None, None, None], warped, images)
    masks = torch.where(sel[:, None, None], wmask, masks)
    on = p["intensity"]
    c = torch.where(on, p["contrast"], 1.0).to(images.dtype)[:, None, None, None]
    bright = torch.where(on, p["brightness"], 0.0).to(images.dtype)[:, None, None, None]
    return torch.where(on[:, None, None, None], (images * c + bright).clamp(0.0, 1.0), images), masks
