"""Inference: class probabilities of whole (resized) images, by sliding window, with flip TTA.

Takes a model and tensors, never a trainer (as nnU-Net's predictor). Whole image: the image
resized to the training size, probabilities resized back to the original resolution (bilinear),
then threshold 0.5 (one logit) or argmax. Sliding window (docs/rwkv-unet.md, as nnU-Net): tiles of
the training size overlapping by half, Gaussian weights σ = tile/8. TTA averages the 4 flips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from biorules.errors import InputError
from segment.data import DatasetInfo
from segment.data.pipeline import EvalItem, normalise
from segment.engine.checkpoint import model_from_checkpoint
from segment.engine.distributed import autocast, resolve_device

#: sliding window (docs/rwkv-unet.md, as nnU-Net): tiles overlap by half, Gaussian weights σ = tile/8
WINDOW_OVERLAP = 0.5
WINDOW_SIGMA = 0.125
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PALETTE = np.array([[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 96, 255], [255, 200, 0], [200, 64, 255],
                    [0, 200, 200], [255, 128, 0], [128, 128, 255]], np.uint8)


@torch.no_grad()
def predict_probs(model: nn.Module, images: torch.Tensor, tta: bool = False, amp: str = "auto") -> torch.Tensor:
    """Class probabilities (B, K, H, W) (K = 1: foreground probability) of normalised images;
    ``tta`` averages over the 4 flips (none, H, V, HV)."""
    flips: Sequence[tuple[int, ...]] = [(), (3,), (2,), (2, 3)] if tta else [()]
    acc = None
    for f in flips:
        x = images.flip(f) if f else images
        with autocast(images.device, amp):
            logits = model(x).float()
        p = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)
        p = p.flip(f) if f else p
        acc = p if acc is None else acc + p
    return acc / len(flips)


@torch.no_grad()
def predict_window(model: nn.Module, image: torch.Tensor, tile: int, *, tta: bool = False, amp: str = "auto",
                   batch: int = 4) -> torch.Tensor:
    """Class probabilities (1, K, H, W) of one normalised image (1, C, H, W) at its own resolution.

    Tiles of tile × tile (the training size) step by tile/2; each tile's probabilities
    (``predict_probs``, so flips too with ``tta``) are averaged with Gaussian weights of
    σ = tile/8 centred on the tile; images smaller than a tile are padded. MONAI's
    ``sliding_window_inference`` does the tiling and the weighting.
    """
    from monai.inferers import sliding_window_inference

    out = sliding_window_inference(image, roi_size=(tile, tile), sw_batch_size=batch,
                                   predictor=lambda t: predict_probs(model, t, tta, amp), overlap=WINDOW_OVERLAP,
                                   mode="gaussian", sigma_scale=WINDOW_SIGMA)
    return torch.as_tensor(out)


def probs_to_labels(p: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """(K, h, w) probabilities -> (H, W) class ids at ``shape`` (bilinear, threshold 0.5 / argmax)."""
    if tuple(p.shape[-2:]) != tuple(shape):
        p = F.interpolate(p[None], size=shape, mode="bilinear", align_corners=False)[0]
    if p.shape[0] == 1:
        return (p[0] >= 0.5).cpu().numpy().astype(np.int64)
    return p.argmax(0).cpu().numpy().astype(np.int64)


def predict_items(model: nn.Module, items: list[EvalItem], info: DatasetInfo, device: torch.device, batch: int = 8,
                  tta: bool = False, amp: str = "auto", window: int | None = None) -> list[np.ndarray]:
    """Label maps at original resolution for evaluation items; with ``window`` (the tile side) the
    items hold images at their own resolution and each is predicted by sliding window."""
    model.eval()
    out: list[np.ndarray] = []
    if window:
        for it in items:
            x = normalise(it.image[None].to(device), info.mean, info.std)
            out.append(probs_to_labels(predict_window(model, x, window, tta=tta, amp=amp, batch=batch)[0],
                                       it.mask.shape))
        return out
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        x = normalise(torch.stack([it.image for it in chunk]).to(device), info.mean, info.std)
        probs = predict_probs(model, x, tta, amp)
        out += [probs_to_labels(probs[j], it.mask.shape) for j, it in enumerate(chunk)]
    return out


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 blend of an image in [0, 1] (H, W, C) with class colours where labels > 0."""
    rgb = image[..., :3] if image.shape[2] >= 3 else np.repeat(image[..., :1], 3, axis=2)
    rgb = (np.clip(rgb, 0, 1) * 255).astype(np.float32)
    col = PALETTE[np.clip(labels, 0, len(PALETTE) - 1)].astype(np.float32)
    fg = (labels > 0)[..., None]
    return np.where(fg, (1 - alpha) * rgb + alpha * col, rgb).round().astype(np.uint8)


