"""Flossing around training: the schedule runs, the record lands in the Dataset, the readout is spared."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from cli_runner import run_cli

from biorules.errors import InputError
from biorules.flossing import FlossConfig, FlossSchedule
from biorules.network import NetworkParams
from biorules.train import train


def test_train_with_flossing_records_the_bouts():
    kw = dict(updates=12, batch=8, n_exponents=2, eval_batch=32, cosine_every=0, seed=1)
    params = NetworkParams(n=24, gain=0.5)
    cfg = FlossConfig(mode="local", window=20, transient=5, batch=2, relax=5)
    ds = train("2af", "eprop", params, floss=cfg, floss_schedule=FlossSchedule(pre=4, every=5, steps=2, times=1), **kw)
    assert ds.floss_update.values.tolist() == [0, 0, 0, 0, 5, 5]
    assert ds.floss_lambda_hat.attrs["units"] == "1/tau" and np.isfinite(ds.floss_loss).all()
    assert ds.attrs["floss_mode"] == "local" and ds.attrs["floss_driven"] == 1
    plain = train("2af", "eprop", params, **kw)
    # same seeds: the spectra before agree, flossing changed what came after
    xr.testing.assert_identical(ds.lambda_before, plain.lambda_before)
    one = dict(condition="autonomous", exponent=1)
    assert float(ds.lambda_after.sel(one)) != float(plain.lambda_after.sel(one))


def test_flossing_a_spiking_network_is_refused():
    with pytest.raises(InputError, match="rate networks only"):
        train("2af", "eprop", None, model="lif", updates=1, floss=FlossConfig())


def test_cli_train_floss_bad_counts(tmp_path):
    for args in (["--floss-pre", "-1"], ["--floss-every", "0"], ["--floss-times", "-2"],
                 ["--floss", "local", "--n", "8", "--floss-exponents", "9"]):
        res = run_cli(["train", *args, "--out", str(tmp_path / "t.zarr")], tmp_path)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not (tmp_path / "t.zarr").exists()
