"""``train`` with the rate network's options: activity noise, a learned a_0, online updates."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from biorules import store
from biorules.errors import InputError
from biorules.network import NetworkParams
from biorules.train import TrainConfig, train
from biorules.weights import load_network

FAST = dict(task="2af", updates=4, batch=4, eval_every=2, eval_batch=16, test_batch=32, n_exponents=2,
            cosine_every=2, conditions=("autonomous",), task_options={"dt": 50.0},
            lyapunov={"transient_tau": 5.0, "ons_transient_tau": 2.0, "steps_tau": 20.0})


def run(rule: str = "eprop", dtype: str = "float32", **net) -> xr.Dataset:
    online = net.pop("online", False)
    gains, seeds = net.pop("gains", ()), net.pop("seeds", ())
    return train(TrainConfig(rule=rule, network=NetworkParams(n=12, gain=1.2, **net), dtype=dtype, online=online,
                             gains=gains, seeds=seeds, **FAST))


def test_noise_is_seeded_and_changes_the_run_but_not_the_spectrum_before():
    quiet, a, b = run(), run(noise=0.2), run(noise=0.2)
    xr.testing.assert_identical(a.loss, b.loss)
    assert not np.allclose(a.loss.values, quiet.loss.values)
    xr.testing.assert_identical(a.lambda_before, quiet.lambda_before)  # the spectra are of the noise-free map
    assert a.attrs["network_noise"] == 0.2 and "seed_noise" in a.attrs


@pytest.mark.parametrize("extra", [{"noise": 0.2}, {"learn_a0": True}, {"online": True, "noise": 0.1}])
def test_stacked_members_equal_single_runs(extra):
    """Each member draws its own noise and applies its own (online) updates: the stack is two runs."""
    stacked = run(dtype="float64", gains=(0.8, 1.5), seeds=(3, 4), **dict(extra))
    for s, (g, seed) in enumerate(((0.8, 3), (1.5, 4))):
        single = train(TrainConfig(rule="eprop", network=NetworkParams(n=12, gain=g, **{k: v for k, v in extra.items()
                                                                                        if k != "online"}),
                                   dtype="float64", seed=seed, online=extra.get("online", False), **FAST))
        np.testing.assert_allclose(stacked.loss.isel(member=s), single.loss, rtol=1e-10)
        np.testing.assert_allclose(stacked.test_loss.isel(member=s), single.test_loss, rtol=1e-10)


def test_learned_a0_trains_and_round_trips_through_the_store(tmp_path):
    ds = run(learn_a0=True)
    a0 = ds.a0.sel(stage="final").values
    assert np.all(ds.a0.sel(stage="initial").values == 0) and np.abs(a0).max() > 1e-4
    path = store.save(ds, tmp_path / "a0.zarr")
    net = load_network(path)
    np.testing.assert_array_equal(net.a0.detach().numpy(), a0)
    state = net.initial_state(2)
    np.testing.assert_array_equal(state.a.detach().numpy(), np.broadcast_to(a0, (2, 12)))
    assert "a0" not in run()


def test_online_differs_from_offline_and_is_refused_for_bptt():
    offline, online = run("rflo"), run("rflo", online=True)
    # the first trial already runs on weights that change at each loss step
    assert np.isfinite(online.loss).all() and online.loss.values[0] != offline.loss.values[0]
    assert not np.allclose(offline.weight_change.values, online.weight_change.values)
    assert np.isfinite(online.grad_cosine).all()
    with pytest.raises(InputError, match="online"):
        TrainConfig(rule="bptt", online=True)
    with pytest.raises(InputError, match="rate network"):
        TrainConfig(model="lif", rule="eprop", network=NetworkParams(noise=0.1))
    with pytest.raises(InputError, match="noise"):
        NetworkParams(noise=-1.0)
