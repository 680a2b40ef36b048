"""The user's own data through ``biorules segment``: nnU-Net folds train and evaluate, predict writes
NIfTI with the input's affine and palette PNGs, ensembles are the mean of softmax, bad input is one
line and exit 2 with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import seg_fixtures as fx
import torch
import xarray as xr
from cli_runner import run_in_process
from PIL import Image

from biorules.store import STATUS
from cli.main import main
from segment.results import open_results

TINY = ["--model", "rwkv_unet_test", "--size", "32", "--epochs", "1", "--batch", "4", "--device", "cpu"]
SHAPE = (20, 16, 3)  # voxels; 3 slices of 20 × 16 along the 3 mm axis


run = run_in_process  # the entry point in this process: exit code, stdout, stderr


@pytest.fixture(scope="module")
def fold0(tmp_path_factory):
    """``--dataset nnunet --folds 5 --fold 0`` trained once on a 3-D NIfTI fixture: (data, store)."""
    root = tmp_path_factory.mktemp("nnunet")
    data = fx.make_nnunet_3d(root / "Dataset001", n=5, channels=1, shape=SHAPE)
    out = root / "cv.zarr"
    try:
        main(["--quiet", "segment", "--dataset", "nnunet", "--data-dir", str(data), "--folds", "5", "--fold", "0",
              *TINY, "--out", str(out)])
    except SystemExit as e:
        assert not e.code
    return data, out


def test_nnunet_fold_trains_and_evaluates_in_mm(fold0, capsys) -> None:
    data, out = fold0
    ds = open_results(out)
    assert list(ds["split_name"].values) == ["fold0"] and "split" not in ds.dims
    assert ds.sizes["fold"] == 1 and ds["fold"].values.tolist() == [0] and ds["status"].dims == ("fold",)
    assert "fold" in xr.open_zarr(out).dims
    assert ds["test_hd95"].attrs["units"] == "mm"
    splits = json.loads(ds.attrs["splits"])
    assert splits[0]["fold"] == 0 and len({i.rsplit("_z", 1)[0] for i in splits[0]["test"]}) == 1
    assert list(ds["image"].values) == sorted({i.rsplit("_z", 1)[0] for i in splits[0]["test"]})  # one volume
    assert np.isfinite(ds["test_dice"].values).all() and (ds["test_dice"].values >= 0).all()
    code, stdout, err = run(["--json", "segment", "eval", "--checkpoint", str(out.with_suffix(".ckpt") / "split0_best.pt"),
                             "--data-dir", str(data), "--folds", "5", "--fold", "0", "--device", "cpu"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["hd95_units"] == "mm"
    np.testing.assert_allclose(summary["classes"]["rv"]["dice"][0], float(ds["test_dice"].sel({"class": "rv"}).mean()))


def test_eval_of_a_fold_writes_a_fold_store(fold0, tmp_path: Path, capsys) -> None:
    data, out = fold0
    ev = tmp_path / "eval.zarr"
    code, _, err = run(["--quiet", "segment", "eval", "--checkpoint", str(out.with_suffix(".ckpt") / "split0_best.pt"),
                        "--data-dir", str(data), "--folds", "5", "--fold", "0", "--device", "cpu", "--out", str(ev)],
                       capsys)
    assert code == 0, err
    raw = xr.open_zarr(ev)
    assert "fold" in raw.dims and "split" not in raw.dims and raw.sizes["fold"] == 1 and raw["fold"].values.tolist() == [0]
    ds = open_results(ev).load()
    assert list(ds["split_name"].values) == ["fold0"] and int(ds["status"].sel(fold=0)) == STATUS["done"]
    np.testing.assert_allclose(ds["test_dice"].values, open_results(out)["test_dice"].values)


def test_resume_of_a_fold_run_tests_into_its_fold(fold0, tmp_path: Path, capsys) -> None:
    import shutil

    from segment import results as R

    data, src = fold0
    out = tmp_path / "cv.zarr"
    shutil.copytree(src, out)
    shutil.copytree(src.with_suffix(".ckpt"), out.with_suffix(".ckpt"))
    dims = R.all_dims(R.open_results(out))
    R.write_region(out, {"test_dice": np.full((1, *open_results(out)["test_dice"].shape[1:]), np.nan),
                         "status": np.array([STATUS["running"]], np.int8)}, {R.split_dim(dims): slice(0, 1)}, dims)
    code, _, err = run(["--quiet", "segment", "--dataset", "nnunet", "--data-dir", str(data), "--folds", "5",
                        "--fold", "0", *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    ds, want = open_results(out).load(), open_results(src).load()
    assert ds.sizes["fold"] == 1 and ds["fold"].values.tolist() == [0] and int(ds["status"].sel(fold=0)) == STATUS["done"]
    np.testing.assert_allclose(ds["test_dice"].values, want["test_dice"].values)


def test_predict_imagests_writes_nifti_with_the_input_affine(fold0, tmp_path: Path, capsys) -> None:
    data, out = fold0
    ck = out.with_suffix(".ckpt") / "split0_best.pt"
    code, stdout, err = run(["--json", "segment", "predict", "--checkpoint", str(ck), "--input", str(data / "imagesTs"),
                             "--out", str(tmp_path / "pred"), "--save-probabilities", "--device", "cpu"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["new_000.nii.gz", "new_000_probabilities.npz"]
    pred = nib.load(str(tmp_path / "pred" / "new_000.nii.gz"))
    src = nib.load(str(data / "imagesTs" / "new_000_0000.nii.gz"))
    assert pred.shape == src.shape == SHAPE
    np.testing.assert_allclose(pred.affine, src.affine)
    labels = np.asarray(pred.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    with np.load(tmp_path / "pred" / "new_000_probabilities.npz") as z:
        p = z["probabilities"]
        assert p.dtype == np.float16 and p.shape == (3, *SHAPE) and list(z["classes"]) == ["background", "rv", "lv"]
        np.testing.assert_allclose(p.astype(np.float32).sum(0), 1.0, atol=3e-3)
        np.testing.assert_array_equal(p.argmax(0), labels)


def test_two_checkpoint_ensemble_is_the_mean_of_their_softmax(tmp_path: Path) -> None:
    from segment.engine import predict_probs
    from segment.engine.inference import Ensemble, models_from_checkpoints
    from segment.model import create_model

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = create_model("rwkv_unet_test", in_channels=1, num_classes=3).eval()
        meta = {"model": "rwkv_unet_test", "dataset": "nnunet", "in_channels": 1, "num_classes": 3, "logits": 3,
                "class_names": ["rv", "lv"], "size": 32, "mean": [0.449], "std": [0.226], "wkv": "auto"}
        paths.append(tmp_path / f"m{seed}.pt")
        torch.save({"model": m.state_dict(), "meta": meta}, paths[-1])
    ens, _ = models_from_checkpoints(paths, torch.device("cpu"))
    assert isinstance(ens, Ensemble)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        one, two = (torch.softmax(m(x), 1) for m in ens.models)
    torch.testing.assert_close(predict_probs(ens, x), (one + two) / 2, rtol=0, atol=1e-6)
    assert (one - two).abs().max() > 1e-3  # the two models differ


def test_predict_multiclass_png_is_a_palette_with_the_classes_listed(tmp_path: Path, capsys) -> None:
    import segment.engine as E
    from segment.model import create_model

    torch.manual_seed(0)
    m = create_model("rwkv_unet_test", in_channels=3, num_classes=3).eval()
    meta = {"model": "rwkv_unet_test", "dataset": "nnunet", "in_channels": 3, "num_classes": 3, "logits": 3,
            "class_names": ["gland", "duct"], "size": 32, "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "wkv": "auto"}
    torch.save({"model": m.state_dict(), "meta": meta}, tmp_path / "m.pt")
    fx.make_nnunet_2d(tmp_path / "d", n=1)
    files = E.predict_folder(tmp_path / "m.pt", tmp_path / "d" / "imagesTs", tmp_path / "pred", device="cpu",
                             overlays=False)
    assert sorted(p.name for p in files) == ["classes.json", "test000_mask.png"]
    im = Image.open(tmp_path / "pred" / "test000_mask.png")
    assert im.mode == "P" and im.size == (fx.W, fx.H)
    assert im.getpalette()[:9] == [0, 0, 0, 255, 64, 64, 64, 200, 64]
    assert set(np.unique(np.array(im))) <= {0, 1, 2}
    listed = json.loads((tmp_path / "pred" / "classes.json").read_text())
    assert listed == {"background": {"value": 0, "color": [0, 0, 0]}, "gland": {"value": 1, "color": [255, 64, 64]},
                      "duct": {"value": 2, "color": [64, 200, 64]}}


@pytest.mark.parametrize("extra,match", [
    (["--folds", "5", "--fold", "5"], "--fold 5 must be in 0..4"),
    (["--fold", "1"], "--fold needs --folds K"),
    (["--folds", "9"], "--folds 9: the data has only 5"),
])
def test_bad_fold_options(tmp_path: Path, capsys, extra, match) -> None:
    data = fx.make_nnunet_3d(tmp_path / "d", n=5, channels=1, shape=(6, 6, 2), test=0)
    out = tmp_path / "cv.zarr"
    code, _, err = run(["segment", "--dataset", "nnunet", "--data-dir", str(data), *extra, *TINY, "--out", str(out)],
                       capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err and not out.exists() and not out.with_suffix(".ckpt").exists()


@pytest.mark.parametrize("make,match", [
    (lambda d: d.mkdir(), "no dataset.json"),
    (lambda d: (fx.make_nnunet_2d(d), (d / "dataset.json").write_text('{"labels": 3}')), "'channel_names' missing"),
    (lambda d: fx.make_folder(d) and (d / "masks" / "img0.png").unlink(), None),
])
def test_bad_user_data_is_one_line(tmp_path: Path, capsys, make, match) -> None:
    d = tmp_path / "d"
    make(d)
    name = "folder" if match is None else "nnunet"
    out = tmp_path / "o.zarr"
    code, _, err = run(["segment", "--dataset", name, "--data-dir", str(d), *TINY, "--out", str(out)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and not out.exists(), err
    assert (match or "img0.png has no mask") in lines[0]
