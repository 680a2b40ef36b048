"""Zarr stores of xarray results, one schema for every store (sweep, scan, train, segment runs).

A store is created once from a template (coords, attrs, NaN data, ``status`` = pending) with chunk
size 1 along every cell dimension, so one cell is one set of chunks and parallel writers never touch
the same chunk. It is written atomically (temp folder, then rename) with consolidated metadata and
a ``store_version`` attr. ``write_region`` writes a region with ``mode="r+"``, its ``status`` last:
a cell interrupted mid-write still reads as unfinished and is redone. ``finished_cells`` drives
resume. Region writes leave the consolidated metadata as it was, which stays right: it holds
metadata only (names, shapes, chunks, attrs), never data, so readers see the new values.

Groups: a data variable whose attrs name a ``store_group`` (:data:`GROUP_ATTR`; the weights of
:mod:`biorules.weights`) is written into that zarr group instead of the root, by :func:`save`,
:func:`create` and the region writers alike; the root keeps everything else. ``open_store(path)``
opens the root as before, ``open_store(path, group="weights")`` a group, and :func:`open_all`
both as one Dataset (what :func:`save` was given).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from biorules.errors import InputError

STORE_VERSION = 1
"""Schema version written into every store's attrs; older stores are refused with one line."""

STATUS = {"pending": 0, "done": 1, "diverged": 2, "failed": 3, "running": 4}
"""``status`` codes (CF flags) of every store: a cell is finished when done, diverged or failed;
``running`` marks one in progress (a segmentation split being trained)."""

FINISHED = ("done", "diverged", "failed")
"""The statuses a resumed run does not redo."""


SEGMENT_TITLE = "biorules segment run"
"""The ``title`` attr of segmentation stores (which recognises older ones without a version)."""

CHECKPOINT_MARKER = ".biorules-checkpoints"
"""The file that marks a checkpoint folder as written by this tool."""

_LEGACY_CHECKPOINT = re.compile(r"(split\d+_(last|best)\.pt|\.split\d+_(last|best)\.pt\.tmp\d+)")


