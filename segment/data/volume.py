"""NIfTI volumes as stacks of 2-D slices, and back (docs/datasets.md).

A 3-D case of shape (n₀, n₁, n₂) with voxel spacing (s₀, s₁, s₂) mm is cut along one axis ``a``
(by default the one with the coarsest spacing, a = argmax sᵢ, the last of equal maxima), giving
nₐ slices ``take(volume, z) = volume[(:,)*a, z]``. The in-plane spacing of a slice is the spacing
with sₐ removed, and a prediction of every slice is put back by ``stack(slices)`` =
``numpy.stack(slices, axis=a)``, which restores the case's shape; written with the case's affine,
it lies where the input lies. Surface metrics of the slices stacked along axis 0 use
``stacked_spacing`` = (sₐ, the others in order), in mm.

Intensities are scaled to [0, 1] per volume (not per slice, so slices of one case keep one
contrast): clipped to a window [lo, hi] and mapped by (x − lo)/(hi − lo). The window is fixed
(CT in Hounsfield units) or the volume's 0.5 and 99.5 percentiles.

Decoding a compressed volume costs as much as reading all of it, so the last volumes read are
kept (a bounded cache of :data:`CACHE_VOLUMES` arrays) while the slices of one case are loaded in
turn.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biorules.errors import InputError
from segment.data.base import Record, Sample

NIFTI_ENDINGS = (".nii.gz", ".nii")
#: volumes kept decoded (image and label of the current and the previous case)
CACHE_VOLUMES = 4
#: percentile window of :func:`scale_intensity` when no fixed window is given (percent)
PERCENTILES = (0.5, 99.5)


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return str(path).lower().endswith(NIFTI_ENDINGS)


def case_name(path: str | Path) -> str:
    """The file name without its ending (``img0001.nii.gz`` -> ``img0001``)."""
    name = Path(path).name
    for end in NIFTI_ENDINGS:
        if name.lower().endswith(end):
            return name[: -len(end)]
    return Path(name).stem


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a 3-D case's slices come from and how they go back.

    ``path`` the image file; ``shape`` voxels; ``affine`` the 4×4 voxel-to-world matrix (mm);
    ``spacing`` the voxel size along each array axis (mm); ``axis`` the array axis it is cut along.
    """

    path: str
    shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]
    spacing: tuple[float, float, float]
    axis: int

    @property
    def depth(self) -> int:
        """Number of slices."""
        return self.shape[self.axis]

    @property
    def slice_shape(self) -> tuple[int, int]:
        """(rows, columns) of one slice."""
        rows, cols = (n for i, n in enumerate(self.shape) if i != self.axis)
        return rows, cols

    @property
    def slice_spacing(self) -> tuple[float, float]:
        """In-plane spacing (rows, columns) of one slice, mm."""
        rows, cols = (s for i, s in enumerate(self.spacing) if i != self.axis)
        return rows, cols

    @property
    def stacked_spacing(self) -> tuple[float, float, float]:
        """Spacing of the slices stacked along axis 0 (slice axis first), mm."""
        return (self.spacing[self.axis], *self.slice_spacing)

    @property
    def affine_array(self) -> np.ndarray:
        return np.array(self.affine, dtype=np.float64)

    def take(self, volume: np.ndarray, z: int) -> np.ndarray:
        """Slice ``z`` of a volume of this geometry (a 2-D view)."""
        return np.take(volume, z, axis=self.axis)

    def stack(self, slices: Sequence[np.ndarray]) -> np.ndarray:
        """The volume of this geometry from its slices in order (inverse of :meth:`take`)."""
        if len(slices) != self.depth:
            raise ValueError(f"{len(slices)} slices for a volume of depth {self.depth}")
        vol = np.stack(list(slices), axis=self.axis)
        if vol.shape[:3] != self.shape:
            raise ValueError(f"slices stack to {vol.shape}, the volume is {self.shape}")
        return vol

    def from_stacked(self, stacked: np.ndarray) -> np.ndarray:
        """A (depth, rows, columns[, ...]) array in this geometry's axis order."""
        return np.moveaxis(stacked, 0, self.axis)


def coarsest_axis(spacing: Sequence[float], shape: Sequence[int] | None = None) -> int:
    """The axis to cut along: a singleton axis if there is one (a 2-D image stored as a volume),
    else the coarsest spacing (the last of equal maxima)."""
    if shape is not None:
        ones = [i for i, n in enumerate(shape) if n == 1]
        if ones:
            return ones[-1]
    sp = np.asarray(spacing, dtype=np.float64)
    return int(len(sp) - 1 - np.argmax(sp[::-1]))


def _load(path: str | Path):
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        return nib.load(str(path))
    except (OSError, ValueError, EOFError, ImageFileError) as e:
        raise InputError(f"cannot read volume {path}: {e}") from None


def read_geometry(path: str | Path, axis: int | None = None) -> VolumeGeometry:
    """The geometry of a NIfTI file from its header (no voxel data is decoded).

    ``axis`` None cuts along :func:`coarsest_axis`; a 2-D file is treated as one slice."""
    img = _load(path)
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise InputError(f"volume {path} has shape {img.shape}, expected 3-D (one file per channel)")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    if axis is None:
        axis = coarsest_axis(zooms, shape)
    elif not 0 <= axis < 3:
        raise InputError(f"slice axis {axis} of {path}: expected 0, 1 or 2")
    aff = img.affine if img.affine is not None else np.eye(4)
    return VolumeGeometry(str(path), shape, tuple(tuple(float(v) for v in row) for row in aff), zooms, int(axis))


