"""``biorules export``: a trained LIF store to a NIR file that a fresh process reads, cells of a
stack, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_runner import run_cli


def _nodes(path, cwd) -> str:
    code = f"import nir; g = nir.read({str(path)!r}); print(sorted(type(v).__name__ for v in g.nodes.values()))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.fixture(scope="module")
def lif_store(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("export")
    res = run_cli(["train", "--task", "2af", "--rule", "eprop", "--model", "lif", "--updates", "50", "--n", "12",
                   "--batch", "4", "--quiet", "--out", "r.zarr"], cwd)
    assert res.returncode == 0, res.stderr
    return cwd


def test_train_lif_then_export_nir_lists_a_lif_node(lif_store):
    res = run_cli(["export", "--format", "nir", "r.zarr", "net.nir"], lif_store)
    assert res.returncode == 0, res.stderr
    assert "net.nir" in res.stdout
    assert _nodes(lif_store / "net.nir", lif_store) == "['Affine', 'Affine', 'Input', 'LI', 'LIF', 'Linear', 'Output']"
    res = run_cli(["export", "r.zarr", "core.nir", "--node", "cubalif", "--no-readout", "--stage", "initial"], lif_store)
    assert res.returncode == 0, res.stderr
    assert _nodes(lif_store / "core.nir", lif_store) == "['Affine', 'CubaLIF', 'Input', 'Linear', 'Output']"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["missing.zarr", "x.nir"], "no store at missing.zarr"),
        (["r.zarr", "x.nir", "--format", "onnx"], "--format"),
        (["r.zarr", "x.nir", "--cell", "gain"], "--cell"),
        (["r.zarr", "x.nir", "--cell", "gain=1.5"], "unknown cell coordinate 'gain'"),
        (["r.zarr", "x.nir", "--node", "dendrite"], "--node"),
        (["r.zarr", "r.zarr/zarr.json"], "already exists"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(lif_store, args, needle):
    before = sorted(p.name for p in lif_store.iterdir())
    res = run_cli(["export", *args], lif_store)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert sorted(p.name for p in lif_store.iterdir()) == before


def test_a_store_without_weights_is_refused(tmp_path):
    import xarray as xr

    from biorules import store

    store.save(xr.Dataset({"a": ("t", [1.0])}), tmp_path / "plain.zarr")
    res = run_cli(["export", "plain.zarr", "x.nir"], tmp_path)
    assert res.returncode == 2 and "holds no weights" in res.stderr and not (tmp_path / "x.nir").exists()


def test_rate_store_exports_with_a_note(tmp_path):
    res = run_cli(["train", "--n", "8", "--updates", "2", "--batch", "4", "--exponents", "0", "--nonlinearity", "relu",
                   "--quiet", "--out", "rate.zarr"], tmp_path)
    assert res.returncode == 0, res.stderr
    res = run_cli(["export", "rate.zarr", "rate.nir"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "note: NIR has no node for the nonlinearity relu" in res.stdout
    assert _nodes(tmp_path / "rate.nir", tmp_path) == "['Affine', 'Affine', 'Input', 'LI', 'Linear', 'Output']"
