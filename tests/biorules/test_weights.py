"""Weights as results: the ``weights`` group, ``load_network``, exact reproduction from a store, grid
stores with weights, any task object in ``train`` and ``from_neurogym`` (when neurogym is installed)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
import xarray as xr

from biorules import store, weights
from biorules.errors import InputError
from biorules.lyapunov import spectrum
from biorules.network import NetworkParams, RateRNN
from biorules.spiking import LIFParams
from biorules.tasks import make_task
from biorules.train import seeds, spectrum_steps, train

LYAP = {"transient_tau": 5.0, "ons_transient_tau": 2.0, "steps_tau": 20.0}
SMALL = dict(updates=6, batch=4, eval_every=3, eval_batch=16, test_batch=32, n_exponents=3, cosine_every=0,
             lyapunov=LYAP)


@pytest.fixture(scope="module")
def rate_store(tmp_path_factory):
    ds = train("2af", "eprop", NetworkParams(n=16, init="sparse", sparsity=0.5), **SMALL)
    return ds, store.save(ds, tmp_path_factory.mktemp("rate") / "r.zarr")


@pytest.fixture(scope="module")
def lif_store(tmp_path_factory):
    ds = train("2af", "eprop", LIFParams(n=12), model="lif", **SMALL)
    return ds, store.save(ds, tmp_path_factory.mktemp("lif") / "l.zarr")


def test_weights_group_layout(rate_store):
    ds, path = rate_store
    root, w = xr.open_zarr(path), xr.open_zarr(path, group="weights")
    assert not set(weights.WEIGHT_VARS) & set(root.data_vars) and "stage" not in root.coords
    assert set(w.data_vars) == set(weights.WEIGHT_VARS) - {"a0"}  # the sparse scheme keeps its mask; no a0 unless learned
    assert w.W.dims == ("stage", "post", "pre") and w.U.dims == ("stage", "post", "input")
    assert w.V.dims == ("stage", "output", "pre") and w.c.dims == ("stage", "output")
    assert list(w.stage.values) == ["initial", "final"] and w.W.dtype == np.float32
    assert w.W.attrs["model"] == "rate" and w.W.attrs["network_n"] == 16 and w.W.attrs["units"] == "1"
    xr.testing.assert_identical(store.open_all(path).load(), ds.assign_attrs(store_version=store.STORE_VERSION))
    # W0 is the seeded initial network, W the trained one
    fresh = RateRNN(NetworkParams(n=16, init="sparse", sparsity=0.5, seed=seeds(0)["network"]))
    assert np.array_equal(w.W.sel(stage="initial").values, fresh.W.detach().numpy())
    assert not np.array_equal(w.W.sel(stage="final").values, fresh.W.detach().numpy())
    assert torch.equal(weights.load_network(path, stage="initial").W, fresh.W)


def test_rate_network_reproduces_final_loss_and_spectra_exactly(rate_store):
    ds, path = rate_store
    root = store.open_store(path).load()
    again = weights.reproduce(path)
    for name in ("final_loss", "final_accuracy", "test_loss", "test_accuracy", "lambda_after", "lambda_after_sem"):
        np.testing.assert_array_equal(again[name].values, root[name].values, err_msg=name)
    assert np.isfinite(root.lambda_after).all()
    # biorules.lyapunov.spectrum on the loaded network gives the stored autonomous spectrum
    net = weights.load_network(path)
    transient, ons, steps = spectrum_steps(net.alpha, LYAP)
    lam = spectrum(net.W.detach().double().numpy(), alpha=net.alpha, nonlinearity="tanh", n_exponents=3,
                   b=net.b.detach().double().numpy(), seed=root.attrs["seed_lyapunov"], unit="tau",
                   steps=steps, transient=transient, ons_transient=ons)
    np.testing.assert_array_equal(lam.values, root.lambda_after.sel(condition="autonomous").values)
    assert torch.equal(net.mask, RateRNN(net.params).mask)


def test_lif_network_reloads_with_its_parameters_and_reproduces_the_final_loss(lif_store):
    ds, path = lif_store
    root = store.open_store(path).load()
    net = weights.load_network(path)
    assert net.kind == "lif" and net.step_params == LIFParams(n=12, seed=seeds(0)["network"])
    attrs = xr.open_zarr(path, group="weights").W.attrs
    assert attrs["reset"] == "subtract" and attrs["network_tau_mem"] == 20.0 and attrs["v_reset"] == 0.0
    again = weights.reproduce(path)
    for name in ("final_loss", "final_accuracy", "test_loss", "test_accuracy"):
        assert float(again[name]) == float(root[name]), name
    assert again.sizes["exponent"] == 0  # no spectra for LIF


def test_stack_loads_whole_or_one_member_and_reproduces():
    ds = train("2af", "bptt", NetworkParams(n=8), gains=(0.5, 1.5), seeds=(0, 1), **SMALL)
    assert ds.W.dims == ("member", "stage", "post", "pre")
    stack = weights.load_network(ds)
    assert stack.members == 2 and torch.equal(stack.W, torch.as_tensor(ds.W.sel(stage="final").values))
    one = weights.load_network(ds, gain=1.5)
    assert one.members is None and one.params.gain == 1.5 and one.params.seed == seeds(1)["network"]
    assert torch.equal(one.W, stack.W[1]) and torch.equal(weights.load_network(ds, member=1).W, one.W)
    again = weights.reproduce(ds)
    np.testing.assert_array_equal(again.final_loss.values, ds.final_loss.values)
    np.testing.assert_array_equal(again.lambda_after.values, ds.lambda_after.values)


def test_grid_store_with_weights_cell_by_cell(tmp_path):
    """The store routes weight variables into the group for create and region writes alike."""
    params = NetworkParams(n=6, n_in=3, n_out=3)
    gains, rules = np.array([0.5, 1.5]), np.array(["bptt", "eprop"], dtype=object)
    template = xr.Dataset({"final_loss": (("gain", "rule"), np.full((2, 2), np.nan)),
                           "status": store.status_variable(("gain", "rule"), (2, 2))},
                          coords={"gain": gains, "rule": rules})
    template = template.assign(weights.weights_template(params, {"gain": gains, "rule": rules}).data_vars)
    path = store.create(tmp_path / "g.zarr", template, ("gain", "rule"))
    assert "W" not in xr.open_zarr(path) and xr.open_zarr(path, group="weights").W.dims[:3] == ("gain", "rule", "stage")
    run = train("2af", "eprop", NetworkParams(n=6, gain=1.5), **{**SMALL, "n_exponents": 0})
    cell = run[["final_loss", "status", *weights.DIMS]].drop_vars("stage")
    store.write_cell(path, cell, {"gain": 1, "rule": 1})
    net = weights.load_network(path, gain=1.5, rule="eprop")
    assert torch.equal(net.W, torch.as_tensor(run.W.sel(stage="final").values)) and net.params.gain == 1.5
    with pytest.raises(InputError, match="no finite final weights"):
        weights.load_network(path, gain=0.5, rule="bptt")
    with pytest.raises(InputError, match="select one cell by gain"):
        weights.load_network(path)
    with pytest.raises(InputError, match="no cell with gain=2.0"):
        weights.load_network(path, gain=2.0, rule="eprop")
    with pytest.raises(InputError, match="unknown cell coordinate 'seed'"):
        weights.load_network(path, gain=1.5, rule="eprop", seed=0)
    # the size per cell: 2 (N^2 + N n_in + N + n_out N + n_out) float32 values
    assert weights.weights_nbytes(64, 3, 3) == 2 * (64 * 64 + 64 * 3 + 64 + 3 * 64 + 3) * 4 == 36376


def test_store_without_weights_is_refused_with_one_line(tmp_path):
    path = store.save(xr.Dataset({"a": ("t", [1.0])}), tmp_path / "x.zarr")
    with pytest.raises(InputError, match="holds no weights"):
        weights.load_network(path)


def test_train_takes_a_task_object_and_records_its_name():
    task = make_task("2af")
    by_object = train(task, "eprop", NetworkParams(n=8), **{**SMALL, "n_exponents": 0})
    by_name = train("2af", "eprop", NetworkParams(n=8), **{**SMALL, "n_exponents": 0})
    xr.testing.assert_identical(by_object.loss, by_name.loss)
    assert by_object.attrs["config"] == by_name.attrs["config"] and json.loads(by_object.attrs["config"])["task"] == "2af"
    with pytest.raises(InputError, match="object is not a task: it lacks name"):
        train(object(), "eprop", updates=1)
    with pytest.raises(InputError, match="task_options apply to named tasks only"):
        train(task, "eprop", task_options={"sigma": 0.5}, updates=1)


@pytest.mark.skipif(importlib.util.find_spec("neurogym") is None,
                    reason="needs the neurogym extra (pip install biorules[neurogym])")
def test_from_neurogym_trains_on_a_real_environment():
    import neurogym

    from biorules.tasks import from_neurogym

    env = neurogym.make("PerceptualDecisionMaking-v0", dt=20)
    task = from_neurogym(env, seq_len=120)
    a, b = task.batch(8, 3), task.batch(8, 3)
    assert a.x.shape == (120, 8, 3) and np.array_equal(a.x, b.x) and not np.array_equal(a.x, task.batch(8, 4).x)
    assert a.decision.any(0).all() and set(np.unique(a.trials["choice"])) <= {1, 2}
    assert task.chance == 0.5 and task.ceiling() == 1.0
    ds = train(task, "eprop", NetworkParams(n=8), **SMALL)
    assert int(ds.status) == store.STATUS["done"] and json.loads(ds.attrs["config"])["task"] == "neurogym:PerceptualDecisionMaking-v0"
    assert ds.attrs["task_env"] == "PerceptualDecisionMaking-v0" and np.isfinite(ds.lambda_after).all()
