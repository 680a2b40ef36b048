"""The notebook API: lazy top-level names, ``biorules.train`` as module and function, in-memory
sweeps and scans equal to the stored ones, the Python call recorded as the store's command, and
``segment.train`` / ``segment.predict``."""

from __future__ import annotations

import subprocess
import sys

import xarray as xr

import biorules
from biorules.network import NetworkParams

SWEEP = dict(gains=(0.5, 1.5), rules=("eprop",), seeds=(0,), n=6, updates=3, batch=4, eval_every=2, eval_batch=8,
             n_exponents=1)


def _numbers(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars("wall_time").drop_attrs()


def test_import_is_cheap_and_names_resolve_lazily(tmp_path):
    code = ("import sys, biorules\nprint('torch' in sys.modules, 'xarray' in sys.modules)\n"
            "from biorules.train import TrainConfig\nimport biorules.train as m\n"
            "print(callable(biorules.train), biorules.train is m, biorules.open_store.__module__, "
            "biorules.load_network.__module__, callable(biorules.sweep), callable(biorules.lyapunov_scan))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")
    assert lines[0] == "False False"
    assert lines[1] == "True True biorules.store biorules.weights True True"
    code = "import sys, segment\nprint('torch' in sys.modules, callable(segment.train), callable(segment.predict))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.stdout.strip() == "False True True", res.stderr


def test_train_called_from_python_records_the_call():
    ds = biorules.train("2af", "eprop", NetworkParams(n=6), updates=2, batch=4, eval_every=1, eval_batch=8,
                        test_batch=8, n_exponents=0, cosine_every=0)
    assert ds.attrs["command"].startswith("biorules.train('2af', 'eprop', NetworkParams(n=6,")
    assert "updates=2" in ds.attrs["command"] and sys.argv[0] != ds.attrs["command"]  # argv is restored


def test_in_memory_sweep_equals_the_stored_one(tmp_path):
    in_memory = biorules.sweep(out=None, workers=1, **SWEEP)
    stored = biorules.sweep(out=tmp_path / "s.zarr", workers=1, **SWEEP)
    xr.testing.assert_identical(_numbers(in_memory), _numbers(stored))
    xr.testing.assert_identical(_numbers(stored), _numbers(biorules.open_store(tmp_path / "s.zarr").load()))
    assert in_memory.attrs["command"].startswith("biorules.sweep(out=None, workers=1, gains=(0.5, 1.5)")
    assert biorules.open_store(tmp_path / "s.zarr").attrs["command"].startswith("biorules.sweep(out=")


def test_in_memory_scan_equals_the_stored_one(tmp_path):
    options = dict(gains=(0.5, 1.5), seeds=(0,), network=NetworkParams(n=8), n_exponents=2, steps=200,
                   transient=50)
    in_memory = biorules.lyapunov_scan(**options)
    stored = biorules.lyapunov_scan(out=tmp_path / "l.zarr", **options)
    xr.testing.assert_identical(_numbers(in_memory), _numbers(stored))
    assert (in_memory.lambda_max.sel(gain=0.5) < 0).all()


def test_segment_train_and_predict_from_python(tmp_path):
    import numpy as np
    from PIL import Image

    import segment

    out = tmp_path / "demo.zarr"
    ds = segment.train(model="rwkv_unet_test", size=32, epochs=1, batch=6, device="cpu", out=out)
    assert int(ds["status"][0]) == 1 and ds.attrs["command"].startswith("segment.train(out=")
    (tmp_path / "in").mkdir()
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(tmp_path / "in" / "a.png")
    files = segment.predict(tmp_path / "demo.ckpt" / "split0_best.pt", tmp_path / "in", tmp_path / "pred", device="cpu")
    assert sorted(p.name for p in files) == ["a_mask.png", "a_overlay.png"]
