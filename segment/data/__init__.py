"""Segmentation datasets: one reader per published layout, verification, splits and folds (docs/datasets.md).

``open_dataset(name, data_dir)`` scans a folder into :class:`~segment.data.base.Record` s;
``verify`` decodes every record and lists every problem; ``make_splits`` builds the official or
seeded 8:1:1 random splits, ``make_fold_splits`` K grouped cross-validation folds. ``folder`` and
``nnunet`` read the user's own data; NIfTI cases carry their geometry (``Dataset.geometry``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from biorules.errors import InputError
from segment.data.base import DatasetInfo, Record, Sample, Scan

if TYPE_CHECKING:
    from segment.data.volume import VolumeGeometry

__all__ = [
    "DATASETS", "Dataset", "DatasetInfo", "Record", "Sample", "Scan", "open_dataset", "verify",
]

# name -> (module, info attribute, scan function, load function)
DATASETS: dict[str, tuple[str, str, str, str]] = {
    "demo": ("segment.data.demo", "INFO", "scan", "load"),
    "glas": ("segment.data.glas", "INFO", "scan", "load"),
    "busi": ("segment.data.busi", "INFO", "scan", "load"),
    "kvasir": ("segment.data.kvasir", "INFO", "scan", "load"),
    "cvc-clinicdb": ("segment.data.cvc", "CLINICDB", "scan_clinicdb", "load"),
    "cvc-colondb": ("segment.data.cvc", "COLONDB", "scan_colondb", "load"),
    "isic2017": ("segment.data.isic", "INFO", "scan", "load"),
    "synapse": ("segment.data.synapse", "INFO", "scan", "load"),
    "acdc": ("segment.data.acdc", "INFO", "scan", "load"),
    "folder": ("segment.data.folder", "INFO", "scan", "load"),
    "nnunet": ("segment.data.nnunet", "INFO", "scan", "load"),
}


@dataclass(frozen=True)
class Dataset:
    """A scanned dataset: its description, records, the problems found while scanning, a loader,
    and the geometry of each NIfTI case (by ``Record.volume``)."""

    info: DatasetInfo
    root: Path | None
    records: tuple[Record, ...]
    problems: tuple[str, ...]
    loader: Callable[[Record], Sample]
    geometry: Mapping[str, VolumeGeometry] = field(default_factory=dict)

    def load(self, record: Record) -> Sample:
        return self.loader(record)

    def spacing(self, record: Record) -> tuple[float, float, float] | None:
        """Voxel spacing (mm) of the record's volume with its slices stacked on axis 0, None
        where the case has no geometry (a 2-D image, an h5 volume)."""
        geo = self.geometry.get(record.volume) if record.volume is not None else None
        return geo.stacked_spacing if geo is not None else None

    @property
    def hd95_units(self) -> str:
        """``mm`` when every record lies in a NIfTI volume of known spacing, else ``pixel``."""
        known = bool(self.geometry) and all(r.volume in self.geometry for r in self.records)
        return "mm" if known else "pixel"


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise InputError(f"--dataset: unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    mod, info, _, _ = DATASETS[name]
    return getattr(importlib.import_module(mod), info)


def open_dataset(name: str, data_dir: str | Path | None) -> Dataset:
    """Scan ``data_dir`` in the layout of dataset ``name`` (``demo`` needs no folder)."""
    info = dataset_info(name)
    mod_name, _, scan_name, load_name = DATASETS[name]
    mod = importlib.import_module(mod_name)
    if name == "demo":
        root = None
    else:
        if data_dir is None:
            raise InputError(f"--data-dir is required for --dataset {name}")
        root = Path(data_dir)
    scan: Scan = getattr(mod, scan_name)(root)
    info = scan.info or info
    if not scan.records:
        raise InputError(f"--data-dir {root}: no complete image/mask pairs for {name} (expected {info.layout})")
    return Dataset(info, root, tuple(scan.records), tuple(scan.problems), getattr(mod, load_name),
                   dict(scan.geometry))


def verify(ds: Dataset, progress: bool = False) -> list[str]:
    """Decode every record: pairing, decodability, mask values and image/mask sizes.

    Returns every problem found (scan problems first), one line each, naming the file.
    """
    from tqdm.auto import tqdm

    problems = list(ds.problems)
    ids = [r.id for r in ds.records]
    if len(set(ids)) != len(ids):
        problems.append("duplicate image ids in the dataset")
    for rec in tqdm(ds.records, desc="verify", disable=not progress, leave=False):
        try:
            s = ds.load(rec)
        except InputError as e:
            problems.append(str(e))
            continue
        if s.image.shape[:2] != s.mask.shape:
            problems.append(f"mask of {rec.image} has size {s.mask.shape}, image {s.image.shape[:2]}")
        elif s.mask.size and (s.mask.min() < 0 or s.mask.max() >= ds.info.num_classes):
            problems.append(f"mask {rec.mask} has class ids outside 0..{ds.info.num_classes - 1}")
    return problems
