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

Every chunk is on disk, those equal to the fill value too, so a store verifies itself:
:func:`open_store` checks (:func:`verify_store`) each array's metadata against the consolidated
copy, that every chunk exists and decodes, and that every status is a code of :data:`STATUS`, and
refuses a damaged store with one line naming the chunk and its cell; :func:`repair_store` marks
the damaged cells pending so the command that made the store recomputes them.

Outputs: :func:`prepare_out` is the one rule for an existing ``--out`` (resume a store this tool
wrote with the same configuration, replace it with ``--overwrite``, refuse anything else with a
hint), applied before any work; :func:`check_writable` finds an output that cannot be written
before the run; :func:`writer_lock` refuses a second writer of a store at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from biorules.errors import InputError

STORE_VERSION = 2
"""Schema version written into every store's attrs; older stores are refused with one line.
2: every chunk is on disk, those equal to the fill value too, so a missing chunk is damage."""

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


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _move_into_place(tmp: Path, path: Path, replace: bool) -> None:
    """Rename ``tmp`` to ``path``; with ``replace`` an existing store this tool wrote is swapped out.

    A folder that appeared meanwhile (another process writing the same path) is refused with one
    line instead of a rename error.
    """
    old = None
    if replace and path.exists() and not _empty_dir(path):
        check_replaceable(path)
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError as e:
        if old is not None:
            os.replace(old, path)
        if path.exists():
            raise InputError(f"{path} was created by another process meanwhile; choose another --out") from None
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _atomic_write(ds: xr.Dataset, path: Path, cell_dims: tuple[str, ...] | None = None,
                  replace: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    root, groups = split_groups(ds)
    enc = (lambda part: {"encoding": _encoding(part, cell_dims)}) if cell_dims is not None else (lambda part: {})  # noqa: E731
    try:
        with warnings.catch_warnings():  # consolidated metadata is a zarr-v3 extension; we want it
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            root.to_zarr(tmp, mode="w", consolidated=not groups, write_empty_chunks=True, **enc(root))
            if groups:
                import zarr

                for name, part in groups.items():
                    part.assign_attrs(store_version=STORE_VERSION).to_zarr(
                        tmp, group=name, mode="w", consolidated=False, write_empty_chunks=True, **enc(part))
                zarr.consolidate_metadata(str(tmp))
        _move_into_place(tmp, path, replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save(ds: xr.Dataset, path: str | os.PathLike, *, replace: bool = False) -> Path:
    """Write a finished Dataset to a new store at ``path`` atomically (temp folder, then rename).

    An existing path (other than an empty folder) is never overwritten, unless ``replace`` and it
    is a store this tool wrote (``--overwrite``): then the new store takes its place in one rename.
    """
    path = Path(path)
    if path.exists() and not _empty_dir(path):
        if not replace:
            raise InputError(f"{path} already exists; choose another --out or remove it")
        check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.assign_attrs(store_version=STORE_VERSION)
    _atomic_write(ds, path, replace=replace)
    return path


def create(path: str | os.PathLike, template: xr.Dataset, cell_dims: tuple[str, ...]) -> Path:
    """Write ``template`` (which holds a ``status`` variable) as a new store, atomically.

    Chunks are size 1 along ``cell_dims`` and whole along every other dim, so each cell's region
    is its own set of chunks. An existing path is refused, never overwritten.
    """
    path = Path(path)
    if path.exists() and not _empty_dir(path):
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


def open_store(path: str | os.PathLike, group: str | None = None, *, verify: bool = True) -> xr.Dataset:
    """Open a store lazily, checking it is one of ours, of the current schema version, and whole.

    The root attrs are read first, so a foreign or old store is refused (one InputError line)
    before xarray opens it, and warns about nothing. ``group`` opens that group (``"weights"``)
    instead of the root. With ``verify`` (the root only) the store is checked by
    :func:`verify_store` (metadata, every chunk on disk, small arrays decoded, status codes) and a
    damaged one is refused with one line naming the damage (:class:`DamagedStoreError`).
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
    except Exception:  # not a zarr store, or unreadable
        raise InputError(f"{path} is not a readable zarr store") from None
    if ds.attrs.get("store_version") != STORE_VERSION:
        raise _version_error(path, ds.attrs)
    if verify and group is None:
        damage = verify_store(path, decode_limit=DECODE_ON_OPEN)
        if damage:
            raise DamagedStoreError(path, damage)
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
    if path.exists() and not _empty_dir(path):
        ds = open_store(path)
        if ds.attrs.get(config_attr) != template.attrs.get(config_attr):
            diff = config_diff(ds.attrs.get(config_attr), template.attrs.get(config_attr))
            raise InputError(f"{path} holds a run with a different configuration ({diff}); repeat its options "
                             "to resume it, pass --overwrite to replace it, or choose another --out")
        return ds
    create(path, template, cell_dims)
    return open_store(path, verify=False)


def finished_cells(path: str | os.PathLike) -> np.ndarray:
    """Boolean array over the cell dims: True where a cell is done, diverged or failed."""
    ds = open_store(path, verify=False)
    return np.isin(ds["status"].values, [STATUS[s] for s in FINISHED])


def status_counts(status: np.ndarray) -> dict[str, int]:
    """How many cells ``status`` holds, and how many are done, diverged, failed and pending."""
    status = np.asarray(status)
    return {"cells": int(status.size),
            **{k: int((status == STATUS[k]).sum()) for k in ("done", "diverged", "failed", "pending")}}


def write_region(path: str | os.PathLike, data: xr.Dataset, region: Mapping[str, slice]) -> None:
    """Write ``data`` (variables shaped like the region) into ``region`` of the store at ``path``.

    The one region writer of every store. Coords are dropped (a region write carries data only);
    ``status`` is written after everything else, so an interrupted write leaves it unfinished.
    Each of the two writes uses the region's dims it has (a ``split`` status may go with an
    epoch row). The consolidated metadata is left alone: it holds no data, so it stays right.
    """
    data = data.drop_vars(list(data.coords))
    for group in store_groups(path):  # variables that live in a group go there even if their attrs were lost
        names = [n for n in data.data_vars if GROUP_ATTR not in data[n].attrs and (Path(path) / group / n).is_dir()
                 and not (Path(path) / n).is_dir()]
        for n in names:
            data[n].attrs[GROUP_ATTR] = group
    data, groups = split_groups(data)
    for group, part in groups.items():  # before the root, so status is still written last
        part.to_zarr(path, group=group, region={d: s for d, s in region.items() if d in part.dims}, mode="r+",
                     consolidated=False, write_empty_chunks=True)
    data_vars = [v for v in data.data_vars if v != "status"]
    for names in (data_vars, ["status"] if "status" in data else []):
        if names:
            part = data[names]
            part.to_zarr(path, region={d: s for d, s in region.items() if d in part.dims}, mode="r+",
                         consolidated=False, write_empty_chunks=True)


def write_cell(path: str | os.PathLike, cell: xr.Dataset, region: Mapping[str, int]) -> None:
    """Write one cell (its variables indexed by ``region``, e.g. ``{"gain": 2, "seed": 0}``).

    ``cell`` holds the cell's variables without the cell dims (they are added here), then
    :func:`write_region` writes it, ``status`` last.
    """
    slices = {d: slice(i, i + 1) for d, i in region.items()}
    write_region(path, cell.expand_dims(list(region)), slices)


# --------------------------------------------------------------------------------- outputs


def config_diff(old: object, new: object, limit: int = 6) -> str:
    """The options two JSON configurations disagree on, as ``a, b.c`` (``unknown`` if unreadable)."""
    def load(text: object) -> Any:
        try:
            return json.loads(text) if isinstance(text, str) else None
        except json.JSONDecodeError:
            return None

    def walk(a: Any, b: Any, prefix: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [n for k in sorted(set(a) | set(b)) for n in walk(a.get(k), b.get(k), f"{prefix}{k}.")]
        return [] if a == b else [prefix.rstrip(".") or "config"]

    a, b = load(old), load(new)
    if a is None or b is None:
        return "options unknown"
    names = walk(a, b, "")
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_writable(path: str | os.PathLike, option: str = "--out") -> None:
    """Raise InputError unless ``path`` can be written: it is absent below a writable folder (no
    file on the way), or it exists and is writable. Nothing is created."""
    path = Path(path)
    if path.exists():
        target = path if path.is_dir() else path.parent
        if not os.access(target, os.W_OK | os.X_OK):
            raise InputError(f"{option} {path}: no permission to write there")
        return
    above = path.absolute().parent
    while not above.exists() and above != above.parent:
        if above.is_symlink():
            raise InputError(f"{option} {path}: {above} is a broken link")
        above = above.parent
    if not above.is_dir():
        raise InputError(f"{option} {path}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: no permission to write in {above}")


def prepare_out(path: str | os.PathLike, config: str | None = None, *, overwrite: bool = False,
                option: str = "--out", config_attr: str = "config") -> str:
    """The one rule for the output store of every command, applied before any work; nothing is written.

    Returns ``"new"`` (``path`` is absent or an empty folder; it can be written), ``"resume"`` (a
    store this tool wrote, whole, with the same ``config``; or any of its stores when ``config``
    is None) or ``"replace"`` (``overwrite`` and a store this tool wrote: the caller replaces it).
    Anything else is an InputError naming ``option`` with a hint: a folder or file this tool did
    not write (even with ``overwrite``), a store of another version or configuration (repeat
    its options, pass ``--overwrite`` or choose another path), a damaged store
    (:func:`repair_store`).
    """
    path = Path(path)
    check_writable(path, option)
    if not path.exists() or _empty_dir(path):
        return "new"
    attrs = _root_attrs(path) if path.is_dir() else None
    if attrs is None or not written_here(path):
        kind = "folder" if path.is_dir() else "file"
        raise InputError(f"{option} {path} is a {kind} that biorules did not write; choose another {option}"
                         + (" (--overwrite replaces only biorules' own stores)" if overwrite else ""))
    if overwrite:
        return "replace"
    if attrs.get("store_version") != STORE_VERSION:
        raise InputError(f"{_version_error(path, attrs)}; or pass --overwrite to replace it")
    if config is not None and attrs.get(config_attr) != config:
        raise InputError(f"{option} {path} holds a run with other options ({config_diff(attrs.get(config_attr), config)}); "
                         f"repeat them to resume it, pass --overwrite to replace it, or choose another {option}")
    damage = verify_store(path, decode_limit=DECODE_ON_OPEN)
    if damage:
        raise DamagedStoreError(path, damage)
    return "resume"


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the store ``path``: in the temp folder, named by the store's absolute path, so
    taking it writes nothing next to the store (and works before its folder exists)."""
    import hashlib
    import tempfile

    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:24]
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"biorules-locks-{user}" / f"{key}.lock"


