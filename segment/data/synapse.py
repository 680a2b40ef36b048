"""Synapse multi-organ CT, in the TransUNet layout or as the raw NIfTI release (docs/datasets.md).

TransUNet layout: ``train_npz/caseXXXX_sliceYYY.npz`` (``image`` float32 in [0, 1], ``label``
uint8, 512²) and ``test_vol_h5/caseXXXX.npy.h5`` (``image``, ``label``: D×512×512). Optional lists
``train.txt`` and ``test_vol.txt`` (in ``--data-dir`` or ``lists/lists_Synapse/``) restrict the
cases. Test volumes become one record per slice, grouped by ``volume`` for 3-D metrics.

Raw release (BTCV "Abdomen", ``RawData/Training/img/imgXXXX.nii.gz`` +
``RawData/Training/label/labelXXXX.nii.gz``; ``Testing/`` has no labels and is not read): case
``imgXXXX`` is ``caseXXXX``; TransUNet's 12 test cases (or ``test_vol.txt``) test, the other
labelled cases train. Each volume is cut along its coarsest spacing, CT values clipped to
[−125, 275] HU and scaled to [0, 1], and the 13 BTCV labels mapped to TransUNet's 8 (the others
become background), with the voxel spacing kept for HD95 in mm.
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


#: TransUNet's test cases (lists/lists_Synapse/test_vol.txt)
TEST_CASES = ("case0008", "case0022", "case0038", "case0036", "case0032", "case0002", "case0029", "case0003",
              "case0001", "case0004", "case0025", "case0035")
#: HU window of the TransUNet preprocessing
HU_WINDOW = (-125.0, 275.0)
#: BTCV label -> class id: 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 6 liver,
#: 7 stomach, 8 aorta, 11 pancreas kept; esophagus, vena cava, portal/splenic vein, adrenals -> 0
BTCV_TO_SYNAPSE = np.array([0, 7, 4, 3, 2, 0, 5, 8, 1, 0, 0, 6, 0, 0], np.int64)
RAW_LAYOUT = "RawData/Training/img/imgXXXX.nii.gz + RawData/Training/label/labelXXXX.nii.gz"


def _raw_root(root: Path) -> Path | None:
    for base in (root, root / "RawData", root / "Abdomen" / "RawData", root / "Abdomen"):
        if (base / "Training" / "img").is_dir():
            return base / "Training"
    return None


def scan_raw(root: Path, training: Path) -> Scan:
    """Records of the raw NIfTI release (module docstring)."""
    from segment.data.volume import case_name, case_records

    test = set(_read_list(root, "test_vol.txt") or TEST_CASES)
    records, problems, geometry = [], [], {}
    labels = {case_name(p).removeprefix("label"): p for p in sorted((training / "label").glob("label*.nii*"))}
    for p in sorted((training / "img").glob("img*.nii*")):
        num = case_name(p).removeprefix("img")
        case = f"case{num}"
        if num not in labels:
            problems.append(f"image {p} has no label {training / 'label' / f'label{num}.nii.gz'}")
            continue
        try:
            recs, geo = case_records(case, [str(p)], str(labels[num]), "test" if case in test else "train",
                                     group=case)
        except InputError as e:
            problems.append(str(e))
            continue
        records += recs
        geometry[case] = geo
    return Scan(records, problems, geometry=geometry)


def scan(root: Path) -> Scan:
    require_dir(root, "--data-dir")
    train_dir, test_dir = root / "train_npz", root / "test_vol_h5"
    if not train_dir.is_dir() and not test_dir.is_dir():
        raw = _raw_root(root)
        if raw is not None:
            return scan_raw(root, raw)
        raise InputError(f"--data-dir {root}: no train_npz/ or test_vol_h5/ (expected {INFO.layout}, "
                         f"or the raw release {RAW_LAYOUT})")
    records, problems = [], []
    if train_dir.is_dir():
        names = _read_list(root, "train.txt") or sorted(p.stem for p in train_dir.glob("*.npz"))
        for n in names:
            p = train_dir / f"{n}.npz"
            if not p.is_file():
                problems.append(f"{p} listed in train.txt not found")
                continue
            records.append(Record(id=n, image=str(p), mask=str(p), part="train", group=n.split("_slice")[0]))
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
            records += [Record(id=f"{n}_slice{z:03d}", image=str(p), mask=str(p), part="test", key=z, volume=n,
                               group=n) for z in range(depth)]
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
    if record.axis is not None:  # raw NIfTI release
        from segment.data.volume import load_slice

        return load_slice(record, window=HU_WINDOW, label_map=BTCV_TO_SYNAPSE)
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
