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


# ------------------------------------------------------- one schema for both halves (segment runs)


def _segment_template(epochs=3):
    from segment import results as R

    attrs = R.run_attrs({"model": "m"}, ['{"name": "random-0"}', '{"name": "random-1"}'],
                        ["biorules", "segment", "--out", "r.zarr"], "cpu")
    return R.template(split_names=["random-0", "random-1"], split_seeds=[0, 1], epochs=epochs,
                      classes=["gland", "duct"], images=["a", "b", "c"], image_parts=["testA", "testA", "testB"],
                      parts=["testA", "testB"], attrs=attrs)


def test_segment_store_round_trip_through_the_shared_path(tmp_path):
    """Create, region writes out of order (status last) and open are those of biorules.store;
    each write is read back at once although only the (data-free) metadata is consolidated."""
    from segment import results as R

    tmpl = _segment_template()
    path = R.create(tmp_path / "r.zarr", tmpl)
    dims = R.all_dims(tmpl)
    want = tmpl.assign_attrs(store_version=store.STORE_VERSION, cell_dims=list(R.CELL_DIMS)).copy(deep=True)
    for k, e in ((1, 2), (0, 0), (1, 0)):
        R.write_region(path, {"train_loss": [[0.1 * k + e]], "val_dice": [[[0.5 + e, 0.25 * e]]],
                              "status": np.array([store.STATUS["running"]], np.int8)},
                       {"split": slice(k, k + 1), "epoch": slice(e, e + 1)}, dims)
        want["train_loss"][k, e] = 0.1 * k + e
        want["val_dice"][k, e] = [0.5 + e, 0.25 * e]
        want["status"][k] = store.STATUS["running"]
        got = R.open_results(path)
        assert float(got["train_loss"][k, e]) == 0.1 * k + e
        assert int(got["status"][k]) == store.STATUS["running"]
    block = xr.Dataset({"test_dice": (("split", "image", "class"), [[[0.9, 0.1], [0.8, 0.2], [np.nan, 0.3]]]),
                        "best_epoch": ("split", np.array([3])),
                        "status": ("split", np.array([store.STATUS["done"]], np.int8))})
    store.write_region(path, block, {"split": slice(1, 2)})
    want["test_dice"][1] = block["test_dice"][0]
    want["best_epoch"][1] = 3
    want["status"][1] = store.STATUS["done"]
    xr.testing.assert_identical(want, R.open_results(path).load())
    xr.testing.assert_identical(want, xr.open_zarr(path).load())
    assert store.finished_cells(path).tolist() == [False, True]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    with pytest.raises(InputError, match="already exists"):
        R.create(path, tmpl)


def test_opening_a_segment_store_warns_about_nothing(tmp_path):
    import json
    import warnings

    from segment import results as R

    path = R.create(tmp_path / "r.zarr", _segment_template())
    R.write_region(path, {"status": np.array([store.STATUS["running"]], np.int8)}, {"split": slice(0, 1)},
                   R.all_dims(_segment_template()))
    assert "consolidated_metadata" in json.loads((path / "zarr.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr.open_zarr(path).load()
        R.open_results(path).load()
        store.open_store(path).load()


def test_status_codes_are_one_table():
    from segment import results as R

    assert store.STATUS == {"pending": 0, "done": 1, "diverged": 2, "failed": 3, "running": 4}
    assert len(set(store.STATUS.values())) == len(store.STATUS)
    seg = _segment_template()["status"]
    shared = store.status_variable(("split",), (2,))
    for key in ("flag_values", "flag_meanings"):
        assert seg.attrs[key] == shared.attrs[key]
    assert (seg.values == store.STATUS["pending"]).all()
    assert not [name for name in vars(R) if name.startswith("STATUS")]  # no codes of its own


def test_running_cells_are_not_finished(tmp_path):
    path = tmp_path / "s.zarr"
    store.open_or_create(path, _template(), ("gain", "seed"))
    for (i, j), status in zip([(0, 0), (0, 1), (1, 0), (1, 1)], ["running", "done", "diverged", "failed"],
                              strict=True):
        store.write_cell(path, xr.Dataset({"status": ((), np.int8(store.STATUS[status]))}), {"gain": i, "seed": j})
    assert store.finished_cells(path).tolist() == [[False, True], [True, True], [False, False]]


def test_provenance_has_the_same_keys_for_both_halves():
    import datetime as dt
    import json
    import re

    from biorules import provenance
    from segment import results as R

    bio = provenance.provenance_attrs()
    seg = _segment_template().attrs
    assert set(bio) == set(provenance.PROVENANCE_KEYS)
    assert set(seg) - {"title", "config", "splits"} == set(bio)
    for attrs in (bio, seg):
        assert all(isinstance(v, str) for v in attrs.values())
        assert set(json.loads(attrs["versions"])) == {"python", *provenance.PACKAGES}
        assert attrs["biorules_version"] == __import__("biorules").__version__
        assert dt.datetime.fromisoformat(attrs["created"]).utcoffset() == dt.timedelta(0)
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", attrs["git_commit"]), attrs["git_commit"]
    assert seg["command"] == "biorules segment --out r.zarr" and seg["device"] == "cpu"
    assert provenance.provenance_attrs(["a b", "c"])["command"] == "'a b' c"
    assert R.run_attrs({}, [], "biorules segment eval")["command"] == "biorules segment eval"


def test_git_commit_is_unknown_outside_a_checkout(monkeypatch):
    from biorules import provenance

    provenance.git_commit.cache_clear()
    monkeypatch.setattr(provenance, "_git", lambda cwd, *args: None)
    try:
        assert provenance.git_commit() == "unknown"
        assert provenance.provenance_attrs()["git_commit"] == "unknown"
    finally:
        provenance.git_commit.cache_clear()
    assert provenance.device_name("cpu") == "cpu"


def test_old_segment_store_is_refused_with_one_line(tmp_path):
    """A segment store from before the shared schema (no store_version, codes pending/training/
    done) is refused, not resumed: --overwrite still replaces it."""
    import warnings

    from segment import results as R

    legacy = _segment_template().drop_vars("status")
    legacy["status"] = ("split", np.array([2, 1], np.int8),
                        {"long_name": "split status", "flag_values": [0, 1, 2], "flag_meanings": "pending training done"})
    path = tmp_path / "old.zarr"
    legacy.to_zarr(path, zarr_format=3, consolidated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="segment store from an older biorules") as err:
            R.open_results(path)
    assert "\n" not in str(err.value)
    assert store.written_here(path)
    store.replace_written(path)
    assert not path.exists()


def test_foreign_and_other_stores_are_refused(tmp_path):
    from segment import results as R

    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"v": ("x", np.arange(3))}).to_zarr(foreign)
    with pytest.raises(InputError, match="biorules did not write"):
        R.open_results(foreign)
    sweep = tmp_path / "sweep.zarr"
    store.create(sweep, _template(), ("gain", "seed"))
    with pytest.raises(InputError, match="not a segment run"):
        R.open_results(sweep)
