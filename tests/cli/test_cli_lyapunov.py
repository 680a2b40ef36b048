"""``biorules lyapunov`` through the real entry point: store, summary, resume, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from cli_runner import run_cli
from click.testing import CliRunner

from cli.main import cli


def test_lyapunov_store_summary_and_plot(tmp_path):
    out = tmp_path / "lyap.zarr"
    args = ["lyapunov", "--gain", "0.5:1.5", "--step", "0.5", "--n", "40", "--seeds", "2", "--exponents", "4",
            "--steps", "400", "--transient", "100", "--out", str(out), "--plot", str(tmp_path / "l.png")]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "λ_max" in res.output and "1.500" in res.output
    ds = xr.open_zarr(out)
    assert dict(ds.sizes) == {"gain": 3, "seed": 2, "exponent": 4}
    np.testing.assert_allclose(ds.gain.values, [0.5, 1.0, 1.5])
    assert ds.spectrum.attrs["units"] == "1/tau"
    assert (ds.status.values == 1).all() and np.isfinite(ds.spectrum.values).all()
    assert (tmp_path / "l.png").stat().st_size > 0
    # g = 0.5 is a stable fixed point: λ_max ≈ (ln(1 − α + α ρ))/α < 0
    assert (ds.lambda_max.sel(gain=0.5) < -0.3).all()
    # the same command again resumes: nothing left to do, identical numbers
    before = ds.load()
    res2 = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res2.exit_code == 0
    xr.testing.assert_identical(xr.open_zarr(out).load().drop_attrs(), before.drop_attrs())


def test_resume_fills_only_missing_cells(tmp_path):
    from biorules import store
    from biorules.experiments import gain_scan
    from biorules.network import NetworkParams

    out = tmp_path / "l.zarr"
    cfg = gain_scan.LyapunovScanConfig(gains=(0.5, 1.0), seeds=(0, 1), network=NetworkParams(n=20),
                                       n_exponents=2, steps=100, transient=20)
    store.open_or_create(out, gain_scan.template(cfg), gain_scan.CELL_DIMS)
    store.write_cell(out, gain_scan.measure_cell(cfg, 0.5, 0), {"gain": 0, "seed": 0})
    t_first = float(xr.open_zarr(out).wall_time[0, 0])
    ds = gain_scan.run(cfg, out)
    assert float(ds.wall_time[0, 0]) == t_first  # the finished cell was not redone
    assert (ds.status.values == 1).all()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--gain", "2:0.5"], "--gain"),
        (["--gain", "abc"], "--gain"),
        (["--gain", "1:"], "--gain"),
        (["--gain", "0:1"], "--gain"),
        (["--gain", ""], "--gain"),
        (["--n", "0"], "--n"),
        (["--n", "5", "--exponents", "6"], "--exponents"),
        (["--step", "-1"], "--step"),
    ],
)
def test_bad_input_one_line_exit_2_no_store(tmp_path, args, needle):
    out = tmp_path / "x.zarr"
    res = run_cli(["lyapunov", *args, "--out", str(out)], tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr
    assert not out.exists()


def test_foreign_store_is_refused_without_damage(tmp_path):
    out = tmp_path / "x.zarr"
    xr.Dataset({"a": ("t", [1.0, 2.0])}).to_zarr(out)
    res = run_cli(["lyapunov", "--n", "10", "--exponents", "2", "--out", str(out)], tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    np.testing.assert_array_equal(xr.open_zarr(out).a.values, [1.0, 2.0])


def test_help_does_not_import_torch(tmp_path):
    code = "import sys; from cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'numba' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.stdout.strip().splitlines()[-1] == "False False"


def test_ctrl_c_keeps_finished_cells(tmp_path):
    """SIGINT mid-scan (inside the numba kernel): exit 130, one line, finished cells kept intact."""
    import signal
    import time

    from biorules import store

    out = tmp_path / "int.zarr"
    # a shell may start us with SIGINT ignored (background jobs): restore Python's handler in the child
    code = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); from cli.main import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "--quiet", "lyapunov",
                             "--gain", "0.5:2.0", "--n", "150", "--seeds", "3", "--exponents", "100",
                             "--out", str(out)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    # wait for the event (a first finished cell), not for a fixed time: a loaded machine only makes
    # it later; the scan's 21 cells take minutes, so it cannot finish before the signal
    waited = 0.0
    while proc.poll() is None and not (out.exists() and store.finished_cells(out).any()):
        time.sleep(0.2)
        waited += 0.2
        assert waited < 1800, "no cell finished in 30 minutes"
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["Interrupted; finished results are kept, rerun the same command to resume."]
    ds = xr.open_zarr(out).load()
    done = ds.status.values == store.STATUS["done"]
    assert 1 <= done.sum() < done.size
    assert np.isfinite(ds.spectrum.values[done]).all() and np.isnan(ds.spectrum.values[~done]).all()
