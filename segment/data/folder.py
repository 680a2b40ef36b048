"""The user's own data: ``images/`` + ``masks/`` with matching names (docs/datasets.md).

``images/NAME.ext`` pairs with ``masks/NAME.ext'`` by name without ending (the endings may
differ); any format Pillow opens, and NIfTI (``.nii``, ``.nii.gz``) volumes, which are cut into
slices (``segment.data.volume``). Optional files next to the two folders:

* ``classes.json``: the classes in order, background first, as ``{"name": value, ...}`` (or under
  ``"labels"``), a value being the grey level or palette index in the masks or an ``[R, G, B]``
  colour; ``"slice_axis"`` picks the axis volumes are cut along (default: coarsest spacing).
* ``groups.csv``: ``NAME,GROUP`` lines (patient, video); folds never split a group.

Without ``classes.json`` the classes come from the masks' values: {0, 1} or {0, 255} is binary
(JPEG masks too, thresholded at 128), values 0..K−1 are K classes, any other set of values is
numbered in increasing order. The input has 3 channels if the first image is in colour, else 1.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from biorules.errors import InputError
from segment.data.base import (
    GRAY_MEAN,
    GRAY_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    Record,
    Sample,
    Scan,
    check_same_size,
    read_image,
    read_label_array,
    read_pil,
    require_dir,
)
from segment.data.volume import case_name, case_records, is_nifti, load_slice

LAYOUT = "images/NAME.ext + masks/NAME.ext [+ classes.json, groups.csv]"
INFO = DatasetInfo(
    name="folder", num_classes=2, in_channels=3, class_names=("foreground",), mean=IMAGENET_MEAN,
    std=IMAGENET_STD, official_split=False, layout=LAYOUT,
)
#: endings of formats Pillow opens that hold images (Pillow's list without documents, videos, stubs)
IMAGE_ENDINGS = (".apng", ".blp", ".bmp", ".dcx", ".dds", ".dib", ".gif", ".icns", ".ico", ".im", ".j2c", ".j2k",
                 ".jfif", ".jp2", ".jpc", ".jpe", ".jpeg", ".jpf", ".jpg", ".jpx", ".msp", ".pbm", ".pcx", ".pfm",
                 ".pgm", ".png", ".pnm", ".ppm", ".psd", ".qoi", ".ras", ".sgi", ".tga", ".tif", ".tiff", ".webp",
                 ".xbm", ".xpm", ".avif")
LOSSY = (".jpg", ".jpeg", ".jpe", ".jfif")
Value = int | tuple[int, int, int]


def readable(path: Path) -> bool:
    """Whether ``path`` is an image file this reader takes (Pillow format or NIfTI)."""
    return path.is_file() and not path.name.startswith(".") and (
        is_nifti(path) or path.suffix.lower() in IMAGE_ENDINGS)


def list_images(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """``name -> file`` of the readable files in ``folder``, and a problem for each name used twice."""
    found: dict[str, Path] = {}
    problems = []
    for p in sorted(folder.iterdir()):
        if not readable(p):
            continue
        name = case_name(p)
        if name in found:
            problems.append(f"{p} and {found[name]} have the same name; one is ignored")
            continue
        found[name] = p
    return found, problems


def read_groups(path: Path) -> dict[str, str]:
    """``name -> group`` from a ``groups.csv`` (``NAME,GROUP`` rows, an optional header); {} if absent."""
    if not path.is_file():
        return {}
    groups = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for k, row in enumerate(csv.reader(f)):
            if not row or not row[0].strip():
                continue
            if len(row) < 2 or not row[1].strip():
                raise InputError(f"{path} line {k + 1}: expected NAME,GROUP")
            if k == 0 and row[0].strip().lower() in ("name", "image", "frame", "id"):
                continue
            groups[case_name(row[0].strip())] = row[1].strip()
    return groups


def _value(v, path: Path, name: str) -> Value:
    if isinstance(v, bool):
        raise InputError(f"{path}: class {name!r} has value {v!r}, expected an integer or [R, G, B]")
    if isinstance(v, int) and v >= 0:
        return v
    if isinstance(v, list) and len(v) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in v):
        return (v[0], v[1], v[2])
    raise InputError(f"{path}: class {name!r} has value {v!r}, expected an integer >= 0 or [R, G, B]")


def read_classes(path: Path) -> tuple[tuple[str, ...], tuple[Value, ...], int | None]:
    """(names, mask values, slice axis) from ``classes.json``; InputError naming the file if malformed."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected an object of class names and values")
    axis = doc.get("slice_axis")
    labels = doc.get("labels", {k: v for k, v in doc.items() if k != "slice_axis"})
    if not isinstance(labels, dict) or len(labels) < 2:
        raise InputError(f"{path}: expected at least two classes (background first), e.g. "
                         '{"background": 0, "lesion": 255}')
    names = tuple(str(k) for k in labels)
    values = tuple(_value(v, path, k) for k, v in labels.items())
    if values[0] not in (0, (0, 0, 0)):
        raise InputError(f"{path}: the first class ({names[0]!r}) is the background and must have value 0")
    if len(set(values)) != len(values):
        raise InputError(f"{path}: two classes have the same value")
    if len({type(v) for v in values}) > 1:
        raise InputError(f"{path}: class values mix grey levels and [R, G, B] colours")
    if axis is not None and axis not in (0, 1, 2):
        raise InputError(f"{path}: slice_axis must be 0, 1 or 2, got {axis!r}")
    return names, values, axis


def _mask_values(path: Path) -> np.ndarray:
    if is_nifti(path):
        from segment.data.volume import read_label_volume

        return np.unique(read_label_volume(path))
    return np.unique(read_label_array(path))


