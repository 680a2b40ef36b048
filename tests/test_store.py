"""Zarr stores: template, region writes out of order, resume, version and config checks."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from biorules import store
from biorules.errors import InputError


def _template(config="a"):
    return xr.Dataset(
        {
            "x": (("gain", "seed", "exponent"), np.full((3, 2, 4), np.nan), {"units": "1/tau"}),
            "y": (("gain", "seed"), np.full((3, 2), np.nan)),
            "status": store.status_variable(("gain", "seed"), (3, 2)),
        },
        coords={"gain": [0.5, 1.0, 1.5], "seed": [0, 1], "exponent": [1, 2, 3, 4]},
        attrs={"config": config},
    )


def _cell(i, j):
    return xr.Dataset({"x": ("exponent", np.arange(4) + 10 * i + j), "y": ((), float(i * j)),
                       "status": ((), np.int8(store.STATUS["done"]))})


def test_cells_written_out_of_order_equal_the_whole(tmp_path):
    path = tmp_path / "s.zarr"
    store.open_or_create(path, _template(), ("gain", "seed"))
    cells = [(2, 1), (0, 0), (1, 1), (2, 0), (0, 1), (1, 0)]
    for i, j in cells[:3]:
        store.write_cell(path, _cell(i, j), {"gain": i, "seed": j})
    assert store.finished_cells(path).sum() == 3
    for i, j in cells[3:]:
        store.write_cell(path, _cell(i, j), {"gain": i, "seed": j})
    expected = _template()
    for i, j in cells:
        expected["x"][i, j] = np.arange(4) + 10 * i + j
        expected["y"][i, j] = i * j
        expected["status"][i, j] = 1
    got = xr.open_zarr(path).load()
    xr.testing.assert_identical(got.drop_attrs(), expected.drop_attrs())
    assert store.finished_cells(path).all()


def test_resume_refuses_another_configuration(tmp_path):
    path = tmp_path / "s.zarr"
    store.open_or_create(path, _template("a"), ("gain", "seed"))
    store.open_or_create(path, _template("a"), ("gain", "seed"))  # same run: resumes
    with pytest.raises(InputError, match="different configuration"):
        store.open_or_create(path, _template("b"), ("gain", "seed"))


def test_old_store_version_is_refused(tmp_path):
    path = tmp_path / "old.zarr"
    _template().assign_attrs(store_version=0).to_zarr(path)
    with pytest.raises(InputError, match="another biorules version"):
        store.open_store(path)


def test_save_round_trip_and_never_overwrites(tmp_path):
    ds = _template()
    path = store.save(ds, tmp_path / "r.zarr")
    xr.testing.assert_identical(xr.open_zarr(path).load(), ds.assign_attrs(store_version=store.STORE_VERSION))
    with pytest.raises(InputError, match="already exists"):
        store.save(ds, path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_not_a_store(tmp_path):
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(InputError, match="not a readable zarr store"):
        store.open_store(tmp_path / "junk.zarr")


def _dir_digest(path):
    """Names, sizes and bytes of every file below ``path``: equal digests mean nothing changed."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_replace_written_removes_only_this_tools_outputs(tmp_path):
    ours = tmp_path / "s.zarr"
    store.create(ours, _template(), ("gain", "seed"))
    assert store.written_here(ours)
    store.replace_written(ours)
    assert not ours.exists()

    ckpt = store.mark_checkpoints(tmp_path / "run.ckpt")
    (ckpt / "split0_last.pt").write_bytes(b"x")
    assert store.written_here(ckpt)
    store.replace_written(ckpt)
    assert not ckpt.exists()
    legacy = tmp_path / "old.ckpt"  # checkpoint folders written before the marker existed
    legacy.mkdir()
    (legacy / "split0_best.pt").write_bytes(b"x")
    assert store.written_here(legacy)

    empty = tmp_path / "empty"
    empty.mkdir()
    store.replace_written(empty)
    assert not empty.exists()


@pytest.mark.parametrize("kind", ["user-folder", "other-zarr", "file", "ckpt-with-extra"])
def test_replace_written_refuses_what_it_did_not_write(tmp_path, kind):
    path = tmp_path / "target"
    if kind == "user-folder":
        path.mkdir()
        (path / "thesis.tex").write_text("years of work")
        (path / "sub").mkdir()
        (path / "sub" / "data.csv").write_text("1,2")
    elif kind == "other-zarr":
        xr.Dataset({"v": ("x", np.arange(3))}).to_zarr(path)
    elif kind == "file":
        path.write_text("not a folder")
    else:
        path.mkdir()
        (path / "split0_last.pt").write_bytes(b"x")
        (path / "notes.txt").write_text("mine")
    before = _dir_digest(tmp_path)
    assert not store.written_here(path)
    with pytest.raises(InputError, match="biorules did not write"):
        store.replace_written(path, "--out")
    assert _dir_digest(tmp_path) == before