def _root_attrs(path: Path) -> dict[str, Any] | None:
    """The root attrs of a zarr store at ``path`` (v3 ``zarr.json`` or v2 ``.zattrs``), or None."""
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        meta = path / name
        if meta.is_file():
            try:
                doc = json.loads(meta.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return None
            attrs = doc.get(key, {}) if key else doc
            return attrs if isinstance(attrs, dict) else None
    return None


def written_here(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a store or checkpoint folder this tool wrote (and may replace).

    A store carries ``store_version`` (or, for segmentation stores of older versions, the
    segment run ``title``) in its root attrs; a checkpoint folder carries
    :data:`CHECKPOINT_MARKER` or holds nothing but this tool's checkpoint files.
    """
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    attrs = _root_attrs(path)
    if attrs is not None:
        return "store_version" in attrs or attrs.get("title") == SEGMENT_TITLE
    if (path / CHECKPOINT_MARKER).is_file():
        return True
    names = [p.name for p in path.iterdir()]
    return bool(names) and all(p.is_file() and _LEGACY_CHECKPOINT.fullmatch(p.name) for p in path.iterdir())


def replace_written(path: str | os.PathLike, option: str = "--out") -> None:
    """Remove ``path`` for ``--overwrite``, but only when this tool wrote it (or it is empty).

    Anything else (a user's folder, a file) is refused with one line naming it and nothing is
    touched: ``--overwrite`` never deletes data this tool did not write.
    """
    path = Path(path)
    check_replaceable(path, option)
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    elif path.exists():
        shutil.rmtree(path)


def check_replaceable(path: str | os.PathLike, option: str = "--out") -> None:
    """Raise InputError unless ``path`` is absent, an empty folder, or written by this tool."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    if not written_here(path):
        kind = "folder" if path.is_dir() and not path.is_symlink() else "file"
        raise InputError(
            f"{option} {path} is a {kind} that biorules did not write; --overwrite replaces only "
            "its own stores and checkpoints, so move it away or choose another path"
        )


def mark_checkpoints(path: str | os.PathLike) -> Path:
    """Create the checkpoint folder ``path`` with its :data:`CHECKPOINT_MARKER`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CHECKPOINT_MARKER).write_text("checkpoints written by biorules segment\n")
    return path


def status_variable(
    dims: tuple[str, ...], shape: tuple[int, ...], long_name: str = "cell status"
) -> xr.Variable:
    """An all-pending ``status`` variable with the CF flag attrs of :data:`STATUS`."""
    return xr.Variable(
        dims,
        np.zeros(shape, dtype=np.int8),
        attrs={
            "long_name": long_name,
            "flag_values": list(STATUS.values()),
            "flag_meanings": " ".join(STATUS),
        },
    )


GROUP_ATTR = "store_group"
"""Attr of a data variable naming the zarr group it is stored in (absent: the root)."""


def split_groups(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
    """``ds`` as its root part and one Dataset per :data:`GROUP_ATTR` group (coords go where
    their variables go; a coord that only a group's variables use leaves the root)."""
    names: dict[str, list[str]] = {}
    for name, var in ds.data_vars.items():
        group = var.attrs.get(GROUP_ATTR)
        if group:
            names.setdefault(str(group), []).append(name)
    if not names:
        return ds, {}
    grouped = [n for ns in names.values() for n in ns]
    root = ds.drop_vars(grouped)
    kept = set(root[list(root.data_vars)].coords) if root.data_vars else set()
    root = root.drop_vars(list({c for ns in names.values() for c in ds[ns].coords} - kept))
    return root, {g: ds[ns].drop_attrs(deep=False) for g, ns in names.items()}


def _encoding(ds: xr.Dataset, cell_dims: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    enc = {}
    for name, var in ds.data_vars.items():
        enc[name] = {"chunks": tuple(1 if d in cell_dims else ds.sizes[d] for d in var.dims)}
    return enc


def _atomic_write(ds: xr.Dataset, path: Path, cell_dims: tuple[str, ...] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    root, groups = split_groups(ds)
    enc = (lambda part: {"encoding": _encoding(part, cell_dims)}) if cell_dims is not None else (lambda part: {})  # noqa: E731
    try:
        with warnings.catch_warnings():  # consolidated metadata is a zarr-v3 extension; we want it
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            root.to_zarr(tmp, mode="w", consolidated=not groups, **enc(root))
            if groups:
                import zarr

                for name, part in groups.items():
                    part.assign_attrs(store_version=STORE_VERSION).to_zarr(tmp, group=name, mode="w",
                                                                           consolidated=False, **enc(part))
                zarr.consolidate_metadata(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write a finished Dataset to a new store at ``path`` atomically (temp folder, then rename).

    An existing path is never overwritten: results already written are never lost.
    """
    path = Path(path)
    if path.exists():
        raise InputError(f"{path} already exists; choose another --out or remove it")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.assign_attrs(store_version=STORE_VERSION)
    _atomic_write(ds, path)
    return path


def create(path: str | os.PathLike, template: xr.Dataset, cell_dims: tuple[str, ...]) -> Path:
    """Write ``template`` (which holds a ``status`` variable) as a new store, atomically.

    Chunks are size 1 along ``cell_dims`` and whole along every other dim, so each cell's region
    is its own set of chunks. An existing path is refused, never overwritten.
    """
    path = Path(path)
    if path.exists():
        raise InputError(f"{path} already exists; choose another --out or remove it")
    path.parent.mkdir(parents=True, exist_ok=True)
    template = template.assign_attrs(store_version=STORE_VERSION, cell_dims=list(cell_dims))
    _atomic_write(template, path, cell_dims)
    return path


def _version_error(path: Path, attrs: Mapping[str, Any]) -> InputError:
    """The one-line refusal of a store that is not of the current schema version."""
    version = attrs.get("store_version")
    if version is None and attrs.get("title") == SEGMENT_TITLE:
        return InputError(
            f"{path} is a segment store from an older biorules (no store version, status codes "
            "pending/training/done); it cannot be resumed or read here, so use a new --out "
            "or --overwrite to replace it"
        )
    if version is None:
        return InputError(f"{path} is a zarr store that biorules did not write (no store_version attr)")
    return InputError(
        f"{path} was written by another biorules version (store version {version}, "
        f"this one reads {STORE_VERSION}); use a new --out"
    )


def open_store(path: str | os.PathLike, group: str | None = None) -> xr.Dataset:
    """Open a store lazily, checking it is one of ours and of the current schema version.

    The root attrs are read first, so a foreign or old store is refused (one InputError line)
    before xarray opens it, and warns about nothing. ``group`` opens that group (``"weights"``)
    instead of the root.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"no store at {path}")
    attrs = _root_attrs(path)
    if attrs is not None and attrs.get("store_version") != STORE_VERSION:
        raise _version_error(path, attrs)
    if group is not None and not _is_group(path / group):
        raise InputError(f"{path} has no group {group!r}")
    try:
        ds = xr.open_zarr(path, group=group)
    except Exception as e:  # not a zarr store, or unreadable
        raise InputError(f"{path} is not a readable zarr store ({type(e).__name__})") from None
    if ds.attrs.get("store_version") != STORE_VERSION:
        raise _version_error(path, ds.attrs)
    return ds


def _is_group(path: Path) -> bool:
    """Whether ``path`` is a zarr group (v3 ``zarr.json`` of node type group, or v2 ``.zgroup``)."""
    if (path / ".zgroup").is_file():
        return True
    try:
        return json.loads((path / "zarr.json").read_text()).get("node_type") == "group"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def store_groups(path: str | os.PathLike) -> list[str]:
    """Names of the groups below the root of the store at ``path``."""
    path = Path(path)
    return sorted(p.name for p in path.iterdir() if p.is_dir() and _is_group(p)) if path.is_dir() else []


def open_all(path: str | os.PathLike) -> xr.Dataset:
    """The root of a store with every group's variables, lazily: the Dataset :func:`save` was given."""
    ds = open_store(path)
    for group in store_groups(path):
        part = open_store(path, group)
        ds = ds.assign({name: part[name] for name in part.data_vars})
    return ds


def open_or_create(
    path: str | os.PathLike, template: xr.Dataset, cell_dims: tuple[str, ...], config_attr: str = "config"
) -> xr.Dataset:
    """Resume a store made by the same configuration, or create it; a different run is refused."""
    path = Path(path)
    if path.exists():
        ds = open_store(path)
        if ds.attrs.get(config_attr) != template.attrs.get(config_attr):
            raise InputError(f"{path} holds a run with a different configuration; choose another --out")
        return ds
    create(path, template, cell_dims)
    return open_store(path)


def finished_cells(path: str | os.PathLike) -> np.ndarray:
    """Boolean array over the cell dims: True where a cell is done, diverged or failed."""
    ds = open_store(path)
    return np.isin(ds["status"].values, [STATUS[s] for s in FINISHED])


def write_region(path: str | os.PathLike, data: xr.Dataset, region: Mapping[str, slice]) -> None:
    """Write ``data`` (variables shaped like the region) into ``region`` of the store at ``path``.

    The one region writer of every store. Coords are dropped (a region write carries data only);
    ``status`` is written after everything else, so an interrupted write leaves it unfinished.
    Each of the two writes uses the region's dims it has (a ``split`` status may go with an
    epoch row). The consolidated metadata is left alone: it holds no data, so it stays right.
    """
    data, groups = split_groups(data.drop_vars(list(data.coords)))
    for group, part in groups.items():  # before the root, so status is still written last
        part.to_zarr(path, group=group, region={d: s for d, s in region.items() if d in part.dims}, mode="r+",
                     consolidated=False)
    data_vars = [v for v in data.data_vars if v != "status"]
    for names in (data_vars, ["status"] if "status" in data else []):
        if names:
            part = data[names]
            part.to_zarr(path, region={d: s for d, s in region.items() if d in part.dims}, mode="r+",
                         consolidated=False)


def write_cell(path: str | os.PathLike, cell: xr.Dataset, region: Mapping[str, int]) -> None:
    """Write one cell (its variables indexed by ``region``, e.g. ``{"gain": 2, "seed": 0}``).

    ``cell`` holds the cell's variables without the cell dims (they are added here), then
    :func:`write_region` writes it, ``status`` last.
    """
    slices = {d: slice(i, i + 1) for d, i in region.items()}
    write_region(path, cell.expand_dims(list(region)), slices)
