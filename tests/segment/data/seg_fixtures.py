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
