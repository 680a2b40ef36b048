"""K-fold cross-validation: disjoint, covering, grouped, balanced, seeded; grouped random splits."""

from __future__ import annotations

from pathlib import Path

import pytest
import seg_fixtures as fx

from biorules.errors import InputError
from segment.data import open_dataset
from segment.data.splits import fold_splits, make_folds, make_splits


def _groups() -> list[str]:
    """23 items in 9 groups of sizes 1..5, interleaved."""
    sizes = [5, 1, 3, 2, 4, 1, 2, 3, 2]
    items = [f"g{g}" for g, n in enumerate(sizes) for _ in range(n)]
    return items[::2] + items[1::2]


def test_folds_disjoint_covering_grouped_balanced() -> None:
    groups = _groups()
    folds = make_folds(4, groups, seed=0)
    flat = sorted(i for f in folds for i in f)
    assert flat == list(range(len(groups)))  # covering, and disjoint (no index twice)
    owner = {groups[i]: k for k, f in enumerate(folds) for i in f}
    assert all(owner[groups[i]] == k for k, f in enumerate(folds) for i in f)  # no group split
    assert sorted(len(f) for f in folds) == [5, 6, 6, 6]  # greedy largest-first: as even as groups allow


def test_folds_deterministic_by_seed() -> None:
    groups = [f"p{i}" for i in range(10)]
    assert make_folds(5, groups, seed=3) == make_folds(5, groups, seed=3)
    assert make_folds(5, groups, seed=3) != make_folds(5, groups, seed=4)
    assert all(len(f) == 2 for f in make_folds(5, groups, seed=4))


def test_folds_bad_k() -> None:
    with pytest.raises(InputError, match="--folds must be at least 2"):
        make_folds(1, ["a", "b"])
    with pytest.raises(InputError, match="--folds 5: the data has only 3"):
        make_folds(5, ["a", "b", "c", "a"])


def test_fold_splits_of_acdc_keep_patients_and_official_test(tmp_path: Path) -> None:
    fx.make_acdc_raw(tmp_path, patients=(1, 21, 31, 32, 33, 34))
    ds = open_dataset("acdc", tmp_path)
    splits = fold_splits(ds, 5, seed=0)
    patient = {r.id: r.group for r in ds.records}
    pool = {r.id for r in ds.records if r.part != "test"}  # patient 1 is the official test set
    assert [s.name for s in splits] == [f"fold{k}" for k in range(5)] and [s.fold for s in splits] == list(range(5))
    assert sorted(i for s in splits for i in s.test) == sorted(pool)  # every case tested exactly once
    for s in splits:
        tested = {patient[i] for i in s.test}
        assert len(tested) == 1  # 5 patients, 5 folds
        assert tested.isdisjoint({patient[i] for i in s.train + s.val})
        assert set(s.train) | set(s.val) | set(s.test) == pool
        assert s.val == ()  # floor(4 / 10) validation patients


def test_fold_splits_of_clinicdb_follow_groups_csv(tmp_path: Path) -> None:
    fx.make_clinicdb(tmp_path, n=6)
    (tmp_path / "groups.csv").write_text("frame,video\n1,v1\n2,v1\n3,v2\n4,v2\n5,v3\n6,v3\n")
    ds = open_dataset("cvc-clinicdb", tmp_path)
    assert [r.group for r in ds.records] == ["v1", "v1", "v2", "v2", "v3", "v3"]
    splits = fold_splits(ds, 3)
    assert sorted(tuple(s.test) for s in splits) == [("1", "2"), ("3", "4"), ("5", "6")]


def test_random_split_of_volumes_keeps_cases_whole(tmp_path: Path) -> None:
    fx.make_nnunet_3d(tmp_path, n=10, channels=1, shape=(6, 6, 3), test=0)
    ds = open_dataset("nnunet", tmp_path)
    sp = make_splits(ds, "random", seed=1)[0]
    case = {r.id: r.volume for r in ds.records}
    parts = [{case[i] for i in p} for p in (sp.train, sp.val, sp.test)]
    assert [len(p) for p in parts] == [8, 1, 1]
    assert parts[0].isdisjoint(parts[1] | parts[2]) and parts[1].isdisjoint(parts[2])
    assert len(sp.train) + len(sp.val) + len(sp.test) == 30


def test_fold_store_has_a_fold_dimension(tmp_path: Path) -> None:
    import numpy as np
    import xarray as xr

    from biorules import store
    from segment import results as R
    from segment.engine import summarize

    kw = dict(epochs=2, classes=["gland"], image_parts=["test"] * 3, parts=None, attrs={"config": "{}"})
    tmpl = R.template(split_names=["fold1", "fold3"], split_seeds=[0, 0], images=["a", "b", "c"],
                      split_folds=[1, 3], **kw)
    assert R.split_dim(tmpl) == R.split_dim(5) == "fold" and "split" not in tmpl.dims
    assert tmpl.sizes["fold"] == 2 and list(tmpl["fold"].values) == [1, 3]
    assert tmpl["split_name"].dims == tmpl["split_seed"].dims == ("fold",)
    assert {v.dims[0] for v in tmpl.data_vars.values()} == {"fold"}
    path = tmp_path / "cv.zarr"
    R.create(path, tmpl)
    raw = xr.open_zarr(path)
    assert "fold" in raw.dims and "split" not in raw.dims and raw.attrs["cell_dims"] == ["fold", "epoch"]
    assert raw["train_loss"].encoding["chunks"] == (1, 1) and raw["test_dice"].encoding["chunks"] == (1, 3, 1)
    dims = R.all_dims(tmpl)
    assert R.split_dim(dims) == "fold"
    for k, dice in ((1, [0.5, np.nan, 0.7]), (0, [0.9, 0.8, np.nan])):
        R.write_region(path, {"test_dice": np.array(dice)[None, :, None],
                              "status": np.array([store.STATUS["done"]], np.int8)}, {"fold": slice(k, k + 1)}, dims)
    ds = R.open_results(path).load()
    assert ds["test_dice"].sel(fold=3, image="c", **{"class": "gland"}) == pytest.approx(0.7)
    mean, sd = summarize(ds)["classes"]["gland"]["dice"]
    assert mean == pytest.approx((0.85 + 0.6) / 2) and sd == pytest.approx(np.std([0.85, 0.6], ddof=1))
    plain = R.template(split_names=["random-0"], split_seeds=[0], images=["a", "b", "c"], split_folds=[-1], **kw)
    assert R.split_dim(plain) == R.split_dim(0) == "split" and "fold" not in plain.coords
    assert list(plain["split"].values) == [0] and plain["status"].dims == ("split",)
