"""From records to tensors: resize, cache and normalise (docs/datasets.md).

Training images are resized to ``size``² (bilinear, antialiased) and masks with nearest; the
resized tensors are cached in memory. Evaluation keeps the original-resolution masks, since
metrics are computed there (docs/datasets.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from segment.data import Dataset, Record


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """float32 (H, W, C) -> (C, H, W), no resampling."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """float32 (H, W, C) -> (C, size, size) bilinear (antialiased when shrinking)."""
    x = image_tensor(image)[None]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0]


def resize_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """int (H, W) -> (size, size) nearest."""
    m = torch.from_numpy(np.ascontiguousarray(mask))
    if m.shape != (size, size):
        m = F.interpolate(m[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return m.long()


def normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(x − mean)/std per channel for (B, C, H, W) images in [0, 1]."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - m) / s


@dataclass
class TrainSet:
    """The resized training images of one split, loaded once (float16 images, uint8 masks)."""

    images: torch.Tensor
    masks: torch.Tensor

    @classmethod
    def build(cls, ds: Dataset, records: list[Record], size: int) -> TrainSet:
        imgs, msks = [], []
        for r in records:
            s = ds.load(r)
            imgs.append(resize_image(s.image, size).half())
            msks.append(resize_mask(s.mask, size).to(torch.uint8))
        return cls(torch.stack(imgs), torch.stack(msks))

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[idx].float(), self.masks[idx].long()


@dataclass
class EvalItem:
    """One evaluation image: input (resized, or at its own resolution for a sliding window),
    original-resolution mask and instances; ``spacing`` the voxel spacing (mm) of its volume with
    the slices stacked on axis 0 (None: distances in pixels)."""

    record: Record
    image: torch.Tensor
    mask: np.ndarray
    instances: np.ndarray | None
    spacing: tuple[float, float, float] | None = None


def eval_items(ds: Dataset, records: list[Record], size: int, native: bool = False) -> list[EvalItem]:
    """Evaluation items; ``native`` keeps each image at its own resolution (sliding window)."""
    out = []
    for r in records:
        s = ds.load(r)
        mask = s.mask.astype(np.uint8) if s.mask.size and s.mask.max() < 256 else s.mask
        out.append(EvalItem(r, image_tensor(s.image) if native else resize_image(s.image, size), mask, s.instances,
                            ds.spacing(r)))
    return out
