"""GlaS / Warwick-QU gland segmentation (docs/datasets.md).

Layout: ``train_k.bmp`` + ``train_k_anno.bmp`` (k = 1..85), ``testA_k[_anno].bmp`` (1..60),
``testB_k[_anno].bmp`` (1..20) and ``Grade.csv``, directly in ``--data-dir`` or in its
``Warwick QU Dataset (Released 2016_07_08)`` sub-folder. Annotations are instance labels
(0 = background, 1..n = glands): binarised with label != 0 for training, kept for object metrics.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from biorules.errors import InputError
from segment.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    Record,
    Sample,
    Scan,
    check_same_size,
    find_root,
    read_image,
    read_label_array,
    require_dir,
)

INFO = DatasetInfo(
    name="glas", num_classes=2, in_channels=3, class_names=("gland",), mean=IMAGENET_MEAN,
    std=IMAGENET_STD, official_split=True, instances=True,
    layout="train_k.bmp + train_k_anno.bmp, testA_k*.bmp, testB_k*.bmp, Grade.csv",
)

_NAME = re.compile(r"^(train|testA|testB)_(\d+)(_anno)?$")


def read_grades(path: Path) -> dict[str, str]:
    """``name -> grade (GlaS)`` from ``Grade.csv`` (empty if the file is absent)."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    grades = {}
    for row in rows[1:]:
        if len(row) >= 3:
            grades[row[0].strip()] = row[2].strip()
    return grades


def scan(root: Path) -> Scan:
    base = find_root(require_dir(root, "--data-dir"), "*_anno.bmp", ("Warwick QU Dataset (Released 2016_07_08)",))
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for p in sorted(base.glob("*.bmp")):
        m = _NAME.match(p.stem)
        if m is None:
            continue
        key = f"{m.group(1)}_{m.group(2)}"
        (masks if m.group(3) else images)[key] = p
    if not images and not masks:
        raise InputError(f"--data-dir {root}: no GlaS files (expected {INFO.layout})")
    grades = read_grades(base / "Grade.csv")
    problems = [f"image {images[k]} has no annotation {k}_anno.bmp" for k in sorted(set(images) - set(masks))]
    problems += [f"annotation {masks[k]} has no image {k}.bmp" for k in sorted(set(masks) - set(images))]
    if not (base / "Grade.csv").is_file():
        problems.append(f"{base / 'Grade.csv'} not found")

    def order(k: str) -> tuple[int, int]:
        part, num = k.split("_")
        return ({"train": 0, "testA": 1, "testB": 2}[part], int(num))

    records = []
    for k in sorted(set(images) & set(masks), key=order):
        meta = (("grade", grades[k]),) if k in grades else ()
        records.append(Record(id=k, image=str(images[k]), mask=str(masks[k]), part=k.split("_")[0], meta=meta))
    return Scan(records, problems)


def load(record: Record) -> Sample:
    image = read_image(record.image, 3)
    labels = read_label_array(record.mask)
    check_same_size(image, labels, record.image, record.mask)
    if labels.min() < 0:
        raise InputError(f"annotation {record.mask} has negative labels")
    return Sample(image=image, mask=(labels != 0).astype(np.int64), instances=labels.astype(np.int32))
