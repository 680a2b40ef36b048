"""``biorules sweep`` end to end through the entry point, and bad input."""

from __future__ import annotations

import pytest
import xarray as xr
from cli_runner import run_cli


def test_sweep_cli(tmp_path):
    out = tmp_path / "s.zarr"
    args = ["sweep", "--gain", "0.5:1.0", "--step", "0.5", "--rules", "bptt,eprop", "--floss", "none", "--seeds", "1", "--n", "8",
            "--updates", "3", "--exponents", "1", "--workers", "1", "--out", str(out)]
    res = run_cli(["--quiet", *args], tmp_path)
    assert res.returncode == 0, res.stderr
    ds = xr.open_zarr(out)
    assert list(ds.rule.values) == ["bptt", "eprop"] and list(ds.gain.values) == [0.5, 1.0]
    again = run_cli(args, tmp_path)  # nothing left to do: resumes and prints the summary
    assert again.returncode == 0 and "eprop" in again.stdout


@pytest.mark.parametrize("args, needle", [(["--gain", "2:1"], "--gain"), (["--rules", "bptt,magic"], "rule"),
                                          (["--floss", "sideways"], "floss"), (["--seeds", "0"], "--seeds"),
                                          (["--n", "4", "--exponents", "5"], "exponents")])
def test_bad_input(tmp_path, args, needle):
    out = tmp_path / "s.zarr"
    res = run_cli(["sweep", *args, "--out", str(out)], tmp_path)
    assert res.returncode == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()
