"""The user's own data: the folder and nnU-Net layouts, NIfTI volumes, raw Synapse and ACDC releases."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import seg_fixtures as fx

from biorules.errors import InputError
from segment.data import open_dataset, verify
from segment.data.volume import read_image_volume, write_volume

# ------------------------------------------------------------------------------------ folder


def test_folder_binary(tmp_path: Path) -> None:
    fx.make_folder(tmp_path)
    ds = open_dataset("folder", tmp_path)
    assert [r.id for r in ds.records] == [f"img{k}" for k in range(5)]
    assert (ds.info.num_classes, ds.info.in_channels, ds.info.class_names) == (2, 3, ("foreground",))
    s = ds.load(ds.records[2])
    np.testing.assert_array_equal(s.image, fx.rgb(2) / np.float32(255))
    np.testing.assert_array_equal(s.mask, fx.blobs(2) > 0)
    assert verify(ds) == []


def test_folder_multiclass_colours_from_classes_json(tmp_path: Path) -> None:
    fx.make_folder(tmp_path, multiclass=True)
    ds = open_dataset("folder", tmp_path)
    assert ds.info.num_classes == 3 and ds.info.class_names == ("gland", "duct")
    assert ds.info.class_values == ((0, 0, 0), (255, 0, 0), (0, 0, 255))
    np.testing.assert_array_equal(ds.load(ds.records[1]).mask, fx.blobs(1))
    assert verify(ds) == []


def test_folder_class_ids_inferred_grey_masks_and_groups(tmp_path: Path) -> None:
    for k in range(4):
        fx.save(tmp_path / "images" / f"{k}.tif", fx.gray(k))
        fx.save(tmp_path / "masks" / f"{k}.png", fx.blobs(k))  # values 0, 1, 2: the class ids
    (tmp_path / "groups.csv").write_text("name,group\n0.tif,a\n1,a\n2,b\n3,b\n")
    ds = open_dataset("folder", tmp_path)
    assert (ds.info.num_classes, ds.info.in_channels, ds.info.class_values) == (3, 1, ())
    assert [r.group for r in ds.records] == ["a", "a", "b", "b"]
    np.testing.assert_array_equal(ds.load(ds.records[3]).mask, fx.blobs(3))
    assert ds.load(ds.records[3]).image.shape == (fx.H, fx.W, 1)


def test_folder_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder .*nope not found"):
        open_dataset("folder", tmp_path / "nope")
    with pytest.raises(InputError, match="no images/ folder"):
        open_dataset("folder", tmp_path)
    fx.make_folder(tmp_path, n=3)
    (tmp_path / "masks" / "img1.png").rename(tmp_path / "masks" / "other.png")
    fx.save(tmp_path / "masks" / "img2.png", (fx.blobs(2) * 100).astype(np.uint8))  # 0, 100, 200
    (tmp_path / "classes.json").write_text(json.dumps({"background": 0, "lesion": 255}))
    ds = open_dataset("folder", tmp_path)
    problems = verify(ds)
    assert len(problems) == 3, problems
    assert "img1.png has no mask" in problems[0] and "other.png has no image" in problems[1]
    assert "masks/img2.png has values {100, 200} that are not a class" in problems[2]
    (tmp_path / "classes.json").write_text('{"lesion": 255, "background": 0}')
    with pytest.raises(InputError, match="first class .* must have value 0"):
        open_dataset("folder", tmp_path)
    (tmp_path / "masks").rename(tmp_path / "m")
    (tmp_path / "masks").mkdir()
    with pytest.raises(InputError, match="no image/mask pairs with matching names"):
        open_dataset("folder", tmp_path)


# ------------------------------------------------------------------------------------ nnU-Net


def test_nnunet_2d_rgb_png(tmp_path: Path) -> None:
    fx.make_nnunet_2d(tmp_path)
    ds = open_dataset("nnunet", tmp_path)
    assert [r.id for r in ds.records] == ["case000", "case001", "case002", "case003"]
    assert (ds.info.in_channels, ds.info.num_classes, ds.info.class_names) == (3, 3, ("gland", "duct"))
    assert not ds.info.volumetric and not ds.info.official_split  # imagesTs/ has no labelsTs/
    s = ds.load(ds.records[1])
    np.testing.assert_array_equal(s.image, fx.rgb(1) / np.float32(255))
    np.testing.assert_array_equal(s.mask, fx.blobs(1))
    assert verify(ds) == []


def test_nnunet_3d_anisotropic_nifti(tmp_path: Path) -> None:
    fx.make_nnunet_3d(tmp_path)
    ds = open_dataset("nnunet", tmp_path)
    assert ds.info.volumetric and ds.info.in_channels == 2 and ds.info.num_classes == 3
    assert len(ds.records) == 5 * fx.VOL[2]  # cut along axis 2, the 3 mm one
    geo = ds.geometry["vol_001"]
    assert geo.axis == 2 and geo.shape == fx.VOL and geo.depth == 5
    np.testing.assert_allclose(geo.spacing, fx.SPACING, rtol=1e-6)
    np.testing.assert_allclose(geo.stacked_spacing, (3.0, 0.8, 0.7), rtol=1e-6)
    np.testing.assert_allclose(geo.affine_array, fx.affine())
    rec = next(r for r in ds.records if r.volume == "vol_001" and r.key == 3)
    assert rec.group == "vol_001" and len(rec.extra_images) == 1
    s = ds.load(rec)
    assert s.image.shape == (20, 16, 2) and s.image.dtype == np.float32
    raw = fx.volume_image(11)  # case 1, channel 1
    lo, hi = np.percentile(raw, (0.5, 99.5))
    np.testing.assert_allclose(s.image[..., 1], np.clip((raw[:, :, 3] - lo) / (hi - lo), 0, 1), atol=1e-6)
    np.testing.assert_array_equal(s.mask, fx.volume_labels(1)[:, :, 3])
    assert verify(ds) == []


def test_nnunet_declared_axis_and_problems(tmp_path: Path) -> None:
    fx.make_nnunet_3d(tmp_path, n=2, channels=1, slice_axis=0)
    (tmp_path / "imagesTr" / "vol_001_0000.nii.gz").rename(tmp_path / "imagesTr" / "vol_009_0000.nii.gz")
    fx.save_nifti(tmp_path / "labelsTr" / "vol_000.nii.gz", fx.volume_labels(0), fx.affine(origin=(0, 0, 0)))
    with pytest.raises(InputError, match="no complete image/mask pairs"):
        open_dataset("nnunet", tmp_path)
    fx.save_nifti(tmp_path / "labelsTr" / "vol_000.nii.gz", fx.volume_labels(0))
    ds = open_dataset("nnunet", tmp_path)
    assert len(ds.records) == fx.VOL[0] and ds.geometry["vol_000"].axis == 0
    assert ds.load(ds.records[4]).mask.shape == (16, 5)
    assert len(ds.problems) == 2
    assert "vol_009 in imagesTr/ has no label" in ds.problems[0]
    assert "vol_001.nii.gz has no image" in ds.problems[1]


@pytest.mark.parametrize("doc,match", [
    ("{", "not readable JSON"),
    ('{"labels": {"background": 0, "a": 1}, "file_ending": ".png"}', "'channel_names' missing"),
    ('{"channel_names": {"0": "CT"}, "file_ending": ".png"}', "'labels' missing"),
    ('{"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": [1, 2]}, "file_ending": ".png"}',
     "region-based labels"),
    ('{"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 2}, "file_ending": ".png"}',
     "consecutive"),
    ('{"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "file_ending": ".mha"}',
     "file_ending '.mha' is not supported"),
    ('{"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}}', "'file_ending' missing"),
])
def test_nnunet_bad_dataset_json(tmp_path: Path, doc: str, match: str) -> None:
    fx.make_nnunet_2d(tmp_path, n=1)
    (tmp_path / "dataset.json").write_text(doc)
    with pytest.raises(InputError, match=match) as e:
        open_dataset("nnunet", tmp_path)
    assert "\n" not in str(e.value) and "dataset.json" in str(e.value)


def test_nnunet_v1_dataset_json(tmp_path: Path) -> None:
    fx.make_nnunet_3d(tmp_path, n=1, channels=1)
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "rv", "2": "lv"}, "numTraining": 1}))
    ds = open_dataset("nnunet", tmp_path)
    assert ds.info.class_names == ("rv", "lv") and len(ds.records) == 5


# ------------------------------------------------------------------------------ 3-D round trip


def test_volume_round_trip_keeps_affine_and_shape(tmp_path: Path) -> None:
    """volume -> slices -> prediction (here: the labels) -> volume, written and read back."""
    fx.make_nnunet_3d(tmp_path / "d", n=2, channels=1, shape=(12, 9, 4))
    ds = open_dataset("nnunet", tmp_path / "d")
    geo = ds.geometry["vol_001"]
    slices = sorted((r for r in ds.records if r.volume == "vol_001"), key=lambda r: r.key)
    pred = geo.stack([ds.load(r).mask.astype(np.uint8) for r in slices])
    path = write_volume(tmp_path / "vol_001.nii.gz", pred, geo)
    back = nib.load(str(path))
    src = nib.load(str(tmp_path / "d" / "labelsTr" / "vol_001.nii.gz"))
    assert back.shape == src.shape == (12, 9, 4)
    np.testing.assert_allclose(back.affine, src.affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(src.dataobj))
    # the slices stacked on axis 0 go back the same way
    stacked = np.stack([ds.load(r).mask for r in slices])
    np.testing.assert_array_equal(geo.from_stacked(stacked), np.asarray(src.dataobj))


def test_round_trip_along_a_declared_axis(tmp_path: Path) -> None:
    fx.make_nnunet_3d(tmp_path / "d", n=1, channels=1, slice_axis=1, shape=(6, 7, 3))
    ds = open_dataset("nnunet", tmp_path / "d")
    geo = ds.geometry["vol_000"]
    recs = sorted(ds.records, key=lambda r: r.key)
    assert geo.axis == 1 and len(recs) == 7 and ds.load(recs[0]).image.shape == (6, 3, 1)
    vol = geo.stack([ds.load(r).mask for r in recs])
    np.testing.assert_array_equal(vol, fx.volume_labels(0, (6, 7, 3)))
    np.testing.assert_array_equal(read_image_volume(recs[0].image), fx.volume_image(0, (6, 7, 3)))


# ------------------------------------------------------------------------------ raw releases


def test_synapse_raw_release(tmp_path: Path) -> None:
    fx.make_synapse_raw(tmp_path)
    ds = open_dataset("synapse", tmp_path)
    assert sorted(ds.geometry) == ["case0001", "case0005", "case0006"]
    parts = {r.volume: r.part for r in ds.records}
    assert parts == {"case0001": "test", "case0005": "train", "case0006": "train"}  # TransUNet's test list
    r = next(r for r in ds.records if r.volume == "case0005" and r.key == 2)
    s = ds.load(r)
    btcv = np.asarray(nib.load(r.mask).dataobj)[:, :, 2]
    expect = np.array([0, 7, 4, 3, 2, 0, 5, 8, 1, 0, 0, 6, 0, 0])[btcv]
    np.testing.assert_array_equal(s.mask, expect)
    hu = np.asarray(nib.load(r.image).dataobj, dtype=np.float32)[:, :, 2]
    np.testing.assert_allclose(s.image[..., 0], np.clip((hu + 125) / 400, 0, 1), atol=1e-6)
    assert verify(ds) == []


def test_acdc_raw_release(tmp_path: Path) -> None:
    fx.make_acdc_raw(tmp_path)
    ds = open_dataset("acdc", tmp_path)
    assert sorted(ds.geometry) == [f"patient{p:03d}_frame{f:02d}" for p in (1, 21, 31, 32) for f in (1, 12)]
    by_case = {r.volume: (r.part, r.group) for r in ds.records}
    assert by_case["patient001_frame12"] == ("test", "patient001")
    assert by_case["patient021_frame01"] == ("val", "patient021")
    assert by_case["patient032_frame12"] == ("train", "patient032")
    s = ds.load(ds.records[0])
    assert s.image.min() >= 0 and s.image.max() <= 1 and s.mask.max() <= 3
    assert verify(ds) == []
