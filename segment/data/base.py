"""Shared pieces of the dataset readers: records, samples, image decoding (docs/datasets.md).

A reader module (``glas``, ``busi``, ...) exposes ``INFO`` (a :class:`DatasetInfo`), ``scan(root)``
returning a :class:`Scan` (records plus layout problems such as unpaired files) and
``load(record)`` returning a :class:`Sample`. Decoding failures raise
:class:`biorules.errors.InputError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from biorules.errors import InputError

if TYPE_CHECKING:
    from segment.data.volume import VolumeGeometry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.449,)
GRAY_STD = (0.226,)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: classes, channels, normalisation and its official split.

    ``num_classes`` counts the background (2 for a binary dataset, whose model has one logit).
    ``class_values`` are the values class 0, 1, ... have in the mask files (grey level, palette
    index or RGB colour) where they are not the class ids themselves (empty: they are).
    ``mean``/``std`` are applied to images scaled to [0, 1] (dimensionless). The training recipe
    (docs/rwkv-unet.md) is the dataset's own: ``epochs`` and global ``batch`` when the run gives
    none; ``random_split_warning`` is said when the data is split at random (e.g. video frames).
    """

    name: str
    num_classes: int
    in_channels: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    official_split: bool
    volumetric: bool = False
    instances: bool = False
    layout: str = ""
    class_values: tuple[int | tuple[int, int, int], ...] = ()
    epochs: int = 300
    batch: int = 8
    random_split_warning: str = ""

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def model_classes(self) -> int:
        """Number of output logits: 1 (sigmoid) for binary data, else one per class."""
        return 1 if self.binary else self.num_classes


@dataclass(frozen=True)
class Record:
    """One 2-D image of a dataset.

    ``part`` is the official part ("train", "val", "test", "testA", "testB"); ``key`` is the slice
    index inside a volume file, cut along array ``axis`` (NIfTI volumes); ``volume`` groups slices
    of one 3-D case for volume metrics; ``group`` is what must never be split between training and
    test (patient, video; None: the volume or the image itself); ``extra_images`` are the files of
    further input channels; ``meta`` holds extra text fields (e.g. the GlaS grade).
    """

    id: str
    image: str
    mask: str | None
    part: str
    extra_masks: tuple[str, ...] = ()
    key: int | None = None
    volume: str | None = None
    meta: tuple[tuple[str, str], ...] = ()
    group: str | None = None
    axis: int | None = None
    extra_images: tuple[str, ...] = ()

    @property
    def unit(self) -> str:
        """What folds keep together: the group, else the volume, else the image."""
        return self.group or self.volume or self.id


@dataclass
class Sample:
    """A decoded image: ``image`` float32 (H, W, C) in [0, 1]; ``mask`` int64 (H, W) class ids;
    ``instances`` int32 (H, W) object ids (0 = background) or None."""

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray | None = None


@dataclass
class Scan:
    """Result of scanning a dataset folder: records, plus problems found while pairing files.

    ``info`` replaces the reader's ``INFO`` where the data describes itself (classes, channels of
    a ``folder`` or ``nnunet`` dataset); ``geometry`` maps each NIfTI case (``Record.volume``) to
    its :class:`~segment.data.volume.VolumeGeometry`."""

    records: list[Record]
    problems: list[str] = field(default_factory=list)
    info: DatasetInfo | None = None
    geometry: dict[str, VolumeGeometry] = field(default_factory=dict)


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else an InputError naming it."""
    if not path.is_dir():
        raise InputError(f"{what}: folder {path} not found")
    return path


def find_root(root: Path, marker: str, candidates: tuple[str, ...] = ()) -> Path:
    """``root`` or one of its ``candidates`` sub-folders that contains ``marker`` (a glob)."""
    for base in (root, *(root / c for c in candidates)):
        if base.is_dir() and any(base.glob(marker)):
            return base
    return root


def read_pil(path: str | Path):
    """Open and fully decode an image with Pillow; InputError naming the file if it fails."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot decode image {path}: {e}") from None


