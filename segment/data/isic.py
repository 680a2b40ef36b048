"""ISIC 2017 part 1, binary lesion segmentation, official split (docs/datasets.md).

Layout: ``ISIC-2017_{Training,Validation,Test_v2}_Data/ISIC_<id>.jpg`` (``*_superpixels.png``
skipped) and ``ISIC-2017_{...}_Part1_GroundTruth/ISIC_<id>_segmentation.png``.
"""

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
    paired_folders,
    read_image,
    read_label_array,
    require_dir,
)

INFO = DatasetInfo(
    name="isic2017", num_classes=2, in_channels=3, class_names=("lesion",), mean=IMAGENET_MEAN,
    std=IMAGENET_STD, official_split=True,
    layout="ISIC-2017_{Training,Validation,Test_v2}_Data/ + ..._Part1_GroundTruth/",
    epochs=100, batch=16,
)
PARTS = (("Training", "train"), ("Validation", "val"), ("Test_v2", "test"))


def scan(root: Path) -> Scan:
    require_dir(root, "--data-dir")
    records, problems, found = [], [], 0
    for name, part in PARTS:
        data = root / f"ISIC-2017_{name}_Data"
        truth = root / f"ISIC-2017_{name}_Part1_GroundTruth"
        if not data.is_dir() and not truth.is_dir():
            problems.append(f"{data} not found")
            continue
        found += 1
        if not data.is_dir() or not truth.is_dir():
            problems.append(f"{data if not data.is_dir() else truth} not found")
            continue
        s = paired_folders(data, truth, (".jpg", ".jpeg"), (".png",), part=part, mask_suffix="_segmentation")
        records += s.records
        problems += s.problems
    if not found:
        raise InputError(f"--data-dir {root}: no ISIC-2017_*_Data folders (expected {INFO.layout})")
    return Scan(records, problems)


def load(record: Record) -> Sample:
    image = read_image(record.image, 3)
    mask = binarise(read_label_array(record.mask), record.mask)
    check_same_size(image, mask, record.image, record.mask)
    return Sample(image=image, mask=mask)
