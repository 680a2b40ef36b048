"""The zarr store of a segmentation run, a :mod:`biorules.store` store: create once, fill regions.

Dimensions: the split dimension (one entry per data split: ``split``, or ``fold`` in a
cross-validation run, see :func:`split_dim`), ``epoch`` (1..E), ``class`` (foreground classes),
``image`` (test images, or test volumes for 3-D data; the union over splits, NaN where an image
is not in a split's test set) and ``part`` (official test parts, for the GlaS object metrics).
Along ``split`` the coordinate is the split index 0..S-1; along ``fold`` it is the fold number
(0..K-1, or the one fold k of ``--fold k``); ``split_name`` and ``split_seed`` are coordinates
along either. Chunks are size 1 along the split dimension and ``epoch`` (the cell dims), so each
epoch row and each split's test block is its own set of chunks. A split's ``status`` uses the
shared codes of :data:`biorules.store.STATUS` (pending, running, done, failed). The run
configuration and the shared provenance attrs (:func:`biorules.provenance.provenance_attrs`) are
Dataset attrs. Creation, region writes and opening (with its version check) are those of
:mod:`biorules.store`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from biorules import store
from biorules.errors import InputError
from biorules.provenance import provenance_attrs
from biorules.store import SEGMENT_TITLE

SPLIT, FOLD = "split", "fold"
"""The names of the split dimension: data splits, or the folds of a cross-validation run."""

CELL_DIMS = (SPLIT, "epoch")
"""The dims along which chunks are size 1 (one writer per epoch row and per split's test block);
in a cross-validation run ``fold`` takes the place of ``split`` (:func:`split_dim`)."""

EPOCH_VARS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "train_loss": (("split", "epoch"), "1", "mean training loss (CE + soft Dice) over the epoch"),
    "lr": (("split", "epoch"), "1", "learning rate at the end of the epoch"),
    "epoch_time": (("split", "epoch"), "s", "wall time of the training epoch"),
    "train_images_per_second": (("split", "epoch"), "1/s", "training throughput"),
    "train_dice": (("split", "epoch", "class"), "1", "Dice of thresholded training predictions, pooled over the epoch"),
    "val_time": (("split", "epoch"), "s", "wall time of the epoch's validation"),
    "val_dice": (("split", "epoch", "class"), "1", "mean validation Dice per image at original resolution"),
    "val_iou": (("split", "epoch", "class"), "1", "mean validation IoU per image at original resolution"),
}
TEST_VARS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "test_dice": (("split", "image", "class"), "1", "test Dice per image at original resolution"),
    "test_iou": (("split", "image", "class"), "1", "test IoU per image at original resolution"),
    "test_hd95": (("split", "image", "class"), "pixel", "test 95th-percentile Hausdorff distance (medpy-compatible)"),
}
SPLIT_VARS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "compile_time": (("split",), "s", "wall time of the step's warm-up: kernel compilation, autotuning, graph capture"),
    "test_time": (("split",), "s", "wall time of the split's test evaluation"),
}
OBJECT_VARS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "test_object_f1": (("split", "part"), "1", "GlaS object-level F1, pooled over the test part"),
    "test_object_dice": (("split", "part"), "1", "GlaS object-level Dice, pooled over the test part"),
    "test_object_hausdorff": (("split", "part"), "pixel", "GlaS object-level Hausdorff distance, pooled over the test part"),
}


def split_dim(run: int | xr.Dataset | Mapping[str, tuple[str, ...]]) -> str:
    """The name of a run's split dimension: ``fold`` for cross-validation, ``split`` otherwise.

    ``run`` is the run's ``--folds`` K (0: no cross-validation), a Dataset of the run (its
    template or opened store) or its variables' dims (:func:`all_dims`). Every region write and
    every reader of a store takes the dimension's name from here."""
    if isinstance(run, xr.Dataset):
        return FOLD if FOLD in run.dims else SPLIT
    if isinstance(run, Mapping):
        return FOLD if FOLD in run.get("status", ()) else SPLIT
    return FOLD if run else SPLIT


