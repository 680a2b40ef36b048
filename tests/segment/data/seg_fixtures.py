"""Builders of small dataset folders in the published layouts, with real file formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

H, W = 40, 48


def rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def gray(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def blobs(seed: int, h: int = H, w: int = W, n: int = 2) -> np.ndarray:
    """Instance labels 0..n: n disjoint rectangles at seeded positions."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.uint8)
    for i in range(n):
        y = int(rng.integers(2, h // 2 - 8)) + (h // 2) * (i % 2)
        x = int(rng.integers(2, w - 12))
        lab[y:y + 6, x:x + 9] = i + 1
    return lab


def save(path: Path, arr: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def make_glas(root: Path, n_train: int = 4, n_a: int = 2, n_b: int = 1) -> Path:
    rows = ["name,patient ID,grade (GlaS),grade (Sirinukunwattana et al. 2015)"]
    seed = 0
    for part, n in (("train", n_train), ("testA", n_a), ("testB", n_b)):
        for k in range(1, n + 1):
            seed += 1
            save(root / f"{part}_{k}.bmp", rgb(seed))
            save(root / f"{part}_{k}_anno.bmp", blobs(seed))
            rows.append(f"{part}_{k},{k},{'benign' if k % 2 else 'malignant'},adenomatous")
    (root / "Grade.csv").write_text("\n".join(rows) + "\n")
    return root


def make_busi(root: Path) -> Path:
    base = root / "Dataset_BUSI_with_GT"
    for cls, n in (("benign", 3), ("malignant", 2), ("normal", 1)):
        for k in range(1, n + 1):
            save(base / cls / f"{cls} ({k}).png", gray(k))
            save(base / cls / f"{cls} ({k})_mask.png", (blobs(k, n=1) > 0).astype(np.uint8) * 255)
    save(base / "benign" / "benign (1)_mask_1.png", (blobs(99, n=1) > 0).astype(np.uint8) * 255)
    return root


def make_kvasir(root: Path, n: int = 3) -> Path:
    for k in range(n):
        save(root / "images" / f"cju{k}.jpg", rgb(k), quality=95)
        save(root / "masks" / f"cju{k}.jpg", (blobs(k) > 0).astype(np.uint8) * 255, quality=95)
    return root


def make_clinicdb(root: Path, n: int = 3) -> Path:
    for k in range(1, n + 1):
        save(root / "Original" / f"{k}.tif", rgb(k))
        save(root / "Ground Truth" / f"{k}.tif", (blobs(k) > 0).astype(np.uint8) * 255)
    return root


def make_colondb(root: Path, n: int = 3) -> Path:
    for k in range(1, n + 1):
        save(root / "images" / f"{k}.png", rgb(k))
        save(root / "masks" / f"{k}.png", (blobs(k) > 0).astype(np.uint8) * 255)
    return root


def make_isic(root: Path) -> Path:
    k = 0
    for name, n in (("Training", 3), ("Validation", 1), ("Test_v2", 2)):
        for _ in range(n):
            k += 1
            iid = f"ISIC_{k:07d}"
            save(root / f"ISIC-2017_{name}_Data" / f"{iid}.jpg", rgb(k), quality=95)
            save(root / f"ISIC-2017_{name}_Data" / f"{iid}_superpixels.png", rgb(k + 100))
            save(root / f"ISIC-2017_{name}_Part1_GroundTruth" / f"{iid}_segmentation.png",
                 (blobs(k) > 0).astype(np.uint8) * 255)
    return root


def make_synapse(root: Path) -> Path:
    import h5py

    rng = np.random.default_rng(0)
    (root / "train_npz").mkdir(parents=True)
    names = []
    for z in range(3):
        name = f"case0005_slice{z:03d}"
        np.savez(root / "train_npz" / f"{name}.npz", image=rng.random((32, 32), dtype=np.float32),
                 label=rng.integers(0, 9, (32, 32)).astype(np.uint8))
        names.append(name)
    (root / "train.txt").write_text("\n".join(names) + "\n")
    (root / "test_vol_h5").mkdir()
    with h5py.File(root / "test_vol_h5" / "case0001.npy.h5", "w") as f:
        f["image"] = rng.random((4, 32, 32), dtype=np.float32)
        f["label"] = rng.integers(0, 9, (4, 32, 32)).astype(np.float32)
    return root


def make_acdc(root: Path) -> Path:
    import h5py

    rng = np.random.default_rng(0)
    (root / "ACDC_training_slices").mkdir(parents=True)
    (root / "ACDC_training_volumes").mkdir()
    for p in (31, 32):
        for s in range(2):
            with h5py.File(root / "ACDC_training_slices" / f"patient{p:03d}_frame01_slice_{s}.h5", "w") as f:
                f["image"] = rng.random((24, 20)) * 300.0
                f["label"] = rng.integers(0, 4, (24, 20)).astype(np.uint8)
    for p in (1, 21, 40):
        with h5py.File(root / "ACDC_training_volumes" / f"patient{p:03d}_frame01.h5", "w") as f:
            f["image"] = rng.random((3, 24, 20)) * 300.0
            f["label"] = rng.integers(0, 4, (3, 24, 20)).astype(np.uint8)
    return root


# ----------------------------------------------------------------- the user's own data, NIfTI

#: voxel spacing (mm) of the NIfTI fixtures: anisotropic, coarsest along axis 2
SPACING = (0.8, 0.7, 3.0)
VOL = (20, 16, 5)


def affine(spacing=SPACING, origin=(-12.0, 30.0, 7.5)) -> np.ndarray:
    """A voxel-to-world matrix with a flipped first axis, as radiological NIfTI files have."""
    a = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    a[:3, 3] = origin
    return a


def save_nifti(path: Path, data: np.ndarray, aff: np.ndarray | None = None) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine() if aff is None else aff), str(path))
    return path


def volume_labels(seed: int, shape=VOL, classes: int = 3) -> np.ndarray:
    """uint8 labels 0..classes-1: one box per foreground class over a few slices."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    h, w = max(shape[0] // 3, 1), max(shape[1] // 3, 1)
    for c in range(1, classes):
        y, x = int(rng.integers(0, shape[0] - h + 1)), int(rng.integers(0, shape[1] - w + 1))
        z0 = int(rng.integers(0, max(shape[2] - 1, 1)))
        lab[y:y + h, x:x + w, z0:z0 + 2] = c
    return lab


def volume_image(seed: int, shape=VOL) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 800.0 - 200.0).astype(np.float32)


def make_folder(root: Path, n: int = 5, multiclass: bool = False) -> Path:
    """images/k.png (RGB) + masks/k.png: 0/255 binary, or RGB colour-coded with a classes.json."""
    colours = {"background": [0, 0, 0], "gland": [255, 0, 0], "duct": [0, 0, 255]}
    for k in range(n):
        save(root / "images" / f"img{k}.png", rgb(k))
        lab = blobs(k)
        if multiclass:
            save(root / "masks" / f"img{k}.png", np.array(list(colours.values()), np.uint8)[lab])
        else:
            save(root / "masks" / f"img{k}.png", (lab > 0).astype(np.uint8) * 255)
    if multiclass:
        (root / "classes.json").write_text(__import__("json").dumps(colours))
    return root


def make_nnunet_2d(root: Path, n: int = 4) -> Path:
    """nnU-Net raw 2-D: RGB PNG cases (three channels in _0000) and labels 0..2."""
    import json

    for k in range(n):
        save(root / "imagesTr" / f"case{k:03d}_0000.png", rgb(k))
        save(root / "labelsTr" / f"case{k:03d}.png", blobs(k))
    save(root / "imagesTs" / "test000_0000.png", rgb(50))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "gland": 1, "duct": 2},
        "numTraining": n, "file_ending": ".png"}))
    return root


def make_nnunet_3d(root: Path, n: int = 5, channels: int = 2, slice_axis: int | None = None,
                   shape=VOL, test: int = 1) -> Path:
    """nnU-Net raw 3-D: n NIfTI cases with ``channels`` files each, spacing SPACING, labels 0..2."""
    import json

    for k in range(n):
        for c in range(channels):
            save_nifti(root / "imagesTr" / f"vol_{k:03d}_{c:04d}.nii.gz", volume_image(10 * k + c, shape))
        save_nifti(root / "labelsTr" / f"vol_{k:03d}.nii.gz", volume_labels(k, shape))
    for k in range(test):
        for c in range(channels):
            save_nifti(root / "imagesTs" / f"new_{k:03d}_{c:04d}.nii.gz", volume_image(500 + c, shape))
    doc = {"channel_names": {str(c): f"MR{c}" for c in range(channels)},
           "labels": {"background": 0, "rv": 1, "lv": 2}, "numTraining": n, "file_ending": ".nii.gz"}
    if slice_axis is not None:
        doc["slice_axis"] = slice_axis
    (root / "dataset.json").write_text(json.dumps(doc))
    return root


def make_synapse_raw(root: Path, cases=(1, 5, 6)) -> Path:
    """RawData/Training/{img,label}/img000k.nii.gz with BTCV labels 0..13."""
    rng = np.random.default_rng(3)
    for k in cases:
        save_nifti(root / "RawData" / "Training" / "img" / f"img{k:04d}.nii.gz",
                   (rng.random(VOL) * 1000 - 500).astype(np.float32))
        save_nifti(root / "RawData" / "Training" / "label" / f"label{k:04d}.nii.gz",
                   rng.integers(0, 14, VOL).astype(np.uint8))
    return root


def make_acdc_raw(root: Path, patients=(1, 21, 31, 32)) -> Path:
    """database/training/patientNNN/patientNNN_frame{01,12}[_gt].nii.gz plus a 4-D file."""
    rng = np.random.default_rng(4)
    for p in patients:
        d = root / "database" / "training" / f"patient{p:03d}"
        for f in (1, 12):
            save_nifti(d / f"patient{p:03d}_frame{f:02d}.nii.gz", (rng.random(VOL) * 300).astype(np.float32))
            save_nifti(d / f"patient{p:03d}_frame{f:02d}_gt.nii.gz", volume_labels(p + f, VOL, 4))
        save_nifti(d / f"patient{p:03d}_4d.nii.gz", np.zeros((*VOL, 3), np.float32))
        (d / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: NOR\n")
    return root
