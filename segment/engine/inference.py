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
from segment.data.predictions import PALETTE
from segment.engine.checkpoint import model_from_checkpoint
from segment.engine.distributed import autocast, resolve_device

#: sliding window (docs/rwkv-unet.md, as nnU-Net): tiles overlap by half, Gaussian weights σ = tile/8
WINDOW_OVERLAP = 0.5
WINDOW_SIGMA = 0.125
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class GraphForward(nn.Module):
    """``model(x)`` replayed from a CUDA graph captured per input shape (inference, no grad).

    A batch smaller than ``batch`` is padded with zeros to it and the padding cut from the output,
    so batched inference has one static shape per image size. The graph reads the model's weights
    and buffers in place, so it stays valid while training updates them and after a checkpoint is
    loaded into the model; call it in eval mode (it is captured in the mode of its first call).
    On the CPU it is the model itself."""

    def __init__(self, model: nn.Module, batch: int, amp: str = "auto") -> None:
        super().__init__()
        self.model, self.batch, self.amp = model, batch, amp
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cuda" or x.shape[0] > self.batch:
            return self.model(x)
        n = x.shape[0]
        key = (tuple(x.shape[1:]), x.dtype, x.is_contiguous(memory_format=torch.channels_last), self.model.training)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_x, static_y = self._graphs[key]
        static_x[:n].copy_(x)
        if n < self.batch:
            static_x[n:].zero_()
        graph.replay()
        return static_y[:n].clone()

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        static_x = torch.zeros((self.batch, *x.shape[1:]), dtype=x.dtype, device=x.device).contiguous(memory_format=fmt)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), autocast(x.device, self.amp, cache=False):
            for _ in range(2):
                self.model(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), autocast(x.device, self.amp, cache=False):
            static_y = self.model(static_x)
        return graph, static_x, static_y


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


class Ensemble(nn.Module):
    """Several models as one: the output is the logit of the mean probability, so the softmax
    (sigmoid) that follows is exactly the mean of the models' softmax (sigmoid) outputs,
    p̄ = (1/M) Σₘ softmax(zₘ), returned as log p̄ (one logit: log p̄ − log(1 − p̄))."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [m(x).float() for m in self.models]
        if outs[0].shape[1] == 1:
            return torch.logit(torch.stack([torch.sigmoid(o) for o in outs]).mean(0))
        return torch.log(torch.stack([torch.softmax(o, 1) for o in outs]).mean(0))


def models_from_checkpoints(checkpoints: str | Path | Sequence[str | Path],
                            device: torch.device) -> tuple[nn.Module, dict]:
    """The model of one checkpoint, or the :class:`Ensemble` of several that share their data
    (channels, classes, logits, training size, normalisation); InputError naming one that does not."""
    paths = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    if not paths:
        raise InputError("--checkpoint: give at least one")
    loaded = [model_from_checkpoint(p, device) for p in paths]
    meta = loaded[0][1]
    keys = ("in_channels", "num_classes", "logits", "size", "mean", "std")
    for p, (_, m) in zip(paths[1:], loaded[1:], strict=True):
        diff = [k for k in keys if m.get(k) != meta.get(k)]
        if diff:
            raise InputError(f"--checkpoint {p}: differs from {paths[0]} in {', '.join(diff)}; an ensemble needs "
                             "models of the same data")
    if len(loaded) == 1:
        return loaded[0][0], meta
    return Ensemble([m for m, _ in loaded]).eval(), meta


def _case_probs(model: nn.Module, images: list[np.ndarray], size: int, mean, std, dev: torch.device, tta: bool,
                batch: int, windowed: bool) -> list[torch.Tensor]:
    """Probabilities (K, H, W) at each image's own resolution, for (H, W, C) images in [0, 1]."""
    from segment.data.pipeline import image_tensor, resize_image

    out = []
    if windowed:
        for im in images:
            x = normalise(image_tensor(im)[None].to(dev), mean, std)
            out.append(predict_window(model, x, size, tta=tta, batch=batch)[0])
        return out
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        probs = predict_probs(model, normalise(torch.stack([resize_image(im, size) for im in chunk]).to(dev), mean, std),
                              tta)
        for j, im in enumerate(chunk):
            p = probs[j]
            if tuple(p.shape[-2:]) != im.shape[:2]:
                p = F.interpolate(p[None], size=im.shape[:2], mode="bilinear", align_corners=False)[0]
            out.append(p)
    return out


