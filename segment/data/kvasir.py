"""Kvasir-SEG polyps (docs/datasets.md): ``images/*.jpg`` and ``masks/*.jpg`` with matching names, directly
in ``--data-dir`` or in its ``Kvasir-SEG`` sub-folder; JPEG masks are thresholded at 128."""

from __future__ import annotations

from pathlib import Path

from biorules.errors import InputError
from segment.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    Record,
    Sample,
    Scan,
    binarise,
    check_same_size,
    find_root,
    paired_folders,
    read_image,
    read_label_array,
    require_dir,
)

INFO = DatasetInfo(
    name="kvasir", num_classes=2, in_channels=3, class_names=("polyp",), mean=IMAGENET_MEAN,
    std=IMAGENET_STD, official_split=False, layout="images/NAME.jpg + masks/NAME.jpg",
)

_EXTS = (".jpg", ".jpeg", ".png")


def scan(root: Path) -> Scan:
    base = find_root(require_dir(root, "--data-dir"), "images", ("Kvasir-SEG",))
    for sub in ("images", "masks"):
        if not (base / sub).is_dir():
            raise InputError(f"--data-dir {root}: no {sub}/ folder (expected {INFO.layout})")
    return paired_folders(base / "images", base / "masks", _EXTS, _EXTS)


def load(record: Record) -> Sample:
    image = read_image(record.image, 3)
    lossy = Path(record.mask).suffix.lower() in (".jpg", ".jpeg")
    mask = binarise(read_label_array(record.mask), record.mask, lossy=lossy)
    check_same_size(image, mask, record.image, record.mask)
    return Sample(image=image, mask=mask)
