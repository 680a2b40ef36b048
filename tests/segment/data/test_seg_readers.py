"""Each reader parses a fixture folder in its published layout; verification reports problems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import seg_fixtures as fx
from PIL import Image

from biorules.errors import InputError
from segment.data import open_dataset, verify
from segment.data.splits import make_splits, random_split


def test_glas(tmp_path: Path) -> None:
    fx.make_glas(tmp_path)
    ds = open_dataset("glas", tmp_path)
    assert [r.id for r in ds.records] == ["train_1", "train_2", "train_3", "train_4", "testA_1", "testA_2", "testB_1"]
    assert [r.part for r in ds.records][-3:] == ["testA", "testA", "testB"]
    assert dict(ds.records[0].meta) == {"grade": "benign"}
    s = ds.load(ds.records[0])
    assert s.image.shape == (fx.H, fx.W, 3) and s.image.dtype == np.float32
    np.testing.assert_array_equal(s.image, fx.rgb(1) / np.float32(255))
    np.testing.assert_array_equal(s.instances, fx.blobs(1))
    np.testing.assert_array_equal(s.mask, fx.blobs(1) > 0)
    assert verify(ds) == []
    sp = make_splits(ds, "auto")[0]
    assert sp.name == "official" and sp.test == ("testA_1", "testA_2", "testB_1")
    assert len(sp.val) == 1 and len(sp.train) == 3 and set(sp.val).isdisjoint(sp.train)


def test_busi_merges_extra_masks_and_skips_normal(tmp_path: Path) -> None:
    fx.make_busi(tmp_path)
    ds = open_dataset("busi", tmp_path)
    assert [r.id for r in ds.records] == ["benign (1)", "benign (2)", "benign (3)", "malignant (1)", "malignant (2)"]
    s = ds.load(ds.records[0])
    assert s.image.shape == (fx.H, fx.W, 1)
    np.testing.assert_array_equal(s.mask, (fx.blobs(1, n=1) > 0) | (fx.blobs(99, n=1) > 0))
    assert verify(ds) == []


def test_kvasir_thresholds_jpeg_masks(tmp_path: Path) -> None:
    fx.make_kvasir(tmp_path / "Kvasir-SEG")
    ds = open_dataset("kvasir", tmp_path)
    assert [r.id for r in ds.records] == ["cju0", "cju1", "cju2"]
    s = ds.load(ds.records[1])
    assert set(np.unique(s.mask)) == {0, 1}
    assert (s.mask == (fx.blobs(1) > 0)).mean() > 0.97  # JPEG ringing at the edges only
    assert verify(ds) == []


@pytest.mark.parametrize("name,make", [("cvc-clinicdb", fx.make_clinicdb), ("cvc-colondb", fx.make_colondb)])
def test_cvc(tmp_path: Path, name: str, make) -> None:
    make(tmp_path)
    ds = open_dataset(name, tmp_path)
    assert [r.id for r in ds.records] == ["1", "2", "3"]
    s = ds.load(ds.records[2])
    np.testing.assert_array_equal(s.mask, fx.blobs(3) > 0)
    np.testing.assert_array_equal(s.image, fx.rgb(3) / np.float32(255))


def test_isic_official_parts_skip_superpixels(tmp_path: Path) -> None:
    fx.make_isic(tmp_path)
    ds = open_dataset("isic2017", tmp_path)
    assert [r.part for r in ds.records] == ["train"] * 3 + ["val"] + ["test"] * 2
    assert all("superpixels" not in r.image for r in ds.records)
    sp = make_splits(ds)[0]
    assert (len(sp.train), len(sp.val), len(sp.test)) == (3, 1, 2)
    np.testing.assert_array_equal(ds.load(ds.records[4]).mask, fx.blobs(5) > 0)


def test_synapse_npz_and_h5_volumes(tmp_path: Path) -> None:
    fx.make_synapse(tmp_path)
    ds = open_dataset("synapse", tmp_path)
    train = [r for r in ds.records if r.part == "train"]
    test = [r for r in ds.records if r.part == "test"]
    assert len(train) == 3 and len(test) == 4 and {r.volume for r in test} == {"case0001"}
    s = ds.load(test[2])
    assert s.image.shape == (32, 32, 1) and s.mask.max() <= 8
    with np.load(train[0].image) as d:
        np.testing.assert_array_equal(ds.load(train[0]).mask, d["label"])
    assert verify(ds) == []


def test_acdc_patient_split(tmp_path: Path) -> None:
    fx.make_acdc(tmp_path)
    ds = open_dataset("acdc", tmp_path)
    parts = {r.part for r in ds.records}
    assert parts == {"train", "val", "test"}
    assert sum(r.part == "train" for r in ds.records) == 4  # slices of patients 31, 32; patient 40's volume unused
    assert {r.volume for r in ds.records if r.part == "test"} == {"patient001_frame01"}
    s = ds.load(ds.records[0])
    assert s.image.min() >= 0 and s.image.max() <= 1 and s.mask.max() <= 3
    assert verify(ds) == []


def test_demo_tiles() -> None:
    ds = open_dataset("demo", None)
    assert [r.part for r in ds.records].count("train") == 12
    s = ds.load(ds.records[5])
    assert s.image.shape == (128, 128, 1) and s.instances.max() > 0
    assert 0.05 < s.mask.mean() < 0.5


def test_random_split_sizes_and_seed() -> None:
    ids = [f"img{i:03d}" for i in range(165)]
    a, b = random_split(ids, 0), random_split(ids, 0)
    assert a == b and (len(a.train), len(a.val), len(a.test)) == (133, 16, 16)
    assert set(a.train) | set(a.val) | set(a.test) == set(ids)
    assert random_split(ids, 1).test != a.test
    perm = np.random.default_rng(0).permutation(165)
    assert set(a.val) == {ids[i] for i in perm[:16]}


# ------------------------------------------------------------------------------------ bad input


def test_missing_and_wrong_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--data-dir is required"):
        open_dataset("glas", None)
    with pytest.raises(InputError, match="not found"):
        open_dataset("glas", tmp_path / "nope")
    with pytest.raises(InputError, match="no GlaS files"):
        open_dataset("glas", tmp_path)
    with pytest.raises(InputError, match="unknown dataset 'mnist'"):
        open_dataset("mnist", tmp_path)
    with pytest.raises(InputError, match="no images/ folder"):
        open_dataset("kvasir", tmp_path)


def test_verify_reports_every_problem(tmp_path: Path) -> None:
    fx.make_glas(tmp_path)
    (tmp_path / "train_2.bmp").write_bytes(b"BM this is not a bitmap")
    fx.save(tmp_path / "train_3_anno.bmp", fx.blobs(3, h=fx.H + 2))
    (tmp_path / "testB_1_anno.bmp").unlink()
    ds = open_dataset("glas", tmp_path)
    problems = verify(ds)
    assert len(problems) == 3
    assert "testB_1.bmp has no annotation" in problems[0]
    assert "cannot decode image" in problems[1] and "train_2.bmp" in problems[1]
    assert "train_3_anno.bmp is 48x42 but image" in problems[2]


def test_binary_mask_values_checked(tmp_path: Path) -> None:
    fx.make_colondb(tmp_path)
    fx.save(tmp_path / "masks" / "2.png", (fx.blobs(2) * 100).astype(np.uint8))
    problems = verify(open_dataset("cvc-colondb", tmp_path))
    assert len(problems) == 1 and "masks/2.png has values {0, 100, 200}" in problems[0]


def test_unpaired_files(tmp_path: Path) -> None:
    fx.make_kvasir(tmp_path)
    Image.fromarray(fx.rgb(9)).save(tmp_path / "images" / "extra.jpg")
    (tmp_path / "masks" / "cju0.jpg").rename(tmp_path / "masks" / "other.jpg")
    ds = open_dataset("kvasir", tmp_path)
    assert [r.id for r in ds.records] == ["cju1", "cju2"]
    assert len(ds.problems) == 3