@functools.lru_cache(maxsize=CACHE_VOLUMES)
def _read_array(path: str, kind: str) -> np.ndarray:
    img = _load(path)
    try:
        if kind == "label":
            arr = np.asanyarray(img.dataobj)
            if arr.dtype.kind == "f":
                arr = np.rint(arr)
            arr = arr.astype(np.int64 if arr.dtype.kind in "fiu" and arr.dtype.itemsize > 2 else np.int16)
        else:
            arr = np.asarray(img.get_fdata(dtype=np.float32))
    except (OSError, ValueError, EOFError, MemoryError) as e:
        raise InputError(f"cannot read volume {path}: {e}") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise InputError(f"volume {path} has shape {arr.shape}, expected 3-D")
    arr.setflags(write=False)
    return arr


def read_image_volume(path: str | Path) -> np.ndarray:
    """Voxel values of a NIfTI image as float32 (scaling slope applied), read-only, cached."""
    return _read_array(str(path), "image")


def read_label_volume(path: str | Path) -> np.ndarray:
    """Integer labels of a NIfTI label file, read-only, cached."""
    return _read_array(str(path), "label")


@functools.lru_cache(maxsize=CACHE_VOLUMES)
def _window(path: str, kind: str) -> tuple[float, float]:
    v = read_image_volume(path)
    if not v.size:
        return 0.0, 1.0
    if kind == "minmax":
        return float(v.min()), float(v.max())
    lo, hi = np.percentile(v, PERCENTILES)
    return float(lo), float(hi)


Window = tuple[float, float] | str
"""An intensity window: fixed (lo, hi) in the file's units, or ``"percentile"`` / ``"minmax"``
of each volume."""


def scale_intensity(values: np.ndarray, path: str | Path, window: Window = "percentile") -> np.ndarray:
    """Values of (part of) the volume at ``path`` mapped to [0, 1] through ``window``, clipped."""
    lo, hi = _window(str(path), window) if isinstance(window, str) else window
    out = (np.asarray(values, dtype=np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))
    return np.clip(out, 0.0, 1.0)


def case_records(case: str, images: Sequence[str], label: str | None, part: str, axis: int | None = None,
                 group: str | None = None) -> tuple[list[Record], VolumeGeometry]:
    """One record per slice of a NIfTI case (``images``: one file per channel), and its geometry.

    Channels and the label must share the first channel's grid (shape and affine), else an
    InputError names the file."""
    geo = read_geometry(images[0], axis)
    for other in [*images[1:], *([label] if label else [])]:
        g = read_geometry(other, geo.axis)
        if not same_grid(geo, g):
            raise InputError(f"{other} has shape {g.shape} and an affine that differ from {images[0]} "
                             f"(shape {geo.shape})")
    records = [Record(id=f"{case}_z{z:03d}" if geo.depth > 1 else case, image=str(images[0]), mask=label, part=part,
                      key=z, volume=case, group=group, axis=geo.axis, extra_images=tuple(str(p) for p in images[1:]))
               for z in range(geo.depth)]
    return records, geo


def load_slice(record: Record, window: Window = "percentile", label_map: np.ndarray | None = None) -> Sample:
    """Slice ``record.key`` of a NIfTI case along ``record.axis``: channels scaled to [0, 1] per
    volume (float32, H × W × C), labels through ``label_map`` (a lookup table, stored value ->
    class id) when given."""
    axis, z = int(record.axis if record.axis is not None else 2), int(record.key or 0)
    chans = []
    for path in (record.image, *record.extra_images):
        vol = read_image_volume(path)
        if not 0 <= z < vol.shape[axis]:
            raise InputError(f"{path}: slice {z} outside the volume of shape {vol.shape}")
        chans.append(scale_intensity(np.take(vol, z, axis=axis), path, window))
    image = np.ascontiguousarray(np.stack(chans, axis=-1))
    if record.mask is None:
        return Sample(image=image, mask=np.zeros(image.shape[:2], np.int64))
    lab = read_label_volume(record.mask)
    if lab.shape[axis] <= z:
        raise InputError(f"label {record.mask} has shape {lab.shape}, image {record.image} has slice {z}")
    mask = np.take(lab, z, axis=axis).astype(np.int64)
    if label_map is not None:
        bad = (mask < 0) | (mask >= len(label_map))
        if bad.any():
            raise InputError(f"label {record.mask} has values outside 0..{len(label_map) - 1}")
        mask = label_map[mask]
    return Sample(image=image, mask=mask)


def same_grid(a: VolumeGeometry, b: VolumeGeometry, tol: float = 1e-3) -> bool:
    """Whether two files share shape and affine (to ``tol`` mm)."""
    return a.shape == b.shape and bool(np.allclose(a.affine_array, b.affine_array, atol=tol))


def write_volume(path: str | Path, data: np.ndarray, geometry: VolumeGeometry, dtype=np.uint8) -> Path:
    """Write ``data`` (the case's shape) as NIfTI with the case's affine. Returns the path."""
    import nibabel as nib

    arr = np.asarray(data)
    if arr.shape[:3] != geometry.shape:
        raise ValueError(f"data of shape {arr.shape} for a volume of shape {geometry.shape}")
    img = nib.Nifti1Image(arr.astype(dtype), geometry.affine_array)
    path = Path(path)
    nib.save(img, str(path))
    return path