@contextlib.contextmanager
def writer_lock(path: str | os.PathLike, option: str = "--out") -> Iterator[None]:
    """Hold the one writer's lock of the store ``path`` (an OS lock on :func:`lock_path`).

    A second writer on this machine is refused at once with one line naming the process that
    holds it. The OS drops the lock when its process ends, however it ends, so a killed run never
    blocks the next; the file is removed on a normal exit.
    """
    import fcntl

    path = Path(path)
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 32).decode(errors="replace").strip()
            finally:
                os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise InputError(f"{option} {path} is being written by another biorules process{who}; wait for it "
                             f"to end or choose another {option}") from None
        try:  # the file may have been removed (and re-created) by the holder between open and lock
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


# --------------------------------------------------------------------------------- verification


DECODE_ON_OPEN = 64 * 2**20
"""On open, arrays holding up to this many bytes on disk are decoded in full; larger ones (the
weights of a big sweep) are only checked for presence, and decoded by ``biorules verify``."""


@dataclass(frozen=True)
class Damage:
    """One problem :func:`verify_store` found."""

    text: str
    """One line naming the variable, the chunk and the cell it belongs to."""
    kind: str = "root"
    """``root`` (the store's own metadata), ``metadata`` (an array's), ``chunk`` or ``status``
    (a value that is not a status code)."""
    variable: str | None = None
    chunk: tuple[int, ...] | None = None
    """The chunk's index in the variable's chunk grid."""
    cells: tuple[tuple[int, ...], ...] | None = None
    """Indices into ``status`` of the cells it spoils (repair marks them pending); None: it spoils
    no cell of its own (a coordinate, a single run's store)."""

    @property
    def repairable(self) -> bool:
        """Whether :func:`repair_store` can mend it (array metadata, or a problem of known cells)."""
        return self.kind == "metadata" or (self.kind in ("chunk", "status") and self.cells is not None)


