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


# ------------------------------------------------------- verification, repair, outputs, the writer lock


def _finished(tmp_path, name="s.zarr"):
    path = tmp_path / name
    store.create(path, _template(), ("gain", "seed"))
    for i in range(3):
        for j in range(2):
            store.write_cell(path, _cell(i, j), {"gain": i, "seed": j})
    return path


def test_every_chunk_is_on_disk_and_a_whole_store_verifies(tmp_path):
    path = tmp_path / "s.zarr"
    store.create(path, _template(), ("gain", "seed"))  # all pending: chunks equal to the fill value
    assert len(list((path / "status" / "c").rglob("*"))) == 3 + 6  # 3 folders, 6 chunks
    assert (path / "seed" / "c" / "0").is_file()  # coordinate [0, 1] too
    assert store.verify_store(path) == []
    assert store.verify_store(_finished(tmp_path, "f.zarr")) == []


def test_a_deleted_status_chunk_is_named_as_damaged_and_repaired(tmp_path):
    path = _finished(tmp_path)
    (path / "status" / "c" / "1" / "0").unlink()
    damage = store.verify_store(path)
    assert [d.text for d in damage] == ["chunk status/c/1/0 of cell (gain=1.0, seed=0) is missing"]
    with pytest.raises(store.DamagedStoreError, match=r"damaged: chunk status/c/1/0 .*verify --repair") as err:
        store.open_store(path)
    assert "\n" not in str(err.value)
    with pytest.raises(store.DamagedStoreError):  # a resume refuses it too, before any work
        store.open_or_create(path, _template(), ("gain", "seed"))
    assert store.repair_store(path) == (1, [])
    status = store.open_store(path)["status"].values
    assert status[1, 0] == store.STATUS["pending"] and (np.delete(status.ravel(), 2) == 1).all()


def test_a_truncated_data_chunk_is_named_as_damaged_and_repaired(tmp_path):
    path = _finished(tmp_path)
    chunk = path / "x" / "c" / "2" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    damage = store.verify_store(path)
    assert [d.text for d in damage] == ["chunk x/c/2/1/0 of cell (gain=1.5, seed=1) cannot be decoded"]
    assert damage[0].cells == ((2, 1),) and damage[0].repairable
    with pytest.raises(store.DamagedStoreError, match="x/c/2/1/0"):
        store.prepare_out(path, "a")
    cells, left = store.repair_store(path)
    assert (cells, left) == (1, [])
    ds = store.open_store(path).load()
    assert int(ds.status[2, 1]) == store.STATUS["pending"] and np.isnan(ds.x[2, 1]).all()
    assert float(ds.y[2, 1]) == 2.0  # the rest of the cell is kept; the rerun rewrites it whole


def test_garbage_variable_metadata_is_named_and_restored(tmp_path):
    path = _finished(tmp_path)
    before = store.open_store(path).load()
    (path / "y" / "zarr.json").write_text("{garbage")
    assert [d.text for d in store.verify_store(path)] == ["the metadata of y (y/zarr.json) is missing or unreadable"]
    assert store.repair_store(path) == (0, [])
    xr.testing.assert_identical(store.open_store(path).load(), before)


def test_bad_status_codes_and_unrepairable_damage(tmp_path):
    import zarr

    path = _finished(tmp_path)
    zarr.open_array(str(path / "status"), mode="r+")[0, 1] = 7
    (path / "gain" / "c" / "0").unlink()  # a coordinate spoils no cell of its own
    texts = [d.text for d in store.verify_store(path)]
    assert "chunk gain/c/0 is missing" in texts and any("is 7, not a status code" in t for t in texts)
    with pytest.raises(store.DamagedStoreError, match="cannot be repaired"):
        store.open_store(path)
    cells, left = store.repair_store(path)
    assert cells == 1 and [d.text for d in left] == ["chunk gain/c/0 is missing"]


def test_a_single_run_store_is_verified_but_not_repaired_by_cells(tmp_path):
    path = store.save(_template().isel(gain=0, seed=0), tmp_path / "run.zarr")
    (path / "x" / "c" / "0").unlink()
    (damage,) = store.verify_store(path)
    assert damage.text == "chunk x/c/0 is missing" and not damage.repairable


def test_prepare_out_is_one_rule_for_every_output(tmp_path):
    ours = _finished(tmp_path)
    assert store.prepare_out(tmp_path / "new.zarr", "a") == "new"
    (tmp_path / "empty").mkdir()
    assert store.prepare_out(tmp_path / "empty", "a") == "new"
    assert store.prepare_out(ours, "a") == "resume"
    assert store.prepare_out(ours, None) == "resume"
    assert store.prepare_out(ours, "b", overwrite=True) == "replace"
    with pytest.raises(InputError, match="other options .*repeat them to resume it, pass --overwrite"):
        store.prepare_out(ours, "b")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("x")
    for path, match in ((tmp_path / "afile" / "x.zarr", "afile is a file, not a folder"),
                        (tmp_path / "afile", "is a file that biorules did not write"),
                        (tmp_path / "user", "is a folder that biorules did not write")):
        before = _dir_digest(tmp_path)
        for overwrite in (False, True):
            with pytest.raises(InputError, match=match):
                store.prepare_out(path, "a", overwrite=overwrite, option="--out")
        assert _dir_digest(tmp_path) == before


def test_save_replaces_only_its_own_store(tmp_path):
    ds = _template()
    path = store.save(ds, tmp_path / "r.zarr")
    store.save(ds.assign_attrs(config="b"), path, replace=True)
    assert store.open_store(path).attrs["config"] == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]  # no temp or old folders left
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="did not write"):
        store.save(ds, user, replace=True)
    assert (user / "notes.txt").read_text() == "mine"


def test_a_second_writer_is_refused_by_the_lock(tmp_path):
    path = tmp_path / "s.zarr"
    with store.writer_lock(path):
        assert store.lock_path(path).read_text().strip() == str(__import__("os").getpid())
        with pytest.raises(InputError, match=rf"--out {path} is being written by another biorules process \(pid"):
            with store.writer_lock(tmp_path / "." / "s.zarr"):  # the same store, spelt otherwise
                pass
        with store.writer_lock(tmp_path / "other.zarr"):  # another store: its own lock
            pass
    assert not store.lock_path(path).exists() and list(tmp_path.iterdir()) == []  # nothing beside the store
    with store.writer_lock(path):  # free again
        pass


def test_a_killed_writer_leaves_no_lock_behind(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "s.zarr"
    code = ("import sys; from biorules import store\n"  # holds the lock until it is killed (stdin stays open)
            "with store.writer_lock(sys.argv[1]):\n    print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"pid {proc.pid}"):
            with store.writer_lock(path):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 600  # a generous bound only; the lock goes with the process at once
    while True:  # the OS releases the lock with the process; the stale file is harmless
        try:
            with store.writer_lock(path):
                break
        except InputError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