def template(
    *,
    split_names: Sequence[str],
    split_seeds: Sequence[int],
    epochs: int,
    classes: Sequence[str],
    images: Sequence[str],
    image_parts: Sequence[str],
    parts: Sequence[str] | None,
    attrs: Mapping[str, object],
    split_folds: Sequence[int] | None = None,
    hd95_units: str = "pixel",
) -> xr.Dataset:
    """The empty (NaN) result Dataset of a run, all splits pending; ``parts`` None means no object
    metrics. Its ``title`` is :data:`~biorules.store.SEGMENT_TITLE` unless ``attrs`` says otherwise.
    ``split_folds`` (the fold number of each split, all >= 0 in a cross-validation run) makes the
    split dimension ``fold``, indexed by those numbers (:func:`split_dim`); ``hd95_units`` is
    ``mm`` for NIfTI volumes."""
    cv = split_folds is not None and len(split_folds) > 0 and all(f >= 0 for f in split_folds)
    dim = split_dim(int(cv))
    index = ((np.array(split_folds, dtype=np.int64), {"long_name": "cross-validation fold"}) if cv
             else (np.arange(len(split_names)), {"long_name": "split index"}))
    sizes = {dim: len(split_names), "epoch": epochs, "class": len(classes), "image": len(images),
             "part": len(parts or ())}
    coords = {
        dim: (dim, *index),
        "split_name": (dim, np.array(split_names, dtype=object), {"long_name": "split name"}),
        "split_seed": (dim, np.array(split_seeds, dtype=np.int64), {"long_name": "permutation seed (-1: official)"}),
        "class": ("class", np.array(classes, dtype=object), {"long_name": "foreground class"}),
        "image": ("image", np.array(images, dtype=object), {"long_name": "test image (or volume) id"}),
        "image_part": ("image", np.array(image_parts, dtype=object), {"long_name": "official part of the image"}),
    }
    variables = dict(TEST_VARS)
    if epochs > 0:
        coords["epoch"] = ("epoch", np.arange(1, epochs + 1), {"long_name": "training epoch"})
        variables = dict(EPOCH_VARS) | variables | SPLIT_VARS
    if parts:
        coords["part"] = ("part", np.array(parts, dtype=object), {"long_name": "test part"})
        variables |= OBJECT_VARS
    data_vars = {}
    for name, (dims, units, long_name) in variables.items():
        dims = tuple(dim if d == SPLIT else d for d in dims)
        if name == "test_hd95":
            units = hd95_units
        data_vars[name] = (dims, np.full([sizes[d] for d in dims], np.nan), {"units": units, "long_name": long_name})
    data_vars["best_epoch"] = (dim, np.full(sizes[dim], -1, np.int64),
                               {"units": "1", "long_name": "epoch selected on validation (-1: none yet)"})
    data_vars["status"] = store.status_variable((dim,), (sizes[dim],), long_name="split status")
    return xr.Dataset(data_vars, coords=coords, attrs={"title": SEGMENT_TITLE, **attrs})


def create(path: str | Path, ds: xr.Dataset) -> Path:
    """Write the template as a new store (:func:`biorules.store.create`; fails if ``path`` exists),
    chunked by its own split dimension."""
    return store.create(path, ds, (split_dim(ds), "epoch"))


def write_region(path: str | Path, values: Mapping[str, np.ndarray], region: Mapping[str, slice],
                 dims: Mapping[str, tuple[str, ...]]) -> None:
    """Write ``values`` (arrays shaped like the region, dims from ``dims``) into their region of
    the store, ``status`` last (:func:`biorules.store.write_region`)."""
    store.write_region(path, xr.Dataset({k: (dims[k], np.asarray(v)) for k, v in values.items()}), region)


def all_dims(ds: xr.Dataset) -> dict[str, tuple[str, ...]]:
    """The dims of each data variable, for :func:`write_region`."""
    return {k: tuple(v.dims) for k, v in ds.data_vars.items()}


def open_results(path: str | Path) -> xr.Dataset:
    """Open a run store lazily (:func:`biorules.store.open_store`: version check), refusing with
    one line a store that is not a segmentation run or predates the shared store schema."""
    ds = store.open_store(path)
    if ds.attrs.get("title") != SEGMENT_TITLE:
        raise InputError(f"{path} is a biorules store but not a segment run ({ds.attrs.get('title', 'no title')})")
    return ds


def run_attrs(config: Mapping[str, object], splits_json: Sequence[str], command: Sequence[str] | None,
              device: object | None = None) -> dict[str, str]:
    """A run's attrs: title, configuration, splits and the shared provenance attrs."""
    return {
        "title": SEGMENT_TITLE,
        "config": json.dumps(dict(config), sort_keys=True),
        "splits": json.dumps([json.loads(s) for s in splits_json]),
        **provenance_attrs(command, device),
    }
