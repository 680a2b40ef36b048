"""Synapse multi-organ CT in the TransUNet layout (docs/datasets.md).

``train_npz/caseXXXX_sliceYYY.npz`` (``image`` float32 in [0, 1], ``label`` uint8, 512²) and
``test_vol_h5/caseXXXX.npy.h5`` (``image``, ``label``: D×512×512). Optional lists ``train.txt``
and ``test_vol.txt`` (in ``--data-dir`` or ``lists/lists_Synapse/``) restrict the cases. Test
volumes become one record per slice, grouped by ``volume`` for 3-D metrics.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from biorules.errors import InputError
from segment.data.base import GRAY_MEAN, GRAY_STD, DatasetInfo, Record, Sample, Scan, require_dir

INFO = DatasetInfo(
    name="synapse", num_classes=9, in_channels=1,
    class_names=("aorta", "gallbladder", "kidney_l", "kidney_r", "liver", "pancreas", "spleen", "stomach"),
    mean=GRAY_MEAN, std=GRAY_STD, official_split=True, volumetric=True,
    layout="train_npz/caseXXXX_sliceYYY.npz + test_vol_h5/caseXXXX.npy.h5",
    epochs=30, batch=24,
)


def _read_list(root: Path, name: str) -> list[str] | None:
    for base in (root, root / "lists" / "lists_Synapse", root / "lists"):
        p = base / name
        if p.is_file():
            return [line.strip() for line in p.read_text().splitlines() if line.strip()]
    return None


def volume_depth(path: str | Path) -> int:
    """Number of slices of an h5 volume's ``image`` (InputError naming the file if unreadable)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return int(f["image"].shape[0])
    except (OSError, KeyError) as e:
        raise InputError(f"cannot read volume {path}: {e}") from None


def scan(root: Path) -> Scan:
    require_dir(root, "--data-dir")
    train_dir, test_dir = root / "train_npz", root / "test_vol_h5"
    if not train_dir.is_dir() and not test_dir.is_dir():
        raise InputError(f"--data-dir {root}: no train_npz/ or test_vol_h5/ (expected {INFO.layout})")
    records, problems = [], []
    if train_dir.is_dir():
        names = _read_list(root, "train.txt") or sorted(p.stem for p in train_dir.glob("*.npz"))
        for n in names:
            p = train_dir / f"{n}.npz"
            if not p.is_file():
                problems.append(f"{p} listed in train.txt not found")
                continue
            records.append(Record(id=n, image=str(p), mask=str(p), part="train"))
    else:
        problems.append(f"{train_dir} not found")
    if test_dir.is_dir():
        names = _read_list(root, "test_vol.txt") or sorted(p.name[: -len(".npy.h5")] for p in test_dir.glob("*.npy.h5"))
        for n in names:
            p = test_dir / f"{n}.npy.h5"
            if not p.is_file():
                problems.append(f"{p} listed in test_vol.txt not found")
                continue
            try:
                depth = volume_depth(p)
            except InputError as e:
                problems.append(str(e))
                continue
            records += [Record(id=f"{n}_slice{z:03d}", image=str(p), mask=str(p), part="test", key=z, volume=n)
                        for z in range(depth)]
    else:
        problems.append(f"{test_dir} not found")
    return Scan(records, problems)


def _check(image: np.ndarray, label: np.ndarray, path: str) -> Sample:
    if image.shape != label.shape or image.ndim != 2:
        raise InputError(f"{path}: image {image.shape} and label {label.shape} differ or are not 2-D")
    if label.size and (label.min() < 0 or label.max() >= INFO.num_classes):
        raise InputError(f"{path}: label values outside 0..{INFO.num_classes - 1}")
    img = image.astype(np.float32)
    if img.size and (img.min() < 0.0 or img.max() > 1.0):
        img = np.clip(img, -125.0, 275.0)
        img = (img + 125.0) / 400.0
    return Sample(image=img[..., None], mask=label.astype(np.int64))


def load(record: Record) -> Sample:
    if record.key is None:
        try:
            with np.load(record.image) as d:
                return _check(d["image"], d["label"], record.image)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise InputError(f"cannot read slice {record.image}: {e}") from None
    import h5py

    try:
        with h5py.File(record.image, "r") as f:
            return _check(f["image"][record.key], f["label"][record.key], record.image)
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"cannot read volume {record.image}: {e}") from None
