"""The zarr store of a segmentation run (xarray, zarr v3): create once, then fill regions.

Dimensions: ``split`` (one per data split), ``epoch`` (1..E), ``class`` (foreground classes),
``image`` (test images, or test volumes for 3-D data; the union over splits, NaN where an image
is not in a split's test set) and ``part`` (official test parts, for the GlaS object metrics).
Chunks are size 1 along ``split`` and ``epoch``, so each epoch row and each split's test block is
its own set of chunks. The run configuration, versions and command line are Dataset attrs.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from biorules.store import SEGMENT_TITLE

STATUS_PENDING, STATUS_TRAINING, STATUS_DONE = 0, 1, 2

EPOCH_VARS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "train_loss": (("split", "epoch"), "1", "mean training loss (CE + soft Dice) over the epoch"),
    "lr": (("split", "epoch"), "1", "learning rate at the end of the epoch"),
    "epoch_time": (("split", "epoch"), "s", "wall time of the training epoch"),
    "train_images_per_second": (("split", "epoch"), "1/s", "training throughput"),
    "train_dice": (("split", "epoch", "class"), "1", "Dice of thresholded training predictions, pooled over the epoch"),
    "val_dice": (("split", "epoch", "class"), "1", "mean validation Dice per image at original resolution"),
    "val_iou": (("split", "epoch", "class"), "1", "mean validation IoU per image at original resolution"),
}
TEST_VARS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "test_dice": (("split", "image", "class"), "1", "test Dice per image at original resolution"),
    "test_iou": (("split", "image", "class"), "1", "test IoU per image at original resolution"),
    "test_hd95": (("split", "image", "class"), "pixel", "test 95th-percentile Hausdorff distance (medpy-compatible)"),
}
OBJECT_VARS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "test_object_f1": (("split", "part"), "1", "GlaS object-level F1, pooled over the test part"),
    "test_object_dice": (("split", "part"), "1", "GlaS object-level Dice, pooled over the test part"),
    "test_object_hausdorff": (("split", "part"), "pixel", "GlaS object-level Hausdorff distance, pooled over the test part"),
}


def versions() -> dict[str, str]:
    import importlib.metadata

    import scipy
    import torch
    import zarr

    import biorules

    return {"python": platform.python_version(), "biorules": biorules.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "xarray": xr.__version__, "zarr": zarr.__version__,
            "scipy": scipy.__version__, "click": importlib.metadata.version("click"),
            "torch_threads": str(torch.get_num_threads())}


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
) -> xr.Dataset:
    """The empty (NaN) result Dataset of a run; ``parts`` None means no object metrics."""
    sizes = {"split": len(split_names), "epoch": epochs, "class": len(classes), "image": len(images),
             "part": len(parts or ())}
    coords = {
        "split": ("split", np.arange(len(split_names)), {"long_name": "split index"}),
        "split_name": ("split", np.array(split_names, dtype=object), {"long_name": "split name"}),
        "split_seed": ("split", np.array(split_seeds, dtype=np.int64), {"long_name": "permutation seed (-1: official)"}),
        "class": ("class", np.array(classes, dtype=object), {"long_name": "foreground class"}),
        "image": ("image", np.array(images, dtype=object), {"long_name": "test image (or volume) id"}),
        "image_part": ("image", np.array(image_parts, dtype=object), {"long_name": "official part of the image"}),
    }
    variables = dict(TEST_VARS)
    if epochs > 0:
        coords["epoch"] = ("epoch", np.arange(1, epochs + 1), {"long_name": "training epoch"})
        variables = dict(EPOCH_VARS) | variables
    if parts:
        coords["part"] = ("part", np.array(parts, dtype=object), {"long_name": "test part"})
        variables |= OBJECT_VARS
    data_vars = {}
    for name, (dims, units, long_name) in variables.items():
        data_vars[name] = (dims, np.full([sizes[d] for d in dims], np.nan), {"units": units, "long_name": long_name})
    data_vars["best_epoch"] = ("split", np.full(sizes["split"], -1, np.int64),
                               {"units": "1", "long_name": "epoch selected on validation (-1: none yet)"})
    data_vars["status"] = ("split", np.zeros(sizes["split"], np.int8),
                           {"long_name": "split status", "flag_values": [0, 1, 2],
                            "flag_meanings": "pending training done"})
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))


def _encoding(ds: xr.Dataset) -> dict[str, dict]:
    enc = {}
    for name, v in ds.data_vars.items():
        enc[name] = {"chunks": tuple(1 if d in ("split", "epoch") else ds.sizes[d] for d in v.dims)}
    return enc


def create(path: str | Path, ds: xr.Dataset) -> None:
    """Write the template (fails if ``path`` exists)."""
    ds.to_zarr(path, mode="w-", zarr_format=3, encoding=_encoding(ds), consolidated=False)


def write_region(path: str | Path, values: Mapping[str, np.ndarray], region: Mapping[str, slice], dims: Mapping[str, tuple[str, ...]]) -> None:
    """Write ``values`` (arrays shaped like the region) into their region of the store."""
    ds = xr.Dataset({k: (dims[k], np.asarray(v)) for k, v in values.items()})
    ds.to_zarr(path, region=dict(region), mode="r+", zarr_format=3, consolidated=False)


def all_dims(ds: xr.Dataset) -> dict[str, tuple[str, ...]]:
    return {k: tuple(v.dims) for k, v in ds.data_vars.items()}


def open_results(path: str | Path) -> xr.Dataset:
    """Open a run store lazily (``xarray.open_zarr``)."""
    return xr.open_zarr(path, zarr_format=3, consolidated=False)


def run_attrs(config: Mapping[str, object], splits_json: Sequence[str], command: Sequence[str] | None) -> dict[str, str]:
    return {
        "title": SEGMENT_TITLE,
        "config": json.dumps(dict(config), sort_keys=True),
        "splits": json.dumps([json.loads(s) for s in splits_json]),
        "versions": json.dumps(versions(), sort_keys=True),
        "command": " ".join(command if command is not None else sys.argv),
    }