class DamagedStoreError(InputError):
    """A store with missing or unreadable parts; its message names the first and says what to do."""

    def __init__(self, path: str | os.PathLike, damage: list[Damage]):
        self.path, self.damage = Path(path), list(damage)
        more = f" (and {len(damage) - 1} more problems)" if len(damage) > 1 else ""
        if all(d.repairable for d in damage):
            hint = (f"`biorules verify --repair {path}` marks the damaged cells pending, then the same "
                    "command recomputes them")
        else:
            hint = "it cannot be repaired; move it away and rerun with a new --out (or --overwrite)"
        super().__init__(f"{path} is damaged: {damage[0].text}{more}; {hint}")


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _arrays(path: Path, root: dict) -> dict[str, dict]:
    """Every array of the store (groups included) by path, with its metadata: the consolidated
    copy where there is one, else each array's own ``zarr.json``."""
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    arrays = {k: v for k, v in consolidated.items() if isinstance(v, dict) and v.get("node_type") == "array"}
    if arrays:
        return arrays
    found = {}
    for meta in sorted(path.rglob("zarr.json")):
        doc = _read_json(meta)
        if doc is not None and doc.get("node_type") == "array":
            found[meta.parent.relative_to(path).as_posix()] = doc
    return found


def _chunk_key(meta: dict, idx: tuple[int, ...]) -> str | None:
    """The chunk's file below the array's folder (v3 ``default`` key encoding), or None if unknown."""
    enc = meta.get("chunk_key_encoding") or {}
    if enc.get("name", "default") != "default":
        return None
    sep = (enc.get("configuration") or {}).get("separator", "/")
    return "c" + "".join(f"{sep}{i}" for i in idx)


