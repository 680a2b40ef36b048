"""``biorules report`` through the entry point: summary, figures, strict JSON, and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from cli_runner import run_cli

from biorules.store import STORE_VERSION

sys.path.insert(0, str(Path(__file__).parents[1] / "biorules"))
from test_report import planted, synthetic  # noqa: E402


@pytest.fixture
def sweep_store(tmp_path):
    path = tmp_path / "sweep.zarr"
    synthetic(planted, seeds=3, rules=("bptt",)).to_zarr(path)
    return path


def test_report_cli(sweep_store, tmp_path):
    res = run_cli(["report", str(sweep_store), "--boot", "500"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("gain study: dms, N = 32, 20 updates, 3 seeds") and "-> supported" in res.stdout
    out = tmp_path / "sweep.report"  # the default: next to the store
    assert (out / "summary.txt").read_text().strip() in res.stdout
    assert {p.name for p in out.iterdir()} >= {"accuracy_vs_gain.png", "accuracy_vs_gain.pdf", "learning_curves.pdf"}

    res = run_cli(["report", str(sweep_store), "--out", str(tmp_path / "r2"), "--json", "--gain", "1.5",
                   "--boot", "500"], tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    acc = [c for c in doc["claims"] if c["measure"] == "test_accuracy"]
    assert len(acc) == 1 and acc[0]["verdict"] == "supported" and acc[0]["effect"] < -0.1
    assert all(Path(f).is_file() for f in doc["files"])


@pytest.mark.parametrize("case", ["missing", "not_sweep", "out_is_file", "bad_gain", "out_in_store"])
def test_report_bad_input(sweep_store, tmp_path, case):
    store, out = str(sweep_store), tmp_path / "rep"
    if case == "missing":
        store = str(tmp_path / "nowhere.zarr")
    elif case == "not_sweep":
        store = str(tmp_path / "scan.zarr")
        xr.Dataset({"lambda_max": (("gain", "seed"), np.zeros((2, 2)))},
                   attrs={"store_version": STORE_VERSION}).to_zarr(store)
    elif case == "out_is_file":
        out.write_text("not a folder")
    elif case == "out_in_store":
        out = sweep_store / "figures"
    args = ["report", store, "--out", str(out)] + (["--gain", "0.7"] if case == "bad_gain" else [])
    res = run_cli(args, tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("Error:")
    assert out.is_file() if case == "out_is_file" else not out.exists()


def test_help_ends_with_an_example(tmp_path):
    res = run_cli(["report", "--help"], tmp_path)
    assert res.returncode == 0 and "biorules report results/sweep.zarr" in res.stdout.strip().splitlines()[-1]
