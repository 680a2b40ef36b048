"""Training loop, store, checkpoints, resume, predict and eval on the built-in demo data
(the tiny ``rwkv_unet_test`` model at 32², CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image

from biorules import store
from biorules.errors import InputError
from segment import engine as E
from segment import results as R

FAST = E.TrainConfig(model="rwkv_unet_test", size=32, epochs=2, batch=6, device="cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, xr.Dataset]:
    out = tmp_path_factory.mktemp("run") / "demo.zarr"
    ds = E.train(FAST, out, command=["biorules", "segment", "--model", "rwkv_unet_test"])
    return out, ds.load()


def test_store_layout(run) -> None:
    out, ds = run
    assert dict(ds.sizes) == {"split": 1, "epoch": 2, "class": 1, "image": 2, "part": 1}
    assert list(ds["image"].values) == ["tile_r2_c3", "tile_r3_c3"]
    assert ds["test_dice"].attrs["units"] == "1" and ds["test_hd95"].attrs["units"] == "pixel"
    assert all("long_name" in ds[v].attrs for v in ds.data_vars)
    assert np.isfinite(ds["train_loss"]).all() and np.isfinite(ds["val_dice"]).all()
    assert ((ds["test_dice"] >= 0) & (ds["test_dice"] <= 1)).all()
    assert int(ds["status"][0]) == store.STATUS["done"] and int(ds["best_epoch"][0]) in (1, 2)
    assert E.config_from_dict(__import__("json").loads(ds.attrs["config"])) == FAST.resolved()
    assert "torch" in ds.attrs["versions"] and ds.attrs["command"].startswith("biorules segment")
    assert np.isfinite(ds["test_object_f1"]).all()
    ck = E.checkpoint_dir(out)
    assert sorted(p.name for p in ck.iterdir()) == [store.CHECKPOINT_MARKER, "split0_best.pt", "split0_last.pt"]


def test_store_round_trip_with_regions_out_of_order(tmp_path: Path) -> None:
    tmpl = R.template(split_names=["random-0", "random-1"], split_seeds=[0, 1], epochs=3, classes=["gland"],
                      images=["a", "b", "c"], image_parts=["test"] * 3, parts=["test"], attrs={"config": "{}"})
    path = tmp_path / "r.zarr"
    R.create(path, tmpl)
    dims = R.all_dims(tmpl)
    want = tmpl.assign_attrs(store_version=store.STORE_VERSION, cell_dims=list(R.CELL_DIMS)).copy(deep=True)
    for k, e in ((1, 2), (0, 0), (1, 0)):
        R.write_region(path, {"train_loss": [[0.1 * k + e]], "val_dice": [[[0.5 + e]]]},
                       {"split": slice(k, k + 1), "epoch": slice(e, e + 1)}, dims)
        want["train_loss"][k, e] = 0.1 * k + e
        want["val_dice"][k, e, 0] = 0.5 + e
    R.write_region(path, {"test_dice": [[[0.9], [0.8], [np.nan]]], "status": np.array([store.STATUS["done"]], np.int8)},
                   {"split": slice(1, 2)}, dims)
    want["test_dice"][1, :, 0] = [0.9, 0.8, np.nan]
    want["status"][1] = store.STATUS["done"]
    xr.testing.assert_identical(want, R.open_results(path).load())


def test_resume_after_interrupt_matches_uninterrupted(tmp_path: Path, run) -> None:
    out = tmp_path / "r.zarr"

    def stop(split: int, epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        E.train(FAST, out, on_epoch_end=stop, command=["x"])
    part = R.open_results(out).load()
    assert np.isfinite(part["train_loss"][0, 0]) and np.isnan(part["train_loss"][0, 1])
    assert int(part["status"][0]) == store.STATUS["running"]
    with pytest.raises(InputError, match="--resume"):
        E.train(FAST, out, command=["x"])
    resumed = E.train(FAST, out, resume=True, command=["x"]).load()
    whole = run[1]
    timing = ["epoch_time", "train_images_per_second", "val_time", "test_time", "compile_time"]
    xr.testing.assert_identical(resumed.drop_vars(timing).drop_attrs(), whole.drop_vars(timing).drop_attrs())


def test_resume_with_other_options_is_refused(tmp_path: Path, run) -> None:
    out, _ = run
    with pytest.raises(InputError, match="other options \\(lr\\)"):
        E.train(E.TrainConfig(**{**FAST.to_dict(), "lr": 0.5}), out, resume=True)


def test_checkpoint_atomic_and_strict(tmp_path: Path, run) -> None:
    out, _ = run
    best = E.checkpoint_dir(out) / "split0_best.pt"
    ck = E.read_checkpoint(best)
    assert set(ck) == {"model", "epoch", "meta", "config"} and ck["meta"]["model"] == "rwkv_unet_test"
    model, meta = E.model_from_checkpoint(best, torch.device("cpu"))
    # a DDP-style "module." prefix is stripped; missing and unexpected keys are named
    wrapped = {"state_dict": {f"module.{k}": v for k, v in ck["model"].items()}}
    E.load_state_strict(model, E.unwrap_state(wrapped), "wrapped")
    state = dict(ck["model"])
    state.pop("final_conv.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match="1 missing keys: final_conv.bias; 1 unexpected keys: extra.weight"):
        E.load_state_strict(model, state, "edited")
    E.save_checkpoint(tmp_path / "c.pt", {"model": state})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt: not a readable checkpoint"):
        E.read_checkpoint(tmp_path / "bad.pt")


def test_eval_checkpoint_reproduces_training_test_metrics(run) -> None:
    out, ds = run
    ev = E.evaluate_checkpoint(E.checkpoint_dir(out) / "split0_best.pt", device="cpu")
    np.testing.assert_array_equal(ev["test_dice"].values, ds["test_dice"].values)
    np.testing.assert_array_equal(ev["test_object_f1"].values, ds["test_object_f1"].values)


def test_predict_folder(tmp_path: Path, run) -> None:
    out, _ = run
    src = tmp_path / "in"
    src.mkdir()
    img = (np.random.default_rng(0).random((50, 70)) * 255).astype(np.uint8)
    Image.fromarray(img).save(src / "a.png")
    Image.fromarray(np.stack([img] * 3, -1)).save(src / "b.jpg")
    files = E.predict_folder(E.checkpoint_dir(out) / "split0_best.pt", src, tmp_path / "pred", device="cpu")
    assert sorted(p.name for p in files) == ["a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png"]
    m = np.array(Image.open(tmp_path / "pred" / "a_mask.png"))
    assert m.shape == (50, 70) and set(np.unique(m)) <= {0, 255}
    assert np.array(Image.open(tmp_path / "pred" / "b_overlay.png")).shape == (50, 70, 3)
    files = E.predict_folder(E.checkpoint_dir(out) / "split0_best.pt", src, tmp_path / "win", device="cpu",
                             window=True)  # 50×70 at its own resolution, 32² tiles
    m = np.array(Image.open(tmp_path / "win" / "a_mask.png"))
    assert len(files) == 4 and m.shape == (50, 70) and set(np.unique(m)) <= {0, 255}
    (src / "c.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="c.png"):
        E.predict_folder(E.checkpoint_dir(out) / "split0_best.pt", src, tmp_path / "pred2", device="cpu")
    assert not (tmp_path / "pred2").exists()


def test_sliding_window_of_a_pointwise_model_is_the_whole_image_prediction() -> None:
    """Overlapping tiles of one pixelwise function, Gaussian-averaged, give that function back:
    sides that are and are not multiples of the step, and an image smaller than one tile."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1).eval()
    for h, w in ((64, 64), (50, 70), (20, 9)):
        x = torch.randn(1, 3, h, w)
        win = E.predict_window(model, x, 32, batch=3)
        assert win.shape == (1, 2, h, w)
        torch.testing.assert_close(win, E.predict_probs(model, x), rtol=0, atol=1e-5)