def _chunk_grid(meta: dict) -> tuple[list[int], list[int]]:
    shape = [int(s) for s in meta.get("shape", [])]
    chunks = [int(c) for c in ((meta.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape", shape)]
    return shape, chunks


def _stored_files(folder: Path) -> tuple[set[str], int]:
    """Relative paths and total bytes of the chunk files below an array's folder."""
    names, size = set(), 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            if f == "zarr.json":
                continue
            full = os.path.join(dirpath, f)
            names.add(os.path.relpath(full, folder).replace(os.sep, "/"))
            with contextlib.suppress(OSError):
                size += os.path.getsize(full)
    return names, size


def verify_store(path: str | os.PathLike, *, decode_limit: int | None = None) -> list[Damage]:
    """Check a store and list what is wrong with it (empty: it is whole).

    Checked: the root metadata; each array's own metadata against the consolidated copy; that
    every chunk is on disk (stores of :data:`STORE_VERSION` 2 write them all); that chunks decode
    (every array when ``decode_limit`` is None, else those with at most that many bytes on disk);
    that every ``status`` value is a code of :data:`STATUS`. Each chunk problem names the cells
    of ``status`` it spoils, which :func:`repair_store` marks pending.
    """
    import itertools

    path = Path(path)
    root = _read_json(path / "zarr.json")
    if root is None:
        return [Damage(f"its root metadata ({path / 'zarr.json'}) is missing or unreadable", "root")]
    arrays = _arrays(path, root)
    cell_dims = tuple((root.get("attributes") or {}).get("cell_dims") or ())
    status = arrays.get("status", {})
    status_dims = tuple(status.get("dimension_names") or ())
    status_shape = [int(s) for s in status.get("shape", [])]
    group = _open_group(path)
    coords = _coordinates(arrays)
    files = {name: _stored_files(path / name) for name in arrays}
    whole = {d for d in status_dims if d in arrays and all(
        _chunk_key(arrays[d], idx) in files[d][0] for idx in itertools.product(*(range(g) for g in _grid(arrays[d]))))}
    labels = _labels(group, status_dims, whole)
    damage: list[Damage] = []

    def cells_of(meta: dict, idx: tuple[int, ...]) -> tuple[tuple[int, ...], ...] | None:
        dims = tuple(meta.get("dimension_names") or ())
        if not cell_dims or not status_dims or not set(dims) & set(cell_dims):
            return None
        _, chunks = _chunk_grid(meta)
        ranges = []
        for d, n in zip(status_dims, status_shape, strict=True):
            if d in dims:
                k = dims.index(d)
                ranges.append(range(idx[k] * chunks[k], min((idx[k] + 1) * chunks[k], n)))
            else:
                ranges.append(range(n))
        return tuple(itertools.product(*ranges))

    def where(cells: tuple[tuple[int, ...], ...] | None) -> str:
        if not cells:
            return ""
        if len(cells) > 1:
            return f" ({len(cells)} cells)"
        return " of cell (" + ", ".join(f"{d}={labels[d][i]}" for d, i in zip(status_dims, cells[0], strict=True)) + ")"

    for name, meta in arrays.items():
        cells_of_chunk = (lambda _meta, _idx: None) if name in coords else cells_of
        own = _read_json(path / name / "zarr.json")
        if own != meta:
            state = "missing or unreadable" if own is None else "not the consolidated copy"
            damage.append(Damage(f"the metadata of {name} ({name}/zarr.json) is {state}", "metadata", name))
        shape, chunks = _chunk_grid(meta)
        stored, size = files[name]
        missing = []
        for idx in itertools.product(*(range(g) for g in _grid(meta))):
            key = _chunk_key(meta, idx)
            if key is not None and key not in stored:
                missing.append(idx)
        for idx in missing:
            cells = cells_of_chunk(meta, idx)
            damage.append(Damage(f"chunk {name}/{_chunk_key(meta, idx)}{where(cells)} is missing", "chunk", name, idx,
                                 cells))
        if decode_limit is None or size <= decode_limit:
            for idx in _undecodable(group, name, shape, chunks, set(missing)):
                cells = cells_of_chunk(meta, idx)
                damage.append(Damage(f"chunk {name}/{_chunk_key(meta, idx)}{where(cells)} cannot be decoded",
                                     "chunk", name, idx, cells))
    if group is not None and status and not any(d.variable == "status" for d in damage):
        try:
            values = np.asarray(group["status"][...])
        except Exception:  # reported above as an undecodable chunk
            values = None
        if values is not None:
            for idx in np.argwhere(~np.isin(values, list(STATUS.values()))):
                cell = tuple(int(i) for i in idx)
                damage.append(Damage(f"status{where((cell,))} is {int(values[cell])}, not a status code",
                                     "status", "status", None, (cell,) if cell_dims else None))
    return damage


def _open_group(path: Path):
    """The store's zarr group through its consolidated metadata (None if that cannot be opened)."""
    import zarr

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return zarr.open_group(str(path), mode="r", use_consolidated=None)
    except Exception:
        return None


def _grid(meta: dict) -> list[int]:
    """Chunks along each dim of an array."""
    shape, chunks = _chunk_grid(meta)
    return [-(-s // max(c, 1)) for s, c in zip(shape, chunks, strict=False)]


def _coordinates(arrays: dict[str, dict]) -> set[str]:
    """The arrays that are coordinates: named after their only dim, or listed in a variable's
    ``coordinates`` attr (how xarray writes non-dimension coordinates)."""
    names = {n for n, m in arrays.items() if list(m.get("dimension_names") or []) == [n.rsplit("/", 1)[-1]]}
    for n, m in arrays.items():
        prefix = n.rsplit("/", 1)[0] + "/" if "/" in n else ""
        names |= {prefix + c for c in str((m.get("attributes") or {}).get("coordinates", "")).split()}
    return names


def _labels(group, dims: tuple[str, ...], whole: set[str]) -> dict[str, list]:
    """Coordinate labels of ``dims`` (indices where a coordinate is missing, damaged or unreadable)."""
    out = {}
    for d in dims:
        try:
            values = [v.item() if hasattr(v, "item") else v for v in np.asarray(group[d][...]).tolist()]
        except Exception:
            values = None
        if d not in whole:
            values = None
        out[d] = values if values is not None else _Index()
    return out


class _Index:
    def __getitem__(self, i: int) -> str:
        return f"#{i}"


def _undecodable(group, name: str, shape: list[int], chunks: list[int], skip: set) -> list[tuple[int, ...]]:
    """Chunks of ``name`` that fail to decode (the whole array is read first; chunk by chunk only if that fails)."""
    import itertools

    if group is None:
        return []
    try:
        arr = group[name]
        arr[...]
        return []
    except Exception:
        pass
    bad = []
    grid = [-(-s // max(c, 1)) for s, c in zip(shape, chunks, strict=False)]
    for idx in itertools.product(*(range(g) for g in grid)):
        if idx in skip:
            continue
        sel = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape, strict=True))
        try:
            arr[sel]
        except Exception:
            bad.append(idx)
    return bad


def repair_store(path: str | os.PathLike) -> tuple[int, list[Damage]]:
    """Repair what :func:`verify_store` finds: rewrite an array's metadata from the consolidated
    copy, rewrite each missing or undecodable chunk with the fill value, and mark every cell it
    spoils pending, so the command that made the store recomputes them.

    Returns (cells marked pending, the damage that could not be repaired: chunks of coordinates
    or of single-run stores, an unreadable root). Nothing is written when nothing can be repaired.
    """
    import zarr

    path = Path(path)
    damage = verify_store(path)
    root = _read_json(path / "zarr.json")
    if root is None:
        return 0, damage
    arrays = _arrays(path, root)
    fixable = [d for d in damage if d.repairable]
    left = [d for d in damage if not d.repairable]
    if not fixable:
        return 0, left
    for d in fixable:
        if d.kind == "metadata":
            (path / d.variable).mkdir(parents=True, exist_ok=True)
            (path / d.variable / "zarr.json").write_text(json.dumps(arrays[d.variable], indent=2))
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    cells: set[tuple[int, ...]] = set()
    for d in fixable:
        if d.kind == "chunk":
            meta = arrays[d.variable]
            shape, chunks = _chunk_grid(meta)
            arr = group[d.variable]
            sel = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(d.chunk, chunks, shape, strict=True))
            fill = np.full(tuple(s.stop - s.start for s in sel), arr.fill_value, dtype=arr.dtype)
            with zarr.config.set({"array.write_empty_chunks": True}):
                group[d.variable][sel] = fill
        cells.update(d.cells or ())
    if cells:
        with zarr.config.set({"array.write_empty_chunks": True}):
            status = group["status"]
            for cell in sorted(cells):
                status[cell] = STATUS["pending"]
    return len(cells), left
