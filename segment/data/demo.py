"""Built-in demo data: the fluorescence nuclei image and its instance label mask shipped in the
``stardist`` wheel (``stardist/data/images/img2d.tif``, ``mask2d.tif``; 512×512, 16-bit).

The image is cut into a 4×4 grid of 128×128 tiles: columns 0–2 train (12 tiles), column 3 rows 0–1
validation, rows 2–3 test. The files are located without importing ``stardist``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from biorules.errors import InputError
from segment.data.base import GRAY_MEAN, GRAY_STD, DatasetInfo, Record, Sample, Scan, read_pil

INFO = DatasetInfo(
    name="demo", num_classes=2, in_channels=1, class_names=("nucleus",), mean=GRAY_MEAN, std=GRAY_STD,
    official_split=True, instances=True, layout="built in (stardist nuclei image, 4x4 tiles)",
    epochs=40, batch=4,  # sized for a CPU
)
TILE = 128
GRID = 4


def image_folder() -> Path:
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("--dataset demo needs the 'stardist' package (pip install stardist)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "images"


def part_of(row: int, col: int) -> str:
    if col < GRID - 1:
        return "train"
    return "val" if row < GRID // 2 else "test"


def scan(root: Path | None = None) -> Scan:
    folder = image_folder()
    img, mask = folder / "img2d.tif", folder / "mask2d.tif"
    for p in (img, mask):
        if not p.is_file():
            raise InputError(f"--dataset demo: {p} not found in the stardist package")
    records = [Record(id=f"tile_r{r}_c{c}", image=str(img), mask=str(mask), part=part_of(r, c), key=r * GRID + c)
               for r in range(GRID) for c in range(GRID)]
    return Scan(records)


def _whole(path: str) -> np.ndarray:
    return np.array(read_pil(path))


def load(record: Record) -> Sample:
    img, labels = _whole(record.image), _whole(record.mask)
    if img.shape != (GRID * TILE, GRID * TILE) or labels.shape != img.shape:
        raise InputError(f"demo image {record.image} has unexpected shape {img.shape}")
    r, c = divmod(int(record.key or 0), GRID)
    sl = (slice(r * TILE, (r + 1) * TILE), slice(c * TILE, (c + 1) * TILE))
    tile = img[sl].astype(np.float32) / max(float(img.max()), 1.0)
    lab = labels[sl].astype(np.int32)
    return Sample(image=tile[..., None], mask=(lab != 0).astype(np.int64), instances=lab)
