"""CVC-ClinicDB and CVC-ColonDB polyps (docs/datasets.md).

ClinicDB: ``Original/k.tif`` + ``Ground Truth/k.tif`` (PNG in some mirrors; also accepted inside a
``PNG`` or ``TIF`` sub-folder). Frames come from videos, so random splits leak near-duplicates.
ColonDB: ``images/*.png`` + ``masks/*.png``.
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
    find_root,
    paired_folders,
    read_image,
    read_label_array,
    require_dir,
)

LEAK_WARNING = "CVC-ClinicDB frames come from videos: random splits leak near-duplicate frames"
CLINICDB = DatasetInfo(
    name="cvc-clinicdb", num_classes=2, in_channels=3, class_names=("polyp",), mean=IMAGENET_MEAN,
    std=IMAGENET_STD, official_split=False, layout="Original/k.tif + Ground Truth/k.tif",
    random_split_warning=LEAK_WARNING,
)
COLONDB = DatasetInfo(
    name="cvc-colondb", num_classes=2, in_channels=3, class_names=("polyp",), mean=IMAGENET_MEAN,
    std=IMAGENET_STD, official_split=False, layout="images/NAME.png + masks/NAME.png",
)
_EXTS = (".tif", ".tiff", ".png", ".bmp", ".jpg")


def scan_clinicdb(root: Path) -> Scan:
    base = find_root(require_dir(root, "--data-dir"), "Original", ("PNG", "TIF", "CVC-ClinicDB"))
    for sub in ("Original", "Ground Truth"):
        if not (base / sub).is_dir():
            raise InputError(f"--data-dir {root}: no '{sub}/' folder (expected {CLINICDB.layout})")
    scan = paired_folders(base / "Original", base / "Ground Truth", _EXTS, _EXTS)
    return with_groups(scan, base, root)


def with_groups(scan: Scan, base: Path, root: Path) -> Scan:
    """Records grouped by the video each frame comes from, from ``groups.csv`` (``FRAME,VIDEO``
    rows) next to ``Original/`` or in ``--data-dir``: the release itself lists no sequences, so
    without the file each frame is its own group and folds warn of the leak."""
    from dataclasses import replace

    from segment.data.folder import read_groups

    groups = read_groups(base / "groups.csv") or read_groups(root / "groups.csv")
    if not groups:
        return scan
    missing = [r.id for r in scan.records if r.id not in groups]
    problems = list(scan.problems)
    if missing:
        problems.append(f"groups.csv gives no video for frame {missing[0]}"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return Scan([replace(r, group=groups.get(r.id)) for r in scan.records], problems)


def scan_colondb(root: Path) -> Scan:
    base = find_root(require_dir(root, "--data-dir"), "images", ("CVC-ColonDB",))
    for sub in ("images", "masks"):
        if not (base / sub).is_dir():
            raise InputError(f"--data-dir {root}: no {sub}/ folder (expected {COLONDB.layout})")
    return paired_folders(base / "images", base / "masks", _EXTS, _EXTS)


def load(record: Record) -> Sample:
    image = read_image(record.image, 3)
    lossy = Path(record.mask).suffix.lower() in (".jpg", ".jpeg")
    mask = binarise(read_label_array(record.mask), record.mask, lossy=lossy)
    check_same_size(image, mask, record.image, record.mask)
    return Sample(image=image, mask=mask)