def test_sliding_window_sees_each_pixel_at_its_own_resolution() -> None:
    """A model that reports the tile's own side: windows keep the tile size, resizing would not."""

    class Side(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 1, *x.shape[-2:]), float(x.shape[-1]))

    probs = E.predict_window(Side(), torch.zeros(1, 1, 40, 100), 32)
    torch.testing.assert_close(probs, torch.full_like(probs, torch.sigmoid(torch.tensor(32.0)).item()))


def test_augment_keeps_image_and_mask_aligned() -> None:
    from segment.data import augment as A

    g = torch.Generator().manual_seed(3)
    m = (torch.rand(16, 32, 32, generator=g) > 0.7).long()
    x = m[:, None].float().repeat(1, 3, 1, 1)
    params = A.sample_params(16, g, A.AugmentConfig(p_rot90_flip=1, p_rotate=0, p_crop=0, p_intensity=0))
    xa, ma = A.apply(x, m, params)
    assert torch.equal(xa[:, 0].long(), ma)  # rot90/flip exactly
    params = A.sample_params(16, g, A.AugmentConfig(p_rotate=1, p_crop=1, p_intensity=0))
    xa, ma = A.apply(x, m, params)
    agree = ((xa[:, 0] > 0.5).long() == ma).float().mean()
    assert agree > 0.9 and set(ma.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("name", ["glas", "acdc", "synapse"])
def test_train_on_fixture_layouts(tmp_path: Path, name: str) -> None:
    import seg_fixtures as fx

    data = getattr(fx, f"make_{name}")(tmp_path / name)
    cfg = E.TrainConfig(dataset=name, data_dir=str(data), model="rwkv_unet_test", size=32, epochs=1, batch=2,
                        device="cpu")
    ds = E.train(cfg, tmp_path / "r.zarr").load()
    s = E.summarize(ds)
    assert s["splits_done"] == 1
    if name == "glas":  # testA and testB reported apart; object metrics per part
        assert list(ds["image_part"].values) == ["testA", "testA", "testB"]
        assert set(s["objects"]) == {"testA", "testB"} and set(s["classes"]["gland"]["dice_by_part"]) == {"testA", "testB"}
    if name == "acdc":  # multi-class, metrics per 3-D test volume
        assert list(ds["class"].values) == ["rv", "myo", "lv"] and list(ds["image"].values) == ["patient001_frame01"]
    if name == "synapse":  # no validation set: the last epoch is tested
        assert ds["class"].size == 8 and list(ds["image"].values) == ["case0001"]
        assert int(ds["best_epoch"][0]) == 1 and np.isnan(ds["val_dice"]).all()


def test_random_splits_mean_and_sd(tmp_path: Path) -> None:
    import seg_fixtures as fx

    data = fx.make_kvasir(tmp_path / "kv", n=10)
    cfg = E.TrainConfig(dataset="kvasir", data_dir=str(data), model="rwkv_unet_test", size=32, epochs=1, batch=4,
                        split="random", split_seed=5, splits=2, device="cpu")
    ds = E.train(cfg, tmp_path / "r.zarr").load()
    assert list(ds["split_name"].values) == ["random-5", "random-6"] and list(ds["split_seed"].values) == [5, 6]
    assert ds.sizes["split"] == 2 and "fold" not in ds.dims and "fold" not in ds.coords  # not a fold run
    per_split = ds["test_dice"].isel({"class": 0}).mean("image", skipna=True).values
    assert np.isfinite(ds["test_dice"]).sum() == 2  # one test image per split (n // 10)
    mean, sd = E.summarize(ds)["classes"]["polyp"]["dice"]
    assert mean == pytest.approx(per_split.mean()) and sd == pytest.approx(per_split.std(ddof=1))


def test_flip_tta_averages_the_four_flips() -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    p = E.predict_probs(model, x, tta=True)
    ref = sum(torch.sigmoid(model(x.flip(f)).flip(f)) if f else torch.sigmoid(model(x))
              for f in [(), (3,), (2,), (2, 3)]) / 4
    assert torch.allclose(p, ref, atol=1e-7)
    assert not torch.allclose(p, E.predict_probs(model, x, tta=False))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_on_cuda_with_bf16(tmp_path: Path) -> None:
    cfg = E.TrainConfig(model="rwkv_unet_test", size=64, epochs=2, batch=6, device="cuda")
    ds = E.train(cfg, tmp_path / "g.zarr").load()
    assert np.isfinite(ds["train_loss"]).all() and int(ds["status"][0]) == store.STATUS["done"]


def test_kill_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "k.zarr"
    args = [sys.executable, "-m", "cli.main", "--quiet", "segment", "--model", "rwkv_unet_test", "--size", "32",
            "--epochs", "2", "--batch", "6", "--device", "cpu", "--out", str(out)]
    repo = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": repo}
    proc = subprocess.Popen(args, cwd=repo, env=env)
    last = E.checkpoint_dir(out) / "split0_last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists() and int(E.read_checkpoint(last)["epoch"]) == 1  # killed during epoch 2
    assert subprocess.run([*args, "--resume"], cwd=repo, env=env).returncode == 0
    whole = tmp_path / "whole.zarr"
    assert subprocess.run([*args[:-1], str(whole)], cwd=repo, env=env).returncode == 0
    timing = ["epoch_time", "train_images_per_second", "val_time", "test_time", "compile_time"]
    resumed, uninterrupted = R.open_results(out).load(), R.open_results(whole).load()
    xr.testing.assert_identical(resumed.drop_vars(timing).drop_attrs(), uninterrupted.drop_vars(timing).drop_attrs())


def test_binary_softmax_two_logits(tmp_path: Path) -> None:
    cfg = E.TrainConfig(model="rwkv_unet_test", size=32, epochs=1, batch=6, device="cpu", binary_softmax=True)
    ds = E.train(cfg, tmp_path / "s.zarr").load()
    best = E.checkpoint_dir(tmp_path / "s.zarr") / "split0_best.pt"
    model, meta = E.model_from_checkpoint(best, torch.device("cpu"))
    assert meta["logits"] == 2 and model.final_conv.out_channels == 2
    ev = E.evaluate_checkpoint(best, device="cpu")
    np.testing.assert_array_equal(ev["test_dice"].values, ds["test_dice"].values)


def test_resume_accepts_a_store_made_before_an_option_existed(tmp_path: Path, run) -> None:
    """A config key the store lacks (added later, e.g. ``dwconv``) counts as its default."""
    import json
    import shutil

    import zarr

    src, whole = run
    out = tmp_path / "old.zarr"
    shutil.copytree(src, out)
    shutil.copytree(E.checkpoint_dir(src), E.checkpoint_dir(out))
    group = zarr.open_group(str(out), mode="r+")
    cfg = json.loads(group.attrs["config"])
    del cfg["dwconv"]
    group.attrs["config"] = json.dumps(cfg, sort_keys=True)
    resumed = E.train(FAST, out, resume=True, command=["x"]).load()
    assert float(resumed["test_dice"].mean()) == float(whole["test_dice"].mean())
    with pytest.raises(InputError, match="other options \\(dwconv\\)"):
        E.train(E.TrainConfig(**{**FAST.to_dict(), "dwconv": "torch"}), out, resume=True)


def test_training_starts_from_an_official_encoder(tmp_path: Path) -> None:
    """``encoder`` loads an official-format encoder (strict) into the model training starts from;
    a file that does not fit fails before any store is written."""
    from segment.data import open_dataset
    from segment.model import create_model

    info = open_dataset("demo", None).info
    donor = create_model("rwkv_unet_test", in_channels=info.in_channels)
    for p in donor.encoder.parameters():
        torch.nn.init.normal_(p)
    path = tmp_path / "net_test.pth"
    torch.save({"state_dict": {**donor.encoder.state_dict(), "head.weight": torch.zeros(3, 24)}}, path)
    cfg = E.TrainConfig(**{**FAST.to_dict(), "encoder": str(path)})
    model = E.build_model(cfg, info)
    for (name, a), b in zip(model.encoder.state_dict().items(), donor.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    bad = tmp_path / "net_other.pth"
    torch.save({"state_dict": create_model("rwkv_unet_t").encoder.state_dict()}, bad)
    with pytest.raises(InputError, match="net_other.pth"):
        E.train(E.TrainConfig(**{**FAST.to_dict(), "encoder": str(bad)}), tmp_path / "r.zarr")
    assert not (tmp_path / "r.zarr").exists()
