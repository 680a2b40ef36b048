"""``biorules floss``: a small run end to end, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from cli_runner import run_cli


def test_floss_store(tmp_path):
    out = tmp_path / "f.zarr"
    res = run_cli(["--quiet", "floss", "--gain", "0.5", "--n", "30", "--mode", "exact", "--steps", "15",
               "--exponents", "2", "--out", str(out)], tmp_path)
    assert res.returncode == 0, res.stderr
    ds = xr.open_zarr(out).load()
    assert ds.sizes["exponent"] == 2 and ds.sizes["step"] == 15
    assert ds.lambda_after.attrs["units"] == "1/tau" and int(ds.status) == 1
    assert np.isfinite(ds.floss_loss).all()
    assert float(ds.lambda_after[0]) > float(ds.lambda_before[0])  # g = 0.5 is pulled up toward 0
    # an existing store is never overwritten
    again = run_cli(["floss", "--n", "30", "--steps", "1", "--out", str(out)], tmp_path)
    assert again.returncode == 2 and "--out" in again.stderr


@pytest.mark.parametrize(
    "args, needle",
    [(["--mode", "magic"], "--mode"), (["--steps", "-3"], "--steps"), (["--batch", "-1"], "--batch"),
     (["--window", "0"], "--window"), (["--n", "10", "--exponents", "11"], "--exponents")],
)
def test_bad_input(tmp_path, args, needle):
    out = tmp_path / "f.zarr"
    res = run_cli(["floss", *args, "--out", str(out)], tmp_path)
    assert res.returncode == 2 and needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()
