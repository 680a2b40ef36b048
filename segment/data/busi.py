"""BUSI breast ultrasound (docs/datasets.md).

Layout: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/``, image ``benign (k).png`` with mask
``benign (k)_mask.png`` and optional extra masks ``benign (k)_mask_1.png``, OR-merged. The default
classes are benign + malignant (647 images).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from biorules.errors import InputError
from segment.data.base import (
    GRAY_MEAN,
    GRAY_STD,
    DatasetInfo,
    Record,
    Sample,
    Scan,
    binarise,
    check_same_size,
    find_root,
    read_image,
    read_label_array,
    require_dir,
)

INFO = DatasetInfo(
    name="busi", num_classes=2, in_channels=1, class_names=("lesion",), mean=GRAY_MEAN, std=GRAY_STD,
    official_split=False, layout="Dataset_BUSI_with_GT/{benign,malignant}/NAME (k).png + NAME (k)_mask[_j].png",
)

CLASSES = ("benign", "malignant")
_MASK = re.compile(r"^(.*)_mask(?:_(\d+))?$")


def scan(root: Path, classes: tuple[str, ...] = CLASSES) -> Scan:
    base = find_root(require_dir(root, "--data-dir"), "benign", ("Dataset_BUSI_with_GT",))
    missing = [c for c in classes if not (base / c).is_dir()]
    if missing:
        raise InputError(f"--data-dir {root}: no {missing[0]}/ folder (expected {INFO.layout})")
    records, problems = [], []
    for cls in classes:
        images: dict[str, Path] = {}
        masks: dict[str, list[Path]] = {}
        for p in sorted((base / cls).glob("*.png")):
            m = _MASK.match(p.stem)
            if m:
                masks.setdefault(m.group(1), []).append(p)
            else:
                images[p.stem] = p
        problems += [f"image {images[k]} has no {k}_mask.png" for k in sorted(set(images) - set(masks))]
        problems += [f"mask {masks[k][0]} has no image {k}.png" for k in sorted(set(masks) - set(images))]
        for k in sorted(set(images) & set(masks), key=_natural):
            ms = sorted(masks[k], key=lambda p: (len(p.stem), p.stem))
            records.append(Record(id=k, image=str(images[k]), mask=str(ms[0]), part="all",
                                  extra_masks=tuple(str(p) for p in ms[1:])))
    return Scan(records, problems)


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def load(record: Record) -> Sample:
    image = read_image(record.image, 1)
    mask = np.zeros(image.shape[:2], np.int64)
    for path in (record.mask, *record.extra_masks):
        m = binarise(read_label_array(path), path)
        check_same_size(image, m, record.image, path)
        mask |= m
    return Sample(image=image, mask=mask)