def _labels(p: torch.Tensor) -> np.ndarray:
    return (p[0] >= 0.5).cpu().numpy().astype(np.int64) if p.shape[0] == 1 else p.argmax(0).cpu().numpy()


def _volume_window(dataset: str):
    """The intensity window the dataset's reader used in training (``segment.data.volume``)."""
    from segment.data.synapse import HU_WINDOW

    return {"synapse": HU_WINDOW, "acdc": "minmax"}.get(dataset, "percentile")


def predict_folder(checkpoint: str | Path | Sequence[str | Path], input_dir: str | Path, out_dir: str | Path, *,
                   tta: bool = False, device: str = "auto", batch: int = 4, progress: bool = False,
                   window: bool | None = None, echo: Callable[[str], None] | None = None,
                   save_probabilities: bool = False, overlays: bool = True) -> list[Path]:
    """Segment every case in ``input_dir`` and write its mask in the input's own format
    (``segment.data.predictions``: NIfTI with the input's affine, 0/255 or palette PNG), one case
    at a time (decode, predict, write). Several checkpoints are ensembled (mean of softmax).
    Every file's header is checked before anything is written. ``window``: sliding window at each
    image's own resolution (``predict_window``) instead of resizing; None (the default) takes the
    window for images larger than the training size and says so through ``echo``. Returns the
    written paths."""
    from dataclasses import replace

    from PIL import Image
    from tqdm.auto import tqdm

    from segment.data import predictions as P
    from segment.data.base import Record, read_image
    from segment.data.nnunet import read_channels
    from segment.data.volume import load_slice, read_geometry, write_volume

    dev = resolve_device(device)
    model, meta = models_from_checkpoints(checkpoint, dev)
    channels, size = int(meta["in_channels"]), int(meta["size"])
    cases = P.list_inputs(input_dir, channels)
    sides = [P.check_readable(c) for c in cases]  # headers only: fail before writing anything
    dst = Path(out_dir)
    if dst.exists() and not dst.is_dir():
        raise InputError(f"--out {dst} exists and is not a folder")
    k_classes = int(meta["num_classes"])
    names = list(meta.get("class_names", [f"class_{k}" for k in range(1, k_classes)]))
    too_big = sum(1 for hw in sides if hw is not None and max(hw) > size)
    if window is None and too_big and echo is not None:
        echo(f"{too_big} of {len(cases)} image(s) are larger than the training size {size}: predicted by "
             "sliding window at their own resolution (--resize resizes them whole instead)")
    dst.mkdir(parents=True, exist_ok=True)
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    vwindow = _volume_window(str(meta.get("dataset", "")))
    written: list[Path] = []
    if k_classes > 2 and any(hw is not None for hw in sides):
        written.append(P.write_class_list(dst, names))
    prob_names = names if int(meta.get("logits", k_classes)) == 1 else ["background", *names]
    for case in tqdm(cases, desc="predict", disable=not progress, leave=False):
        if case.nifti:
            geo = read_geometry(case.files[0])
            rec = Record(id=case.name, image=str(case.files[0]), mask=None, part="predict",
                         extra_images=tuple(str(f) for f in case.files[1:]), axis=geo.axis)
            images = [load_slice(replace(rec, key=z), window=vwindow).image for z in range(geo.depth)]
            win = bool(window) if window is not None else max(geo.slice_shape) > size
            probs = _case_probs(model, images, size, mean, std, dev, tta, batch, win)
            labels = geo.stack([_labels(p) for p in probs])
            written.append(write_volume(dst / f"{case.name}.nii.gz", labels, geo))
            if save_probabilities:
                vol = np.stack([p.cpu().numpy() for p in probs], axis=geo.axis + 1)
                written.append(P.write_probabilities(dst / f"{case.name}_probabilities.npz", vol, prob_names))
            continue
        if len(case.files) > 1:
            image = read_channels([str(f) for f in case.files], channels)
        else:
            image = read_image(case.files[0], channels)
        win = bool(window) if window is not None else max(image.shape[:2]) > size
        p = _case_probs(model, [image], size, mean, std, dev, tta, batch, win)[0]
        lab = _labels(p)
        written.append(P.write_mask_png(dst / f"{case.name}_mask.png", lab, k_classes))
        if overlays:
            path = dst / f"{case.name}_overlay.png"
            Image.fromarray(overlay(image, lab)).save(path)
            written.append(path)
        if save_probabilities:
            written.append(P.write_probabilities(dst / f"{case.name}_probabilities.npz", p.cpu().numpy(), prob_names))
    return written