def predict_folder(checkpoint: str | Path, input_dir: str | Path, out_dir: str | Path, *, tta: bool = False,
                   device: str = "auto", batch: int = 4, progress: bool = False, window: bool | None = None,
                   echo: Callable[[str], None] | None = None) -> list[Path]:
    """Segment every image in ``input_dir``; write ``NAME_mask.png`` (0/255 for binary, class ids
    otherwise) and ``NAME_overlay.png`` into ``out_dir``. Returns the written paths. ``window``:
    sliding window at each image's own resolution (``predict_window``) instead of resizing; None
    (the default) takes the window for images larger than the training size (resizing them whole
    merges small objects) and says so through ``echo``."""
    from PIL import Image
    from tqdm.auto import tqdm

    from segment.data.base import read_image
    from segment.data.pipeline import image_tensor, resize_image

    dev = resolve_device(device)
    model, meta = model_from_checkpoint(checkpoint, dev)
    src = Path(input_dir)
    if not src.is_dir():
        raise InputError(f"--input {src}: folder not found")
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise InputError(f"--input {src}: no images ({', '.join(IMAGE_EXTS)})")
    channels, size = int(meta["in_channels"]), int(meta["size"])
    images = [read_image(p, channels) for p in files]  # decode all before writing anything
    dst = Path(out_dir)
    if dst.exists() and not dst.is_dir():
        raise InputError(f"--out {dst} exists and is not a folder")
    dst.mkdir(parents=True, exist_ok=True)
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    windowed = [bool(window) if window is not None else max(im.shape[:2]) > size for im in images]
    if window is None and any(windowed) and echo is not None:
        echo(f"{sum(windowed)} of {len(images)} image(s) are larger than the training size {size}: predicted by "
             "sliding window at their own resolution (--resize resizes them whole instead)")
    rest = [i for i, w in enumerate(windowed) if not w]
    jobs = [[i] for i, w in enumerate(windowed) if w] + [rest[j:j + batch] for j in range(0, len(rest), batch)]
    written = []
    for idx in tqdm(jobs, desc="predict", disable=not progress, leave=False):
        chunk = [images[i] for i in idx]
        if windowed[idx[0]]:
            x = normalise(image_tensor(chunk[0])[None].to(dev), mean, std)
            probs = predict_window(model, x, size, tta=tta, batch=batch)
        else:
            x = normalise(torch.stack([resize_image(im, size) for im in chunk]).to(dev), mean, std)
            probs = predict_probs(model, x, tta)
        for j, im in enumerate(chunk):
            lab = probs_to_labels(probs[j], im.shape[:2])
            stem = files[idx[j]].stem
            mask = (lab * 255).astype(np.uint8) if int(meta["num_classes"]) == 2 else lab.astype(np.uint8)
            for name, arr in ((f"{stem}_mask.png", mask), (f"{stem}_overlay.png", overlay(im, lab))):
                Image.fromarray(arr).save(dst / name)
                written.append(dst / name)
    return written