def infer_classes(masks: list[Path]) -> tuple[tuple[str, ...], tuple[Value, ...]]:
    """Class names and values from the masks themselves (module docstring)."""
    seen: set[int] = set()
    lossy = bool(masks) and all(p.suffix.lower() in LOSSY for p in masks)
    for p in masks:
        seen |= set(int(v) for v in _mask_values(p))
    if lossy or seen <= {0, 1} or seen <= {0, 255}:
        return ("background", "foreground"), (0, 255 if seen - {0, 1} or lossy else 1)
    values = sorted(seen | {0})
    if values == list(range(len(values))):
        return ("background", *(f"class_{v}" for v in values[1:])), tuple(values)
    return ("background", *(f"value_{v}" for v in values[1:])), tuple(values)


def scan(root: Path) -> Scan:
    base = require_dir(root, "--data-dir")
    for sub in ("images", "masks"):
        if not (base / sub).is_dir():
            raise InputError(f"--data-dir {root}: no {sub}/ folder (expected {LAYOUT})")
    images, problems = list_images(base / "images")
    masks, more = list_images(base / "masks")
    problems += more
    problems += [f"image {images[k]} has no mask in {base / 'masks'}" for k in sorted(set(images) - set(masks))]
    problems += [f"mask {masks[k]} has no image in {base / 'images'}" for k in sorted(set(masks) - set(images))]
    names = sorted(set(images) & set(masks))
    if not names:
        raise InputError(f"--data-dir {root}: no image/mask pairs with matching names (expected {LAYOUT})")
    axis = None
    if (base / "classes.json").is_file():
        class_names, values, axis = read_classes(base / "classes.json")
    else:
        class_names, values = infer_classes([masks[n] for n in names])
    groups = read_groups(base / "groups.csv")
    problems += [f"{base / 'groups.csv'} names {k!r}, which has no image/mask pair" for k in sorted(set(groups) - set(names))]
    first = images[names[0]]
    channels = 1 if is_nifti(first) else (1 if read_pil(first).mode in ("1", "L", "LA", "I", "I;16", "F") else 3)
    identity = not isinstance(values[0], tuple) and values == tuple(range(len(values)))
    info = DatasetInfo(
        name="folder", num_classes=len(values), in_channels=channels, class_names=class_names[1:],
        mean=IMAGENET_MEAN if channels == 3 else GRAY_MEAN, std=IMAGENET_STD if channels == 3 else GRAY_STD,
        official_split=False, volumetric=any(is_nifti(images[n]) for n in names), layout=LAYOUT,
        class_values=() if identity else values,
    )
    records, geometry = [], {}
    for n in names:
        if is_nifti(images[n]) != is_nifti(masks[n]):
            problems.append(f"{images[n]} and {masks[n]}: one is NIfTI, the other is not")
            continue
        if is_nifti(images[n]):
            try:
                recs, geo = case_records(n, [str(images[n])], str(masks[n]), "all", axis, groups.get(n))
            except InputError as e:
                problems.append(str(e))
                continue
            records += [_with_values(r, info) for r in recs]
            geometry[n] = geo
        else:
            records.append(_with_values(Record(id=n, image=str(images[n]), mask=str(masks[n]), part="all",
                                               group=groups.get(n)), info))
    return Scan(records, problems, info=info, geometry=geometry)


def _with_values(record: Record, info: DatasetInfo) -> Record:
    """The record carrying its class values and channel count (``load`` sees only the record)."""
    meta = (("channels", str(info.in_channels)), ("values", json.dumps(list(info.class_values))))
    return replace(record, meta=meta)


def _lookup(values: list, stored: np.ndarray, path: str, rgb: bool) -> np.ndarray:
    """Class ids of stored mask values (grey level or packed RGB); InputError for unlisted values."""
    keys = np.array([(v[0] << 16) | (v[1] << 8) | v[2] for v in values] if rgb else values, dtype=np.int64)
    order = np.argsort(keys)
    pos = np.searchsorted(keys[order], stored.ravel()).clip(0, len(keys) - 1)
    hit = keys[order][pos] == stored.ravel()
    if not hit.all():
        bad = np.unique(stored.ravel()[~hit])
        show = [f"#{int(b):06x}" if rgb else str(int(b)) for b in bad[:6]]
        raise InputError(f"mask {path} has values {{{', '.join(show)}{', ...' if bad.size > 6 else ''}}} "
                         "that are not a class (classes.json lists the values)")
    return order[pos].reshape(stored.shape).astype(np.int64)


def load(record: Record) -> Sample:
    meta = dict(record.meta)
    values = [tuple(v) if isinstance(v, list) else v for v in json.loads(meta.get("values", "[]"))]
    if record.volume is not None:
        s = load_slice(record)
        if values:
            s.mask = _lookup(values, s.mask, str(record.mask), rgb=False)
        return s
    image = read_image(record.image, int(meta.get("channels", "3")))
    assert record.mask is not None
    rgb = bool(values) and isinstance(values[0], tuple)
    if rgb:
        a = np.array(read_pil(record.mask).convert("RGB")).astype(np.int64)
        mask = _lookup(values, (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2], record.mask, rgb=True)
    else:
        stored = read_label_array(record.mask)
        if Path(record.mask).suffix.lower() in LOSSY and len(values) == 2:
            mask = (stored >= 128).astype(np.int64)
        elif values:
            mask = _lookup(values, stored, record.mask, rgb=False)
        else:
            mask = stored
    check_same_size(image, mask, record.image, record.mask)
    return Sample(image=image, mask=mask)
