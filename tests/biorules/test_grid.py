"""The grid loop: failed cells keep their reason and are retried, size bound, the writer lock, and a
dask cluster that cannot be reached or has no worker (one line, the store as it was)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import requires_dask

from biorules import store
from biorules.errors import InputError, RunError
from biorules.experiments import grid

DIMS = ("gain", "seed")


def _template(n_gain=2, n_seed=2):
    return xr.Dataset(
        {"x": (DIMS, np.full((n_gain, n_seed), np.nan)), "status": store.status_variable(DIMS, (n_gain, n_seed))},
        coords={"gain": np.arange(n_gain) + 1.0, "seed": np.arange(n_seed)}, attrs={"config": "t"},
    )


def _plan(cells):
    return [grid.Job((c,)) for c in cells]


def _cell(value, status="done", message=None):
    ds = xr.Dataset({"x": ((), float(value)), "status": ((), np.int8(store.STATUS[status]))})
    if message:
        ds.attrs["message"] = message
    return ds


def test_failed_cells_keep_their_reason_and_a_rerun_retries_them(tmp_path):
    path = tmp_path / "g.zarr"
    calls = []

    def flaky(job):
        (i, j), = job.cells
        calls.append((i, j))
        if (i, j) == (0, 1):
            raise ZeroDivisionError("division by zero in cell (0, 1)")
        if (i, j) == (1, 1):
            return [_cell(np.nan, "diverged", "non-finite loss at update 3")]
        return [_cell(10 * i + j)]

    ds = grid.run_grid(path, _template(), DIMS, _plan, flaky, workers=1)
    assert ds.status.values.tolist() == [[1, 3], [1, 2]]
    assert ds.message.values.tolist() == [["", "division by zero in cell (0, 1)"],
                                          ["", "non-finite loss at update 3"]]
    assert store.verify_store(path) == []

    def fixed(job):
        calls.append(job.cells[0])
        return [_cell(-1.0)]

    calls.clear()
    ds = grid.run_grid(path, _template(), DIMS, _plan, fixed, workers=1)
    assert calls == [(0, 1)]  # only the failed cell is retried; diverged ones are results
    assert ds.status.values.tolist() == [[1, 1], [1, 2]] and ds.message.values[0, 1] == ""
    calls.clear()
    grid.run_grid(path, _template(), DIMS, _plan, fixed, workers=1, retry_failed=False)
    assert calls == []


def test_failed_cells_in_worker_processes(tmp_path):
    ds = grid.run_grid(tmp_path / "g.zarr", _template(1, 2), DIMS, _plan, _fail_odd_seed, workers=2)
    assert ds.status.values.tolist() == [[1, 3]] and ds.message.values[0, 1] == "odd seed"


def _fail_odd_seed(job):
    (_, j), = job.cells
    if j % 2:
        raise ValueError("odd seed")
    return [_cell(j)]


def test_the_grid_size_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "MAX_CELLS", 3)
    with pytest.raises(InputError, match=r"the grid has 4 cells \(2 gain × 2 seed\), more than the 3 allowed"):
        grid.run_grid(tmp_path / "g.zarr", _template(), DIMS, _plan, _fail_odd_seed, workers=1)
    assert not (tmp_path / "g.zarr").exists()


def test_two_writers_are_refused_by_the_lock(tmp_path):
    path = tmp_path / "g.zarr"
    with store.writer_lock(path):
        with pytest.raises(InputError, match="being written by another biorules process"):
            grid.run_grid(path, _template(), DIMS, _plan, _fail_odd_seed, workers=1)
    assert not path.exists()


def test_a_bad_scheduler_address_is_bad_input():
    pytest.importorskip("distributed")
    for address in ("notaurl", "tcp://host", "tcp://:8786"):
        with pytest.raises(InputError, match="is not a scheduler address"):
            grid.check_scheduler(address)
    grid.check_scheduler("tcp://127.0.0.1:8786")
    grid.check_scheduler("127.0.0.1:8786")


@requires_dask
def test_an_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RunError, match="no dask scheduler answered within 1 s") as err:
        grid.run_grid(tmp_path / "g.zarr", _template(), DIMS, _plan, _fail_odd_seed,
                      scheduler=f"tcp://127.0.0.1:{port}", connect_timeout=1)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


@requires_dask
def test_a_cluster_without_workers_ends_with_the_resume_hint(tmp_path):
    from distributed import LocalCluster

    path = tmp_path / "g.zarr"
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(RunError, match="has had no worker for 0.5 s; .*rerun the same command to resume"):
            grid.run_grid(path, _template(), DIMS, _plan, _fail_odd_seed, scheduler=cluster.scheduler_address,
                          no_worker_timeout=0.5)
    assert (store.open_store(path)["status"].values == store.STATUS["pending"]).all()


def _visible_device(job):
    import os

    import torch

    (i, j), = job.cells
    return [_cell(float(os.environ["CUDA_VISIBLE_DEVICES"]) + 100 * torch.get_num_threads())]


def test_one_worker_process_per_gpu_sees_only_its_own(tmp_path):
    """``devices``: one spawned worker per GPU index, each with CUDA_VISIBLE_DEVICES set to its own
    before it touches CUDA, and the cores divided among them (no GPU needed to check the wiring)."""
    ds = grid.run_grid(tmp_path / "g.zarr", _template(2, 2), DIMS, _plan, _visible_device, workers=2, devices=[3, 5])
    assert (ds.status == store.STATUS["done"]).all()
    device, threads = ds.x.values % 100, ds.x.values // 100
    assert set(device.ravel()) <= {3.0, 5.0}
    assert (threads == max(1, grid.usable_cpus() // 2)).all()


def _torch_threads(job):
    import numpy as np
    import torch

    from biorules.lyapunov import spectrum

    spectrum(np.eye(8)[None] * 0.5, alpha=0.5, n_exponents=2, steps=20)  # numba's parallel kernel, then torch
    return [_cell(torch.get_num_threads())]


def test_cpu_workers_run_torch_on_one_thread_after_numba_starts(tmp_path):
    """A forked CPU worker starts numba's OpenMP layer, which resets OpenMP's thread count that
    torch reads; torch must still run on one thread per worker (two spinning threads per worker
    on two cores made stacks 3-6x slower)."""
    ds = grid.run_grid(tmp_path / "g.zarr", _template(2, 2), DIMS, _plan, _torch_threads, workers=2)
    assert (ds.status == store.STATUS["done"]).all()
    assert (ds.x.values == 1).all()


def test_a_cuda_sweep_spreads_over_every_visible_gpu(monkeypatch):
    import torch

    from biorules.experiments import sweep

    monkeypatch.setattr(grid, "usable_cpus", lambda: 16)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert grid.gpu_indices("cuda") == [0, 1, 2] * 4 and grid.gpu_indices("cuda:1") == [] and grid.gpu_indices("cpu") == []
    assert grid.gpu_indices("cuda", 3) == [0, 1, 2] and grid.gpu_indices("cuda", 1) == [0]
    monkeypatch.setattr(grid, "usable_cpus", lambda: 2)
    assert grid.gpu_indices("cuda") == [0, 1, 2]  # at least one per GPU, else at most one per core
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert grid.gpu_indices("cuda") == [0, 0] and grid.gpu_indices("cuda", 1) == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert grid.gpu_indices("cuda") == []
    seen = {}
    monkeypatch.setattr(sweep, "gpu_indices", lambda device, workers: [0, 1] if device == "cuda" else [])
    monkeypatch.setattr(sweep, "run_grid", lambda *a, **kw: seen.update(kw))
    sweep.run(sweep.SweepConfig(device="cuda"), "unused.zarr")
    assert seen["workers"] == 2 and seen["devices"] == [0, 1]
    sweep.run(sweep.SweepConfig(device="cuda:0"), "unused.zarr")
    assert seen["workers"] == 1 and seen["devices"] is None
