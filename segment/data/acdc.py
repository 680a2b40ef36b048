"""ACDC cardiac MRI, multi-class (1 RV, 2 Myo, 3 LV), docs/datasets.md

Layout: ``ACDC_training_slices/patientNNN_frameFF_slice_S.h5`` (2-D ``image``, ``label``) for
training and ``ACDC_training_volumes/patientNNN_frameFF.h5`` (3-D) for validation and test.
Official split by patient: 1–20 test, 21–30 validation, 31–100 training.

Raw release: ``training/patientNNN/patientNNN_frameFF.nii.gz`` with ``patientNNN_frameFF_gt.nii.gz``
(the labelled ED and ES frames; ``database/`` above it is found too; ``_4d`` files and
``testing/`` patients without ``_gt`` files are not read), the same split by patient. Each volume
is cut along its coarsest spacing (the short axis stack) and min-max scaled per volume; the voxel
spacing is kept for HD95 in mm. Every record is grouped by patient, so the two frames of one
patient never land in different folds.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from biorules.errors import InputError
from segment.data.base import GRAY_MEAN, GRAY_STD, DatasetInfo, Record, Sample, Scan, require_dir

INFO = DatasetInfo(
    name="acdc", num_classes=4, in_channels=1, class_names=("rv", "myo", "lv"), mean=GRAY_MEAN,
    std=GRAY_STD, official_split=True, volumetric=True,
    layout="ACDC_training_slices/patientNNN_frameFF_slice_S.h5 + ACDC_training_volumes/patientNNN_frameFF.h5",
    epochs=150, batch=24,
)
_SLICE = re.compile(r"^patient(\d+)_frame(\d+)_slice_(\d+)$")
_VOLUME = re.compile(r"^patient(\d+)_frame(\d+)$")


def part_of(patient: int) -> str:
    return "test" if patient <= 20 else "val" if patient <= 30 else "train"


RAW_LAYOUT = "training/patientNNN/patientNNN_frameFF.nii.gz + patientNNN_frameFF_gt.nii.gz"
_RAW = re.compile(r"^patient(\d+)_frame(\d+)_gt$")


def _raw_roots(root: Path) -> list[Path]:
    bases = [b for b in (root, root / "database", root / "ACDC" / "database") if b.is_dir()]
    return [b / sub for b in bases for sub in ("training", "testing") if (b / sub).is_dir()]


def scan_raw(folders: list[Path]) -> Scan:
    """Records of the raw NIfTI release (module docstring)."""
    from segment.data.volume import case_name, case_records

    records, problems, geometry = [], [], {}
    for folder in folders:
        for gt in sorted(folder.glob("patient*/patient*_frame*_gt.nii*")):
            m = _RAW.match(case_name(gt))
            if m is None:
                continue
            case = case_name(gt).removesuffix("_gt")
            image = next((p for p in gt.parent.glob(f"{case}.nii*") if case_name(p) == case), None)
            if image is None:
                problems.append(f"label {gt} has no image {gt.parent / (case + '.nii.gz')}")
                continue
            patient = int(m.group(1))
            try:
                recs, geo = case_records(case, [str(image)], str(gt), part_of(patient), group=f"patient{patient:03d}")
            except InputError as e:
                problems.append(str(e))
                continue
            records += recs
            geometry[case] = geo
    return Scan(records, problems, geometry=geometry)


def scan(root: Path) -> Scan:
    from segment.data.synapse import volume_depth

    require_dir(root, "--data-dir")
    sdir, vdir = root / "ACDC_training_slices", root / "ACDC_training_volumes"
    if not sdir.is_dir() and not vdir.is_dir():
        raw = _raw_roots(root)
        if raw:
            return scan_raw(raw)
        raise InputError(f"--data-dir {root}: no ACDC_training_slices/ (expected {INFO.layout}, "
                         f"or the raw release {RAW_LAYOUT})")
    records, problems = [], []
    if sdir.is_dir():
        found = [(m, p) for p in sdir.glob("*.h5") if (m := _SLICE.match(p.stem))]
        for m, p in sorted(found, key=lambda t: tuple(int(g) for g in t[0].groups())):
            if part_of(int(m.group(1))) == "train":
                records.append(Record(id=p.stem, image=str(p), mask=str(p), part="train",
                                      group=f"patient{int(m.group(1)):03d}"))
    else:
        problems.append(f"{sdir} not found")
    if vdir.is_dir():
        for p in sorted(vdir.glob("*.h5")):
            m = _VOLUME.match(p.stem)
            if m is None or part_of(int(m.group(1))) == "train":
                continue
            try:
                depth = volume_depth(p)
            except InputError as e:
                problems.append(str(e))
                continue
            part = part_of(int(m.group(1)))
            records += [Record(id=f"{p.stem}_slice_{z}", image=str(p), mask=str(p), part=part, key=z,
                               volume=p.stem, group=f"patient{int(m.group(1)):03d}") for z in range(depth)]
    else:
        problems.append(f"{vdir} not found")
    return Scan(records, problems)


def load(record: Record) -> Sample:
    if record.axis is not None:  # raw NIfTI release
        from segment.data.volume import load_slice

        s = load_slice(record, window="minmax")
        if s.mask.size and (s.mask.min() < 0 or s.mask.max() >= INFO.num_classes):
            raise InputError(f"{record.mask}: label values outside 0..{INFO.num_classes - 1}")
        return s
    import h5py

    try:
        with h5py.File(record.image, "r") as f:
            image = f["image"][()] if record.key is None else f["image"][record.key]
            label = f["label"][()] if record.key is None else f["label"][record.key]
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"cannot read {record.image}: {e}") from None
    if image.shape != label.shape or image.ndim != 2:
        raise InputError(f"{record.image}: image {image.shape} and label {label.shape} differ or are not 2-D")
    if label.size and (label.min() < 0 or label.max() >= INFO.num_classes):
        raise InputError(f"{record.image}: label values outside 0..{INFO.num_classes - 1}")
    img = image.astype(np.float32)
    lo, hi = (float(img.min()), float(img.max())) if img.size else (0.0, 1.0)
    if lo < 0.0 or hi > 1.0:
        img = (img - lo) / max(hi - lo, 1e-12)
    return Sample(image=img[..., None], mask=np.rint(label).astype(np.int64))