def to_float_image(arr: np.ndarray, channels: int, path: str | Path) -> np.ndarray:
    """(H, W[, C]) array of any integer/float type -> float32 (H, W, channels) in [0, 1]."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise InputError(f"image {path} has shape {arr.shape}, expected (H, W) or (H, W, C)")
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        hi = float(a.max()) if a.size else 1.0
        f = a.astype(np.float32) / (65535.0 if hi > 4095 else max(hi, 1.0))
    else:
        f = a.astype(np.float32)
        lo, hi = float(f.min()), float(f.max())
        if lo < 0.0 or hi > 1.0:
            f = (f - lo) / max(hi - lo, 1e-12)
    if f.shape[2] == 4:
        f = f[..., :3]
    if f.shape[2] == channels:
        return np.ascontiguousarray(f)
    if channels == 3 and f.shape[2] == 1:
        return np.repeat(f, 3, axis=2)
    if channels == 1 and f.shape[2] == 3:
        return (f @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    raise InputError(f"image {path} has {f.shape[2]} channels, expected {channels}")


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """Decode an image file to float32 (H, W, channels) in [0, 1]."""
    im = read_pil(path)
    if im.mode in ("P", "LA", "PA", "CMYK", "YCbCr", "1"):
        im = im.convert("RGB" if channels == 3 else "L")
    elif im.mode == "RGBA":
        im = im.convert("RGB")
    return to_float_image(np.array(im), channels, path)


def read_label_array(path: str | Path) -> np.ndarray:
    """Decode a mask file to an integer (H, W) array of its stored values (palette indices kept)."""
    im = read_pil(path)
    if im.mode in ("RGB", "RGBA"):
        a = np.array(im)[..., :3]
        if not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])):
            a = np.array(im.convert("L"))
        else:
            a = a[..., 0]
    elif im.mode in ("LA", "PA"):
        a = np.array(im)[..., 0]
    else:
        a = np.array(im)
    if a.ndim != 2:
        raise InputError(f"mask {path} has shape {a.shape}, expected (H, W)")
    return a.astype(np.int64)


def binarise(values: np.ndarray, path: str | Path, lossy: bool = False) -> np.ndarray:
    """A 0/1 mask from stored values: {0, 1} or {0, 255} (any value if ``lossy``: JPEG, > 127)."""
    if lossy:
        return (values >= 128).astype(np.int64)
    u = np.unique(values)
    if u.size and u.max() <= 1:
        return (values > 0).astype(np.int64)
    if not set(u.tolist()) <= {0, 255}:
        shown = ", ".join(str(v) for v in u[:6]) + (", ..." if u.size > 6 else "")
        raise InputError(f"mask {path} has values {{{shown}}}, expected 0/255 or 0/1")
    return (values > 127).astype(np.int64)


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: str, mask_path: str) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise InputError(
            f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
            f"{image.shape[1]}x{image.shape[0]}"
        )


def paired_folders(
    image_dir: Path,
    mask_dir: Path,
    image_exts: tuple[str, ...],
    mask_exts: tuple[str, ...],
    part: str = "all",
    mask_suffix: str = "",
) -> Scan:
    """Pair ``image_dir/NAME.ext`` with ``mask_dir/NAME{mask_suffix}.ext`` by file stem."""
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in image_exts}
    masks = {}
    for p in sorted(mask_dir.iterdir()):
        if p.suffix.lower() in mask_exts and p.stem.endswith(mask_suffix):
            masks[p.stem[: len(p.stem) - len(mask_suffix)] if mask_suffix else p.stem] = p
    problems = [f"image {images[k]} has no mask in {mask_dir}" for k in sorted(set(images) - set(masks))]
    problems += [f"mask {masks[k]} has no image in {image_dir}" for k in sorted(set(masks) - set(images))]
    records = [Record(id=k, image=str(images[k]), mask=str(masks[k]), part=part)
               for k in sorted(set(images) & set(masks))]
    return Scan(records, problems)
